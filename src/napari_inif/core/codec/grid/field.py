"""The latent-grid field: multi-resolution latents, multilinear upsampling, a tiny MLP.

The family of Cool-chic (Ladune et al. 2023) and C3 (Kim et al., CVPR 2024): the signal
lives in integer latent grids, levels 2x apart along every coordinate axis, that are
upsampled to the asked coordinates, stacked (one feature per level) and mapped to the
channels by a small synthesis MLP.  The latents are entropy coded under a zero-mean
Laplace model with one learned scale per level; training minimises ``D + lambda * R``.

Coordinates are pixel indices of the full-resolution grid (``0 .. n - 1`` along an axis;
any real value in between, or beyond, is allowed).  Latent ``j`` of a level with ``m``
cells over an axis of ``n`` pixels sits at pixel ``(j + 0.5) * n / m - 0.5`` (the
``align_corners=False`` convention), clamped at the edges.  Upsampling is separable: a
dense view is ``ndim`` 1-D linear interpolations (two gathers and a lerp per axis), a
scattered sample gathers the ``2**ndim`` corners.  Both paths compute the same function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "GridField",
    "GridSpec",
    "axis_weights",
    "laplace_bits",
    "soft_round",
]

LOG2 = math.log(2.0)


@dataclass(frozen=True)
class GridSpec:
    """The shape of a latent-grid field (everything the decoder needs besides numbers).

    Attributes
    ----------
    shape
        Lengths of the coordinate axes (2 to 4 of them).
    channels
        Output channels.
    levels
        Number of latent grids, level ``l`` being ``2**l`` coarser per long-enough axis.
    hidden
        Widths of the synthesis MLP's hidden layers (may be empty: a linear map).
    """

    shape: tuple[int, ...]
    channels: int = 1
    levels: int = 7
    hidden: tuple[int, ...] = (16, 16)

    def __post_init__(self) -> None:
        if not 1 <= len(self.shape) <= 4:
            raise ValueError(f"a grid field has 1 to 4 coordinate axes, got {self.shape}")
        if any(n < 1 for n in self.shape) or self.channels < 1 or self.levels < 1:
            raise ValueError(f"invalid grid spec {self}")

    def level_shape(self, level: int) -> tuple[int, ...]:
        """Latent grid shape of ``level``: ``ceil(n / 2**level)`` per axis, at least 1."""
        return tuple(max(1, -(-n // (1 << level))) for n in self.shape)

    @property
    def level_shapes(self) -> list[tuple[int, ...]]:
        """The shape of every level, finest first."""
        return [self.level_shape(lv) for lv in range(self.levels)]

    @property
    def num_latents(self) -> int:
        """Latents over all levels."""
        return sum(math.prod(s) for s in self.level_shapes)


def axis_weights(
    n: int, m: int, coords: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear interpolation along one axis: ``(i0, i1, w)`` so ``v = (1-w) g[i0] + w g[i1]``.

    ``n`` pixels, ``m`` latent cells, ``coords`` pixel positions (float64 or float32).
    """
    src = (coords.double() + 0.5) * (m / n) - 0.5
    src = src.clamp(0.0, float(m - 1))
    i0 = src.floor().long().clamp(max=max(m - 2, 0))
    i1 = (i0 + 1).clamp(max=m - 1)
    w = (src - i0.double()).float()
    return i0, i1, w


def upsample_dense(
    grid: torch.Tensor, n: Sequence[int], coords: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Values of ``grid`` (a level over an image of shape ``n``) on the product of ``coords``.

    ``grid`` may be a window ``[lo_a : lo_a + grid.shape[a]]`` of the level only when the
    caller passes its offset via :func:`upsample_window`; here it is the whole level.
    """
    out = grid
    for axis, (na, ca) in enumerate(zip(n, coords, strict=True)):
        i0, i1, w = axis_weights(na, grid.shape[axis], ca)
        shape = [1] * grid.ndim
        shape[axis] = -1
        wb = w.view(shape)
        out = out.index_select(axis, i0) * (1 - wb) + out.index_select(axis, i1) * wb
    return out


def upsample_window(
    window: torch.Tensor,
    offset: Sequence[int],
    level_shape: Sequence[int],
    n: Sequence[int],
    coords: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Like :func:`upsample_dense` for a window of a level starting at ``offset``.

    The window must hold every latent the coordinates touch (see :func:`needed_range`).
    """
    out = window
    for axis, (na, ca) in enumerate(zip(n, coords, strict=True)):
        i0, i1, w = axis_weights(na, level_shape[axis], ca)
        i0 = i0 - offset[axis]
        i1 = i1 - offset[axis]
        shape = [1] * window.ndim
        shape[axis] = -1
        wb = w.view(shape)
        out = out.index_select(axis, i0) * (1 - wb) + out.index_select(axis, i1) * wb
    return out


def needed_range(n: int, m: int, coords: torch.Tensor) -> tuple[int, int]:
    """Latent indices ``[lo, hi)`` that interpolation at ``coords`` reads along one axis."""
    if coords.numel() == 0:
        return 0, 0
    i0, i1, _ = axis_weights(n, m, coords)
    return int(i0.min()), int(i1.max()) + 1


def soft_round(x: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """Differentiable rounding (Agustsson & Theis 2020); ``temperature -> 0`` is rounding."""
    alpha = 1.0 / torch.as_tensor(temperature, dtype=x.dtype)
    floor = torch.floor(x)
    r = x - floor - 0.5
    return floor + 0.5 + torch.tanh(alpha * r) / (2.0 * torch.tanh(alpha / 2.0))


def laplace_bits(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``-log2`` of the mass of a zero-mean Laplace on ``[y - 1/2, y + 1/2]``, elementwise.

    Closed form in ``|y|``, stable for large values and small scales.
    """
    a = y.abs()
    inv = 1.0 / scale
    # |y| >= 1/2: P = 1/2 exp(-(|y| - 1/2)/b) (1 - exp(-1/b))
    log_tail = -LOG2 - (a - 0.5) * inv + torch.log(-torch.expm1(-inv))
    # |y| < 1/2: P = 1 - 1/2 exp(-(1/2 - |y|)/b) - 1/2 exp(-(1/2 + |y|)/b)
    inner = 1.0 - 0.5 * torch.exp(-(0.5 - a).clamp(min=0) * inv) - 0.5 * torch.exp(-(0.5 + a) * inv)
    log_inner = torch.log(inner.clamp(min=1e-12))
    log_p = torch.where(a >= 0.5, log_tail, log_inner)
    return -log_p.clamp(min=math.log(2.0**-24)) / LOG2


class GridField(nn.Module):
    """Latent grids + per-level Laplace scales + synthesis MLP.

    Parameters
    ----------
    spec
        The grid's shape.
    """

    def __init__(self, spec: GridSpec):
        super().__init__()
        self.spec = spec
        self.latents = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in spec.level_shapes])
        self.log_scale = nn.Parameter(torch.zeros(spec.levels))
        layers: list[nn.Module] = []
        width = spec.levels
        for h in spec.hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.1)]
            width = h
        layers.append(nn.Linear(width, spec.channels))
        self.synthesis = nn.Sequential(*layers)

    # -- parameters that are coded as network weights
    def weight_tensors(self) -> list[torch.Tensor]:
        """The synthesis parameters in a fixed order (what the file stores as weights)."""
        return [p for p in self.synthesis.parameters()]

    def scales(self) -> torch.Tensor:
        """Laplace scale per level."""
        return torch.exp(self.log_scale).clamp(min=1e-3)

    # -- evaluation
    def features_dense(
        self, latents: Sequence[torch.Tensor], coords: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Upsampled latents on the product of ``coords`` (default: every pixel): ``(*view, L)``."""
        spec = self.spec
        if coords is None and 1 <= len(spec.shape) <= 3:
            # every pixel: torch's linear interpolation is this convention (one kernel)
            mode = ("linear", "bilinear", "trilinear")[len(spec.shape) - 1]
            feats = [
                z
                if tuple(z.shape) == spec.shape
                else torch.nn.functional.interpolate(
                    z[None, None], size=spec.shape, mode=mode, align_corners=False
                )[0, 0]
                for z in latents
            ]
            return torch.stack(feats, dim=-1)
        if coords is None:
            coords = [torch.arange(n, dtype=torch.float64) for n in spec.shape]
        feats = [upsample_dense(z, spec.shape, coords) for z in latents]
        return torch.stack(feats, dim=-1)

    def features_points(
        self, latents: Sequence[torch.Tensor], points: torch.Tensor
    ) -> torch.Tensor:
        """Upsampled latents at scattered ``points`` ``(N, ndim)`` pixel coordinates: ``(N, L)``."""
        spec = self.spec
        ndim = len(spec.shape)
        out = []
        for z in latents:
            idx = []
            for axis in range(ndim):
                idx.append(axis_weights(spec.shape[axis], z.shape[axis], points[:, axis]))
            flat = z.reshape(-1)
            strides = [math.prod(z.shape[a + 1 :]) for a in range(ndim)]
            acc = torch.zeros(points.shape[0], dtype=z.dtype)
            for corner in range(1 << ndim):
                lin = torch.zeros(points.shape[0], dtype=torch.long)
                wt = torch.ones(points.shape[0], dtype=z.dtype)
                for axis in range(ndim):
                    i0, i1, w = idx[axis]
                    if corner >> axis & 1:
                        lin = lin + i1 * strides[axis]
                        wt = wt * w
                    else:
                        lin = lin + i0 * strides[axis]
                        wt = wt * (1 - w)
                acc = acc + flat[lin] * wt
            out.append(acc)
        return torch.stack(out, dim=-1)

    def synthesize(self, features: torch.Tensor) -> torch.Tensor:
        """Channels from features ``(..., L)`` -> ``(..., C)``."""
        shape = features.shape[:-1]
        return self.synthesis(features.reshape(-1, features.shape[-1])).reshape(*shape, -1)

    def quantized_latents(self) -> list[torch.Tensor]:
        """The rounded latents (what the file stores)."""
        return [torch.round(z.detach()) for z in self.latents]
