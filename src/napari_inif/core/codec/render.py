"""Differentiable dense rendering of a 2D window of a field that is being fitted.

Guidance losses (:mod:`napari_inif.core.guidance.losses`) need whole image patches, not
scattered pixels: a :class:`WindowRenderer` evaluates the block networks on the pixel grid of
one window of one plane and returns the normalised values with their gradient, stitched across
blocks. Only the blocks the window touches are evaluated, each on its own pixels only.
A :class:`GridWindowRenderer` does the same for a latent-grid field: the window's latents
are upsampled and synthesised, with straight-through rounding (the decoder's latents).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from napari_inif.core.codec.blocks import BlockGrid

if TYPE_CHECKING:
    from napari_inif.core.codec.grid import GridField

__all__ = ["GridWindowRenderer", "WindowRenderer"]


def _window(
    shape: Sequence[int],
    index: Sequence[int],
    y0: int,
    x0: int,
    h: int,
    w: int,
    size: tuple[int, int] | None,
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """``(sh, sw, ys, xs)``: the sampling grid of a window (see :meth:`WindowRenderer.__call__`);
    ``ValueError`` for a window outside an image of coordinate ``shape``."""
    d = len(shape)
    if len(index) != d - 2:
        raise ValueError(f"plane index needs {d - 2} positions, got {len(index)}")
    ranges = [(int(i), int(i) + 1) for i in index] + [(y0, y0 + h), (x0, x0 + w)]
    for (lo, hi), n in zip(ranges, shape, strict=True):
        if not 0 <= lo < hi <= n:
            raise ValueError(f"window {ranges} is outside the image {tuple(shape)}")
    sh, sw = (h, w) if size is None else (int(size[0]), int(size[1]))
    if size is None:
        ys = np.arange(y0, y0 + h, dtype=np.float64)
        xs = np.arange(x0, x0 + w, dtype=np.float64)
    else:
        ys = y0 - 0.5 + (np.arange(sh) + 0.5) * (h / sh)
        xs = x0 - 0.5 + (np.arange(sw) + 0.5) * (w / sw)
    return sh, sw, ys, xs


class WindowRenderer:
    """``render(index, y0, x0, h, w) -> (C, h, w)`` normalised field values with gradient.

    Parameters
    ----------
    grid
        The block grid over the coordinate axes; the last two are the plane (Y, X).
    groups
        The networks being fitted: objects with ``.blocks`` (block numbers) and ``.net``
        (a module evaluating ``(B, N, d)`` coordinates to ``(B, N, C)`` for those blocks).
    """

    def __init__(self, grid: BlockGrid, groups: Sequence[Any]):
        if len(grid.shape) < 2:
            raise ValueError("rendering a 2D window needs at least two coordinate axes")
        self.grid = grid
        self._where = {block: (g, j) for g in groups for j, block in enumerate(g.blocks)}
        self._sliceable = {
            id(g): all(p.shape[0] == len(g.blocks) for p in g.net.parameters()) for g in groups
        }

    def _evaluate(self, block: int, coords: torch.Tensor) -> torch.Tensor:
        group, j = self._where[block]
        net = group.net
        if self._sliceable[id(group)]:  # evaluate this block's network alone
            params = {name: p[j : j + 1] for name, p in net.named_parameters()}
            return torch.func.functional_call(net, params, (coords,))[0]
        return net(coords.expand(len(group.blocks), -1, -1))[j]

    def __call__(
        self,
        index: Sequence[int],
        y0: int,
        x0: int,
        h: int,
        w: int,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Values of the window ``[y0:y0+h, x0:x0+w]`` of the plane at ``index``.

        ``index`` holds the positions on the coordinate axes before the plane (empty for a
        2D image).  With ``size = (sh, sw)`` the window is sampled on an ``sh x sw`` grid of
        cell centres instead of its pixels (``y0 - 0.5 + (i + 0.5) h / sh``, the convention
        of ``torch.nn.functional.interpolate(..., align_corners=False)``): the field is
        continuous, so a shrunken view costs only its own samples.  Returns ``(C, sh, sw)``.
        """
        grid = self.grid
        d = len(grid.shape)
        sh, sw, ys, xs = _window(grid.shape, index, y0, x0, h, w, size)
        outer = [int(grid.block_of(np.array([float(i)]), a)[0]) for a, i in enumerate(index)]
        own_y, own_x = grid.block_of(ys, d - 2), grid.block_of(xs, d - 1)
        out: torch.Tensor | None = None
        for by in np.unique(own_y).tolist():
            rows = np.nonzero(own_y == by)[0]
            for bx in np.unique(own_x).tolist():
                cols = np.nonzero(own_x == bx)[0]
                block = int(np.ravel_multi_index((*outer, by, bx), grid.counts_effective))
                axes = [grid.normalise(block, a, np.array([float(i)])) for a, i in enumerate(index)]
                axes.append(grid.normalise(block, d - 2, ys[rows]))
                axes.append(grid.normalise(block, d - 1, xs[cols]))
                mesh = np.meshgrid(*axes, indexing="ij")
                coords = np.stack([m.ravel() for m in mesh], axis=-1).astype(np.float32)
                group, _ = self._where[block]
                device = next(group.net.parameters()).device
                values = self._evaluate(block, torch.from_numpy(coords).to(device)[None])
                if out is None:
                    out = torch.zeros((values.shape[-1], sh, sw), dtype=values.dtype, device=device)
                r0, c0 = int(rows[0]), int(cols[0])  # owners are contiguous runs
                out[:, r0 : r0 + len(rows), c0 : c0 + len(cols)] = values.T.reshape(
                    -1, len(rows), len(cols)
                )
        assert out is not None  # the window is inside the image, so some block holds it
        return out


class GridWindowRenderer:
    """``render(index, y0, x0, h, w) -> (C, h, w)`` of a latent-grid field being fitted.

    The interface of :class:`WindowRenderer` (same arguments, same sampling of ``size``).
    The field's current latents are rounded with a straight-through gradient (the values
    the decoder will see, the gradient of the unrounded ones), upsampled on the window's
    coordinates only and synthesised; the output is mapped to the normalised units of
    the guidance (``[-1, 1]`` per channel): ``values * gain + offset``.

    Parameters
    ----------
    field
        The :class:`~napari_inif.core.codec.grid.GridField` being fitted.
    gain, offset
        Per-channel affine map from the field's output to normalised values.
    """

    def __init__(self, field: GridField, gain: Sequence[float], offset: Sequence[float]):
        if len(field.spec.shape) < 2:
            raise ValueError("rendering a 2D window needs at least two coordinate axes")
        self.field = field
        self._gain = torch.tensor(list(gain), dtype=torch.float32)
        self._offset = torch.tensor(list(offset), dtype=torch.float32)

    def __call__(
        self,
        index: Sequence[int],
        y0: int,
        x0: int,
        h: int,
        w: int,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Values of the window ``[y0:y0+h, x0:x0+w]`` of the plane at ``index``; see
        :meth:`WindowRenderer.__call__`.  Returns ``(C, sh, sw)``."""
        field = self.field
        sh, sw, ys, xs = _window(field.spec.shape, index, y0, x0, h, w, size)
        coords = [torch.tensor([float(i)], dtype=torch.float64) for i in index]
        coords += [torch.from_numpy(ys), torch.from_numpy(xs)]
        latents = [z + (torch.round(z) - z).detach() for z in field.latents]
        values = field.synthesize(field.features_dense(latents, coords)).reshape(sh, sw, -1)
        return (values * self._gain + self._offset).permute(2, 0, 1)
