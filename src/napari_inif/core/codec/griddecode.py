"""The latent-grid field behind :class:`~napari_inif.core.codec.decode.InifArray`.

:class:`GridFieldDecoder` gives a :class:`~napari_inif.core.codec.grid.GridDecoder` the
surface ``InifArray`` uses of a :class:`~napari_inif.core.codec.decode.FieldDecoder`
(``header.layout``, ``region``, ``points``, ``check_budget``, ``budget``), so pyramid
levels, zoom, ``sample`` and indexing, the dask layers and the napari reader work on grid
files unchanged.  In hybrid mode the grid holds the residual of a classic-codec prior:
the decoded prior of the same pixels is added, as :class:`~.decode.FieldDecoder` does.
Views are rendered in chunks of :data:`RENDER_CHUNK` pixels, so the synthesis network's
activations stay bounded whatever the selection.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_inif.core.codec.decode import check_budget, decode_budget, prior_decoder
from napari_inif.core.errors import DecodeBudgetError, InifFormatError

if TYPE_CHECKING:
    from napari_inif.core.codec.grid import GridCode, GridDecoder
    from napari_inif.core.codec.gridfile import GridHeader
    from napari_inif.core.hybrid.prior import PriorDecoder

__all__ = ["RENDER_CHUNK", "GridFieldDecoder"]

#: Pixels rendered at once: the synthesis takes ~350 bytes a pixel at its peak (features
#: of every level, two hidden layers of 16, float64 denormalising), ~23 MB a chunk.
RENDER_CHUNK = 1 << 16


class GridFieldDecoder:
    """Evaluates a grid stream for :class:`~napari_inif.core.codec.decode.InifArray`.

    Parameters
    ----------
    header
        The file's :class:`~napari_inif.core.codec.gridfile.GridHeader` (its layout).
    code
        The parsed grid stream.
    budget
        Decode memory budget in bytes (:func:`~.decode.decode_budget` when ``None``).
    prior
        Hybrid mode (``header.prior`` set): the prior section of the file, or an already
        built :class:`~napari_inif.core.hybrid.prior.PriorDecoder`.  The grid then holds
        the residual ``(image - prior) / prior.scale`` in the header's normalised units.

    Raises
    ------
    InifFormatError
        Also when the prior's codec is unknown or not installed here.
    """

    def __init__(
        self,
        header: GridHeader,
        code: GridCode,
        budget: int | None = None,
        prior: bytes | PriorDecoder | None = None,
    ):
        from napari_inif.core.codec.grid import GridDecoder

        self.header = header
        self.budget = decode_budget(budget)
        self.device = "cpu"
        try:
            self.field: GridDecoder = GridDecoder(code)
        except MemoryError:
            raise DecodeBudgetError("out of memory building the grid decoder") from None
        self.prior = prior_decoder(header.layout, header.prior, prior)
        if self.prior is not None:
            lo, hi = np.asarray(header.lo, np.float64), np.asarray(header.hi, np.float64)
            self._span, self._mid = (hi - lo) / 2.0, (hi + lo) / 2.0

    def check_budget(self, n_values: int, what: str = "this selection") -> None:
        """Refuse (:class:`DecodeBudgetError`) to decode ``n_values`` output values when
        they would take more than the budget; nothing is allocated before the check."""
        check_budget(n_values, self.budget, what)

    def region(self, positions: Sequence[np.ndarray], channels: np.ndarray) -> np.ndarray:
        """Intensities on the grid ``positions[0] x positions[1] x ...`` (pixel coordinates).

        Returns ``(*[len(p) for p in positions], len(channels))`` float32.
        """
        shape = tuple(len(p) for p in positions)
        self.check_budget(math.prod(shape) * len(channels))
        out = np.empty((*shape, len(channels)), np.float32)
        if 0 in shape or len(channels) == 0:
            return out
        for box in _chunks(shape, RENDER_CHUNK):
            coords = [np.asarray(p, np.float64)[s] for p, s in zip(positions, box, strict=True)]
            values = _guarded(self.field.render, coords)
            values = values.reshape(*values.shape[: len(shape)], -1)
            out[box] = values[..., channels]
        if self.prior is not None:
            out = self.prior.region(positions, channels) + np.float32(self.prior.scale) * out
            out = self._denormalise(out, channels)
        return out

    def points(self, coords: np.ndarray) -> np.ndarray:
        """Intensities ``(N, C)`` at float pixel coordinates ``(N, d)`` of the coordinate axes."""
        coords = np.asarray(coords, np.float64)
        channels = self.header.layout.channels
        self.check_budget(coords.shape[0] * max(coords.shape[1], channels))
        out = np.empty((coords.shape[0], channels), np.float32)
        for at in range(0, coords.shape[0], RENDER_CHUNK):
            rows = coords[at : at + RENDER_CHUNK]
            values = _guarded(self.field.sample, rows)
            out[at : at + RENDER_CHUNK] = values.reshape(len(rows), channels)
        if self.prior is not None:
            out = self.prior.points(coords) + np.float32(self.prior.scale) * out
            out = self._denormalise(out, np.arange(channels))
        return out

    def _denormalise(self, values: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """Intensities from values normalised by the header's range (hybrid mode)."""
        return (values * self._span[channels] + self._mid[channels]).astype(np.float32)


def _guarded(evaluate: Callable[..., np.ndarray], where: Any) -> np.ndarray:
    """``evaluate(where, raw=True)``; a latent tile that does not decode raises only
    :class:`InifFormatError`."""
    try:
        return evaluate(where, raw=True)
    except InifFormatError:
        raise
    except MemoryError:
        raise DecodeBudgetError("out of memory decoding the grid field") from None
    except Exception as exc:  # constriction / numpy on a damaged tile
        raise InifFormatError(f"invalid grid stream: {exc}") from None


def _chunks(shape: tuple[int, ...], size: int) -> list[tuple[slice, ...]]:
    """Boxes covering ``shape`` of at most ``size`` elements each (C order): whole trailing
    axes, rows of the axis where they reach ``size``, single indices before it."""
    boxes_per_axis: list[list[slice]] = []
    for a, n in enumerate(shape):
        inner = math.prod(shape[a + 1 :])
        if inner > size:
            boxes_per_axis.append([slice(i, i + 1) for i in range(n)])
        else:
            step = max(1, size // inner)
            boxes_per_axis.append([slice(i, min(i + step, n)) for i in range(0, n, step)])
            boxes_per_axis += [[slice(None)] for _ in shape[a + 1 :]]
            break
    return list(itertools.product(*boxes_per_axis))
