"""The latent-grid field: multi-resolution latents, B-spline upsampling, a tiny MLP.

The family of Cool-chic (Ladune et al. 2023) and C3 (Kim et al., CVPR 2024): the signal
lives in integer latent grids, levels 2x apart along every coordinate axis (along a
time axis, 2x apart every second level: :meth:`GridSpec.exponent`), that are upsampled
to the asked coordinates, stacked (``features`` grids a level: one, or one a channel)
and mapped to the channels by a small synthesis MLP.  The latents are entropy coded
under a Laplace model (per-grid scales, and a context network's means and scale
offsets: :class:`ContextModel`); training minimises ``D + lambda * R``.

Upsampling is a separable B-spline (:func:`axis_taps`; its degree in the spec): linear
interpolation in streams before version 5, the cubic B-spline now.  A coarse level's
latents are coefficients of smooth bumps rather than samples joined by straight lines,
which suits the smooth low-frequency content of fluorescence images (see
:data:`~.fit.UPSAMPLING_DEGREE` for the measurements).  Tried and not kept (cells-tyx
128x, 300 steps, same bytes): Catmull-Rom (cubic interpolation) instead of linear, 31.70
vs 31.91 dB; a 3x3(x3) convolutional refinement after the MLP (Cool-chic's), 31.88 /
31.90.

Coordinates are pixel indices of the full-resolution grid (``0 .. n - 1`` along an axis;
any real value in between, or beyond, is allowed).  Latent ``j`` of a level with ``m``
cells over an axis of ``n`` pixels sits at pixel ``(j + 0.5) * n / m - 0.5`` (the
``align_corners=False`` convention), clamped at the edges.  A dense view is ``ndim``
1-D passes (``degree + 1`` gathers and weighted sums per axis, two along an axis where
the level has a latent per pixel), a scattered sample gathers every combination of taps
(at most ``(degree + 1) ** ndim``).  Both paths compute the same function.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "DEGREES",
    "ContextModel",
    "GridField",
    "GridSpec",
    "axis_taps",
    "context_features",
    "laplace_bits",
    "parent_factors",
    "parent_inputs",
    "parent_window",
    "soft_round",
]

LOG2 = math.log(2.0)
#: Slope of the context network's leaky ReLU: a power of two, so that its coded
#: evaluation (:func:`~.coding.context_exact`, in integers) needs no rounding.
CONTEXT_SLOPE = 0.125
#: The context network's mean is rounded to multiples of ``1 / MU_STEPS`` and its log2
#: scale to multiples of ``1 / 16`` (the scale codes of the stream) before coding.
MU_STEPS = 64
#: B-spline degrees of the upsampling (:func:`axis_taps`): linear, quadratic, cubic.
DEGREES = (1, 2, 3)
#: The range of Laplace scales the stream's u8 codes can say (``2 ** ((c - 160) / 16)``).
SCALE_MIN, SCALE_MAX = 2.0**-10, 2.0 ** (95 / 16)


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
    context
        Hidden width of the entropy model's context network (0: one zero-mean Laplace
        per level, no context).
    finest
        The finest level is ``2**finest`` coarser than the pixels (0: one latent per
        pixel).  Small budgets leave a full-resolution level all zero; not having it
        saves its compute.
    time_axis
        The coordinate axis that is time, if any (:meth:`exponent`).
    features
        Latent grids per level (the synthesis reads ``levels * features`` numbers a
        pixel).  One feature a level carries one number a pixel at the finest level,
        whatever the channels: a 3-channel image could not spend a large budget (asked
        128x, BBBC034 landed at 923x).  :func:`~.fit.choose_spec` gives a multi-channel
        image one feature a channel.
    parent_neighbours
        Whether the context network also reads the parent's ``2 d`` face neighbours in
        the parent grid (stream version 4; not in version 2-3 streams).  On fixed
        fitted latents (cells-tyx 128x with an 8-wide context, tinc-zyx 256x with a
        4-wide one) the coder spent 4.7% / 4.1% fewer bits on the latents with them,
        4.3% / 1.7% fewer bytes counting its larger weights.

    degree
        Of the B-spline that upsamples the latents (:func:`axis_taps`): 1 is
        multilinear interpolation (stream versions 2-4), 2 quadratic, 3 cubic; along an
        axis where a level has a latent per pixel, linear whatever the degree.

    The latent grids are numbered finest first, the features of a level together:
    grid ``g`` is feature ``g % features`` of level ``g // features``, and its parent
    (the entropy model's coarser neighbour) is grid ``g + features``.
    """

    shape: tuple[int, ...]
    channels: int = 1
    levels: int = 7
    hidden: tuple[int, ...] = (16, 16)
    context: int = 0
    finest: int = 0
    time_axis: int | None = None
    features: int = 1
    parent_neighbours: bool = True
    degree: int = 1

    def __post_init__(self) -> None:
        if not 1 <= len(self.shape) <= 4:
            raise ValueError(f"a grid field has 1 to 4 coordinate axes, got {self.shape}")
        if (
            any(n < 1 for n in self.shape)
            or self.channels < 1
            or self.levels < 1
            or not 1 <= self.features <= 255
            or not 0 <= self.finest <= 8
            or self.degree not in DEGREES
            or not (self.time_axis is None or 0 <= self.time_axis < len(self.shape))
        ):
            raise ValueError(f"invalid grid spec {self}")

    def exponent(self, level: int, axis: int) -> int:
        """Level ``level`` is ``2**exponent`` coarser than the pixels along ``axis``:
        ``finest + level``, and ``(finest + level) // 2`` along the time axis.

        A time-lapse's frames are far apart compared with how far things move between
        them: along T the latents keep full resolution in the finest level and halve
        every second level (cells-tyx 128x, 300 steps, no context: 30.93 -> 32.82 dB;
        T halving every second level from the finest: 31.59; along Z of tinc-zyx, the
        same schedule lost 0.25 dB, so Z stays as X and Y).
        """
        if axis == self.time_axis:
            return (self.finest + level) // 2
        return self.finest + level

    def level_shape(self, level: int) -> tuple[int, ...]:
        """Latent grid shape of ``level``: ``ceil(n / 2**exponent)`` per axis, at least 1."""
        return tuple(
            max(1, -(-n // (1 << self.exponent(level, a)))) for a, n in enumerate(self.shape)
        )

    @property
    def level_shapes(self) -> list[tuple[int, ...]]:
        """The shape of every level, finest first."""
        return [self.level_shape(lv) for lv in range(self.levels)]

    @property
    def parent_columns(self) -> int:
        """The context network's inputs from the parent grid: the parent, and its
        ``2 d`` face neighbours with :attr:`parent_neighbours`."""
        return 1 + 2 * len(self.shape) if self.parent_neighbours else 1

    @property
    def grids(self) -> int:
        """Latent grids: ``levels * features``."""
        return self.levels * self.features

    def grid_shape(self, grid: int) -> tuple[int, ...]:
        """Shape of latent grid ``grid`` (that of its level)."""
        return self.level_shape(grid // self.features)

    @property
    def grid_shapes(self) -> list[tuple[int, ...]]:
        """The shape of every latent grid, finest first."""
        return [self.grid_shape(g) for g in range(self.grids)]

    def parent(self, grid: int) -> int | None:
        """The grid the entropy model reads parents from: the same feature one level
        coarser (``None`` for the coarsest level)."""
        up = grid + self.features
        return up if up < self.grids else None

    @property
    def num_latents(self) -> int:
        """Latents over all grids."""
        return sum(math.prod(s) for s in self.grid_shapes)


def axis_taps(
    n: int, m: int, coords: torch.Tensor, degree: int = 1
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Upsampling along one axis: ``v = sum_k w[k] * g[i[k]]`` with ``(i, w) = axis_taps(...)``.

    ``n`` pixels, ``m`` latent cells, ``coords`` pixel positions (float64 or float32);
    ``degree`` the B-spline's (:attr:`GridSpec.degree`): 1 is linear interpolation
    (two taps), 2 the quadratic B-spline (three), 3 the cubic one (four).  The position
    of ``coords`` on the level, ``(c + 0.5) m / n - 0.5``, is clamped to ``[0, m - 1]``
    and the taps to the level (edge latents repeat).

    Along an axis where the level has a latent per pixel (``m == n``: the finest level
    at full resolution, the time axis of the finer levels) the taps are linear whatever
    the degree: at pixel centres that is the latent itself, where a B-spline would blur
    it and make a plane read its neighbour planes (a cold view of one cells-tyx plane at
    64x decoded two tiles along T instead of one: 164 ms instead of ~60).
    """
    src = (coords.double() + 0.5) * (m / n) - 0.5
    src = src.clamp(0.0, float(m - 1))
    if degree == 1 or m >= n:
        i0 = src.floor().long().clamp(max=max(m - 2, 0))
        i1 = (i0 + 1).clamp(max=m - 1)
        w = (src - i0.double()).float()
        return [i0, i1], [1 - w, w]
    if degree == 2:  # centred on the nearest latent, d in [-1/2, 1/2]
        i = torch.round(src).long()
        d = (src - i.double()).float()
        weights = [(0.5 - d) ** 2 / 2, 0.75 - d**2, (0.5 + d) ** 2 / 2]
        first = i - 1
    elif degree == 3:  # t in [0, 1) past latent i
        i = src.floor().long()
        t = (src - i.double()).float()
        u = 1 - t
        weights = [u**3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (3 * u**3 - 6 * u**2 + 4) / 6, t**3 / 6]
        first = i - 1
    else:
        raise ValueError(f"B-spline degree {degree} (1, 2 or 3)")
    return [(first + k).clamp(0, m - 1) for k in range(len(weights))], weights


def upsample_dense(
    grid: torch.Tensor, n: Sequence[int], coords: Sequence[torch.Tensor], degree: int = 1
) -> torch.Tensor:
    """Values of ``grid`` (a level over an image of shape ``n``) on the product of ``coords``."""
    return upsample_window(grid, [0] * grid.ndim, grid.shape, n, coords, degree)


def upsample_window(
    window: torch.Tensor,
    offset: Sequence[int],
    level_shape: Sequence[int],
    n: Sequence[int],
    coords: Sequence[torch.Tensor],
    degree: int = 1,
) -> torch.Tensor:
    """Like :func:`upsample_dense` for a window of a level starting at ``offset``.

    The window must hold every latent the coordinates touch (see :func:`needed_range`).
    Separable: one axis after the other, ``degree + 1`` gathers each (two along an axis
    where the level has a latent per pixel: :func:`axis_taps`).
    """
    out = window
    for axis, (na, ca) in enumerate(zip(n, coords, strict=True)):
        taps, weights = axis_taps(na, level_shape[axis], ca, degree)
        shape = [1] * window.ndim
        shape[axis] = -1
        acc = None
        for i, w in zip(taps, weights, strict=True):
            term = out.index_select(axis, i - offset[axis]) * w.view(shape)
            acc = term if acc is None else acc + term
        assert acc is not None
        out = acc
    return out


def needed_range(n: int, m: int, coords: torch.Tensor, degree: int = 1) -> tuple[int, int]:
    """Latent indices ``[lo, hi)`` that upsampling at ``coords`` reads along one axis."""
    if coords.numel() == 0:
        return 0, 0
    taps, _ = axis_taps(n, m, coords, degree)
    return int(taps[0].min()), int(taps[-1].max()) + 1


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


def context_features(
    level: torch.Tensor,
    parent: torch.Tensor | None,
    offset: Sequence[int] = (),
    edge: Sequence[int] | None = None,
    parent_columns: int = 1,
) -> torch.Tensor:
    """The entropy model's inputs for every latent of ``level``:
    ``(*level.shape, k + 2d + 1)``, ``k`` the parent columns.

    Per latent: its parent inputs (:func:`parent_inputs`: the parent grid's latent at
    ``index // 2``, or ``index`` along an axis that level does not halve, and with
    :attr:`GridSpec.parent_neighbours` that latent's face neighbours; already decoded;
    0 for the coarsest level), its ``2 d`` face neighbours in the level, and a flag that
    is 1 for *anchors* (even sum of indices).  Decoding a level goes in two vectorised
    passes, anchors then the rest (a checkerboard), so anchors see no neighbours (they
    read as 0) and the others see anchors only.  A neighbour outside the tile (tiles of
    ``edge[a]`` latents along axis ``a``, aligned at 0) or outside the level reads as 0,
    so a tile decodes without its neighbours.  ``level`` may be one tile: ``offset`` is
    its start in the level (even, as tile starts are) and ``edge=None`` means the tile
    itself.

    ``parent`` is ``(*level.shape, k)`` from :func:`parent_inputs`, or ``None`` (zeros,
    ``parent_columns`` of them).
    """
    nd = level.ndim
    idx = [torch.arange(n) + (offset[a] if offset else 0) for a, n in enumerate(level.shape)]
    parity = torch.zeros([1] * nd, dtype=torch.long)
    for a, i in enumerate(idx):
        parity = parity + i.view([-1 if b == a else 1 for b in range(nd)])
    anchor = (parity % 2 == 0).to(level.dtype)
    if parent is None:
        parent = level.new_zeros((*level.shape, parent_columns))
    cols = list(parent.unbind(-1))
    for a in range(nd):
        n = level.shape[a]
        pos = idx[a]
        shape = [-1 if b == a else 1 for b in range(nd)]
        for step in (-1, 1):
            shifted = torch.roll(level, -step, a)  # shifted[i] = level[i + step]
            j = pos + step
            ok = (j >= pos[0]) & (j < pos[0] + n)  # inside the window (roll wraps)
            if edge is not None:
                ok = ok & (j // edge[a] == pos // edge[a])
            cols.append(shifted * ok.to(level.dtype).view(shape) * (1 - anchor))
    cols.append(anchor.expand_as(level))
    return torch.stack(cols, -1)


def parent_factors(fine: Sequence[int], coarse: Sequence[int]) -> tuple[int, ...]:
    """Per axis, how many latents of a level share one parent in the next: 2, or 1
    along an axis the next level does not halve (:meth:`GridSpec.exponent`).

    From the two levels' whole shapes: halving makes ``ceil(m / 2) < m`` of any
    ``m >= 2``; where ``m == 1`` the factor does not matter (index 0 either way).
    """
    return tuple(1 if c == f and f > 1 else 2 for f, c in zip(fine, coarse, strict=True))


def parent_inputs(
    coarse: torch.Tensor,
    shape: Sequence[int],
    offset: Sequence[int],
    factors: Sequence[int],
    *,
    start: Sequence[int],
    coarse_shape: Sequence[int],
    edge: Sequence[int] | None = None,
    neighbours: bool = True,
) -> torch.Tensor:
    """The parent inputs of the context network for a window of a grid:
    ``(*shape, 1 + 2d)`` (``(*shape, 1)`` without ``neighbours``).

    For every index ``i`` of the window (which starts at ``offset``): the parent
    ``P[p]``, ``p = i // f`` per axis (``f`` the axis's :func:`parent_factors`), then
    ``P[p -+ 1]`` along each axis in turn, 0 outside the parent grid (whole shape
    ``coarse_shape``) or outside the parent's tile (tiles of ``edge``): a tile still
    decodes from the parent tiles under it alone.  ``coarse`` is a window of the parent
    grid starting at ``start`` that holds every latent read (:func:`parent_window`).
    """
    d = len(shape)
    p = [(torch.arange(n) + offset[a]) // factors[a] for a, n in enumerate(shape)]

    def take(idx: list[torch.Tensor]) -> torch.Tensor:
        out = coarse
        for a in range(d):
            out = out.index_select(a, (idx[a] - start[a]).clamp(0, coarse.shape[a] - 1))
        return out

    cols = [take(p)]
    if neighbours:
        for a in range(d):
            for step in (-1, 1):
                q = p[a] + step
                ok = (q >= 0) & (q < coarse_shape[a])
                if edge is not None:
                    ok = ok & (q // edge[a] == p[a] // edge[a])
                idx = list(p)
                idx[a] = q
                mask = ok.to(coarse.dtype).view([-1 if b == a else 1 for b in range(d)])
                cols.append(take(idx) * mask)
    return torch.stack(cols, -1)


def parent_window(
    box: Sequence[slice],
    coarse_shape: Sequence[int],
    factors: Sequence[int],
    edge: Sequence[int],
    neighbours: bool,
) -> tuple[list[int], list[int]]:
    """``[lo, hi)`` of the parent grid (shape ``coarse_shape``) that :func:`parent_inputs`
    reads for the window ``box`` of a grid: the parents, and with ``neighbours`` one more
    on each side where that stays inside the parents' tiles (tiles of ``edge``)."""
    lo = [s.start // f for s, f in zip(box, factors, strict=True)]
    hi = [min((s.stop - 1) // f + 1, n) for s, n, f in zip(box, coarse_shape, factors, strict=True)]
    if neighbours:
        lo = [max(a - 1, a // e * e) for a, e in zip(lo, edge, strict=True)]
        hi = [
            min(b + 1, ((b - 1) // e + 1) * e, n)
            for b, e, n in zip(hi, edge, coarse_shape, strict=True)
        ]
    return lo, hi


class ContextModel(nn.Module):
    """``(mu, log2 scale offset)`` of each latent from :func:`context_features`.

    One tiny network shared by all grids (``k + 2d + 1 -> hidden -> 2``, ``k`` the
    parent columns, leaky ReLU); the per-grid scale of :class:`GridField` is added to
    its log2-scale output.
    """

    def __init__(self, ndim: int, hidden: int, parent_columns: int = 1):
        super().__init__()
        self.inner = nn.Linear(parent_columns + 2 * ndim + 1, hidden)
        self.outer = nn.Linear(hidden, 2)
        with torch.no_grad():  # start as the context-free model: mu 0, offset 0
            self.outer.weight.mul_(0.01)
            self.outer.bias.zero_()

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time ``(mu, log2 scale offset)``, float32, differentiable."""
        h = torch.nn.functional.leaky_relu(self.inner(feats), CONTEXT_SLOPE)
        out = self.outer(h)
        return out[..., 0], out[..., 1]


class GridField(nn.Module):
    """Latent grids + per-level Laplace scales + synthesis MLP.

    Parameters
    ----------
    spec
        The grid's shape.
    latents
        Whether to make the (zero) latent grids: a fit does, a decoder does not.
    """

    def __init__(self, spec: GridSpec, *, latents: bool = True):
        super().__init__()
        self.spec = spec
        # a decoder reads its latents from the stream: it makes none (``latents=False``)
        shapes = spec.grid_shapes if latents else []
        self.latents = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in shapes])
        self.log_scale = nn.Parameter(torch.zeros(spec.grids))
        layers: list[nn.Module] = []
        width = spec.grids
        for h in spec.hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.1)]
            width = h
        layers.append(nn.Linear(width, spec.channels))
        self.synthesis = nn.Sequential(*layers)
        self.context = (
            ContextModel(len(spec.shape), spec.context, spec.parent_columns)
            if spec.context
            else None
        )

    # -- parameters that are coded as network weights
    def weight_tensors(self) -> list[torch.Tensor]:
        """The synthesis parameters in a fixed order (what the file stores as weights)."""
        return [p for p in self.synthesis.parameters()]

    def context_tensors(self) -> list[torch.Tensor]:
        """The context network's parameters ``(W1, b1, W2, b2)`` (empty without one)."""
        if self.context is None:
            return []
        c = self.context
        return [c.inner.weight, c.inner.bias, c.outer.weight, c.outer.bias]

    def scales(self) -> torch.Tensor:
        """Laplace scale per latent grid."""
        return torch.exp(self.log_scale).clamp(min=1e-3)

    def rate(
        self,
        latents: Sequence[torch.Tensor],
        scales: torch.Tensor,
        edge: Sequence[int] | None = None,
        *,
        plain: bool = False,
    ) -> torch.Tensor:
        """Bits of ``latents`` (every grid, finest first; integers or their noisy
        training proxies) under the entropy model: the per-grid Laplace, shifted and
        rescaled by the context network when there is one (tiles of ``edge`` latents,
        as coded).

        ``plain``: the per-grid Laplaces alone, even with a context network (what
        the fit trains on, see :mod:`.fit`).
        """
        total = torch.zeros(())
        for g, y in enumerate(latents):
            if self.context is None or plain:
                total = total + laplace_bits(y, scales[g]).sum()
                continue
            parent = None
            up = self.spec.parent(g)
            if up is not None:
                coarse = latents[up]
                zeros = [0] * y.ndim
                parent = parent_inputs(
                    coarse,
                    y.shape,
                    zeros,
                    parent_factors(y.shape, coarse.shape),
                    start=zeros,
                    coarse_shape=coarse.shape,
                    edge=edge,
                    neighbours=self.spec.parent_neighbours,
                )
            feats = context_features(y, parent, edge=edge, parent_columns=self.spec.parent_columns)
            mu, offset = self.context(feats)
            scale = (scales[g] * torch.exp2(offset)).clamp(SCALE_MIN, SCALE_MAX)
            total = total + laplace_bits(y - mu, scale).sum()
        return total

    # -- evaluation
    def features_dense(
        self, latents: Sequence[torch.Tensor], coords: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Upsampled latents on the product of ``coords`` (default: every pixel):
        ``(*view, G)``, one number per latent grid."""
        spec = self.spec
        if coords is None and 1 <= len(spec.shape) <= 3 and spec.degree == 1:
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
        feats = [upsample_dense(z, spec.shape, coords, spec.degree) for z in latents]
        return torch.stack(feats, dim=-1)

    def features_points(
        self, latents: Sequence[torch.Tensor], points: torch.Tensor
    ) -> torch.Tensor:
        """Upsampled latents at scattered ``points`` ``(N, ndim)`` pixel coordinates: ``(N, G)``."""
        spec = self.spec
        ndim = len(spec.shape)
        out = []
        for z in latents:
            taps = [
                axis_taps(spec.shape[axis], z.shape[axis], points[:, axis], spec.degree)
                for axis in range(ndim)
            ]
            flat = z.reshape(-1)
            strides = [math.prod(z.shape[a + 1 :]) for a in range(ndim)]
            acc = torch.zeros(points.shape[0], dtype=z.dtype)
            # every combination of one tap per axis: 2**ndim corners when linear
            for corner in itertools.product(*(range(len(t[0])) for t in taps)):
                lin = torch.zeros(points.shape[0], dtype=torch.long)
                wt = torch.ones(points.shape[0], dtype=z.dtype)
                for axis, k in enumerate(corner):
                    lin = lin + taps[axis][0][k] * strides[axis]
                    wt = wt * taps[axis][1][k]
                acc = acc + flat[lin] * wt
            out.append(acc)
        return torch.stack(out, dim=-1)

    def synthesize(self, features: torch.Tensor) -> torch.Tensor:
        """Channels from features ``(..., G)`` -> ``(..., C)``."""
        shape = features.shape[:-1]
        return self.synthesis(features.reshape(-1, features.shape[-1])).reshape(*shape, -1)

    def quantized_latents(self) -> list[torch.Tensor]:
        """The rounded latents (what the file stores)."""
        return [torch.round(z.detach()) for z in self.latents]
