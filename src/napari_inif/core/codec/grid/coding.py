"""The grid bitstream: a compact struct header, range-coded weights and latent tiles.

Layout (version 6; integers little-endian, ``v`` = unsigned LEB128 varint, bit 0 the
lowest)::

    b"IG" u8 version
    u8 A: ndim - 1 (bits 0-1) | dtype code (2-4) | upsampling degree - 1 (5-6)
          | tiling (7: 0 = the default edges for ndim, DEFAULT_EDGE; 1 = listed)
    u8 channels | v shape[ndim]
    u8 B: levels - 1 (bits 0-3) | finest (4-7)
    u8 C: time axis (bits 0-2: 0 = none | 1 + the index of the coordinate axis that
          is time) | n_hidden (3-5) | intensity map in whole numbers (6) | 0 (7)
    u8 features | u8 width[n_hidden] | u8 context width | [tiling 1: v tile edge[ndim]]
    per channel: v lo | v (hi - lo)  (C bit 6)  or  f32 lo | f32 hi
    per grid:  u8 scale code | v max |latent|        (max 0: the grid is all zero)
    v max |q| of all weight tensors
    per weight tensor: u8 step exponent k | u8 scale code
    v shared-stream words
    per grid with max > 0 and more than one tile:
        tile bitmap (1 bit per tile, C order) | v words per set tile
    shared stream | tile streams (grid by grid, tile by tile), 32-bit words

Version 5 (written on 2026-11-30, format 4.0) has a byte a field (``u8 ndim | u8
channels | u8 dtype code | v shape | u8 levels | u8 features | u8 n_hidden | widths |
u8 context | u8 finest | u8 time axis | u8 degree | u8 tiling [edges]``), the intensity
map always as two f32 a channel, and each weight tensor its own bound (``u8 k | u8
code | v max``): 11-16 bytes more, which a 250-byte file feels.

A level holds ``features`` latent grids (:class:`~.field.GridSpec`); the grids are
numbered finest level first, a level's features together, and grid ``g``'s parents are
in grid ``g + features``.  The *shared stream* holds the weights, then the one tile of
every grid whose level has a single tile (and max > 0), coarsest first: every region
reads those grids anyway, and one range-coded stream instead of one per grid saves the
per-stream word padding and flush (2-4 bytes each) and the tile tables (2 bytes a grid)
-- ~25 bytes of a 250-byte file.  Version 4 (written before the B-spline upsampling,
2026-11-30) is version 5 without the upsampling byte (linear interpolation); version 3
(before features)
also no features byte (one a level), one ``lo | hi`` for all channels and a context that
reads the parent alone; version 2 (before 2026-11-30's format 4.0 change) also no
time-axis byte (no time axis), the edges always as varints and the weights alone in
that stream.  All are still read.

Latents are the integers the fit rounded to; they are coded with ``constriction``'s range
coder under a ``QuantizedLaplace`` on ``[-max, max]``.  Without a context network (context
width 0) it is the per-grid model the fit learned: mean 0, scale ``2 ** ((code - 160) /
16)``.  With one, each latent's mean and scale code come from the context network (a
``k + 2d + 1 -> width -> 2`` leaky-ReLU MLP, :class:`~.field.ContextModel`) over its
parent (the parent grid's latent at ``index // 2``; from version 4 also that latent's face
neighbours in its tile: ``k = 1 + 2d``) and its face neighbours in the same tile,
evaluated exactly, in integers (:func:`context_exact`): mean rounded to 1/64, scale code
= grid code + 16 x the offset, clipped to 0..255.  Each grid is cut into tiles of ``edge``
latents per axis, coded independently (a neighbour in another tile reads as 0), each as
two runs: its *anchors* (even sum of indices; they see only their parents) then the
others (they also see the anchors), so a tile decodes in two vectorised calls and a
region decodes only the tiles it touches (and their parents' tiles); a tile of zeros
costs one bit.  Synthesis weights, then the context weights ``W1, b1, W2, b2``, are
quantised per tensor with step ``2 ** -k`` (a small rate-distortion search) and coded
the same way (mean 0, scale = mean ``|q|``).

Header size (version 6, 2D uint16, 7 levels, a 16-16 synthesis, context 8): 9 bytes of
fixed fields besides the shape and widths, 3-6 for the intensity map, 2-3 a grid and 2
a weight tensor (10 of them), plus the tile table of the grids with more than one tile
(1 bit per tile, 1-2 bytes per coded tile).
"""

from __future__ import annotations

import functools
import io
import math
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import constriction
import numpy as np
import torch

from napari_inif.core.codec.grid.field import (
    DEGREES,
    MU_STEPS,
    GridField,
    GridSpec,
    context_features,
    laplace_bits,
    parent_factors,
    parent_inputs,
    parent_window,
)
from napari_inif.core.codec.varint import Reader as _Reader
from napari_inif.core.codec.varint import put_varint as _put_varint
from napari_inif.core.errors import DecodeBudgetError, InifFormatError

__all__ = [
    "DEFAULT_EDGE",
    "GridCode",
    "decode_grid",
    "encode_grid",
    "quantise_weights",
    "scale_code",
    "scale_from_code",
]

MAGIC = b"IG"
VERSION = 6
#: Stream versions read: 2 (every level tiled, weights alone in the first stream), 3
#: (one feature a level), 4 (multilinear upsampling), 5 (one byte a field) and 6.
READ_VERSIONS = (2, 3, 4, 5, 6)
DTYPES = ("uint8", "uint16", "int8", "int16", "uint32", "int32", "float32", "float64")
#: Tile edges (latent cells per axis) by number of coordinate axes: ~64k latents a tile,
#: thin along the leading (T, Z) axes so that a plane decodes few latents besides its own.
#: A cold 512^2 view of one plane of cells-tyx 64x, same file re-tiled, same load (2.2):
#: 64^3 ~600 ms, 16x64x64 ~260, 8x128x128 ~170, 4x128x128 ~125; file 25145 / 25205 /
#: 25132 / 25198 bytes (a neighbour across a tile border reads 0: it costs little).
DEFAULT_EDGE = {1: (65536,), 2: (256, 256), 3: (4, 128, 128), 4: (2, 2, 128, 128)}
MAX_SYMBOL = 1 << 20
#: Latents a tile may hold (the writer's tiles hold ~64k).
MAX_TILE_LATENTS = 1 << 18
MAX_LATENTS = 1 << 31
MAX_STEP_EXPONENT = 20
#: Adam steps (at ``REFIT_LR``) re-fitting the synthesis tensors not yet rounded after
#: each one is (:func:`quantise_weights`): hipsc-2d at 256x / 128x / 512x, 2400 steps,
#: latents at 4x the network's rate, the stream decoded 35.52 -> 35.66 / 37.12 -> 37.15 /
#: 33.12 -> 33.15 dB at equal size; at 8x (:data:`.fit.LATENT_LR`) rounding cost that
#: 256x fit only 0.06 dB (36.13 -> 36.07 without, 36.08 with the re-fit on 16k pixels).
REFIT_ITERATIONS = 200
REFIT_LR = 1e-3
#: Pixels of the sample the re-fit runs on (a fixed random subset): all of the 131k-pixel
#: sample took 13-19 s an encoding on cells-tyx and a 3-channel 1024^2 image (1 thread).
REFIT_SAMPLE = 1 << 14


def scale_code(scale: float) -> int:
    """The u8 code of a Laplace scale (``2 ** ((code - 160) / 16)``: 2^-10 .. 2^5.9)."""
    return int(np.clip(round(math.log2(max(scale, 1e-9)) * 16 + 160), 0, 255))


def scale_from_code(code: int) -> float:
    """Inverse of :func:`scale_code`."""
    return float(SCALES[code])


#: Every scale a u8 code says.
SCALES = np.array([2.0 ** ((c - 160) / 16) for c in range(256)])


# -- tiles ---------------------------------------------------------------------------
def edges_of(edge: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """Tile edges per axis: ``edge`` on every axis, or one edge per axis."""
    return (int(edge),) * ndim if isinstance(edge, int) else tuple(int(e) for e in edge)


def tile_grid(shape: Sequence[int], edge: int | Sequence[int]) -> tuple[int, ...]:
    """Tiles per axis of a level of ``shape``."""
    edges = edges_of(edge, len(shape))
    return tuple(-(-n // e) for n, e in zip(shape, edges, strict=True))


def tile_slices(
    shape: Sequence[int], edge: int | Sequence[int], index: Sequence[int]
) -> tuple[slice, ...]:
    """The slices of tile ``index`` of a level."""
    edges = edges_of(edge, len(shape))
    return tuple(
        slice(i * e, min((i + 1) * e, n)) for i, n, e in zip(index, shape, edges, strict=True)
    )


def _model(maxabs: int, scale: float) -> constriction.stream.model.QuantizedLaplace:
    return constriction.stream.model.QuantizedLaplace(-maxabs, maxabs, 0.0, scale)


def anchors(shape: Sequence[int], offset: Sequence[int]) -> np.ndarray:
    """The checkerboard's anchors (even sum of level indices) of a window, as a mask."""
    idx = np.indices(shape).sum(0) + sum(offset)
    return idx % 2 == 0


def latent_params(
    values: np.ndarray,
    parent: np.ndarray | None,
    offset: Sequence[int],
    level_code: int,
    maxabs: int,
    context: QuantisedWeights | None,
    edge: Sequence[int] | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The coded ``(means, scales)`` of a window of a level (float64, its shape; or the
    entries where ``mask`` is true, in C order).

    ``values`` are the window's latents as far as known (anchors' parameters do not
    depend on them), ``parent`` the parent inputs of the window
    (:func:`~.field.parent_inputs`) or ``None`` for the coarsest level, ``context`` the
    quantised context weights (``None``: mean 0 and the level's scale everywhere).
    ``edge`` masks neighbours across tile borders when the window spans several tiles.
    """
    mu, steps = _context_params(values, parent, offset, maxabs, context, edge, mask)
    return mu, SCALES[np.clip(level_code + steps, 0, 255)]


def _context_params(
    values: np.ndarray,
    parent: np.ndarray | None,
    offset: Sequence[int],
    maxabs: int,
    context: QuantisedWeights | None,
    edge: Sequence[int] | None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Means and scale-code offsets (sixteenths of an octave) of :func:`latent_params`."""
    shape = values.shape if mask is None else (int(np.count_nonzero(mask)),)
    if context is None or not context.ints:
        return np.zeros(shape), np.zeros(shape, np.int64)
    columns = _parent_columns(context, values.ndim)
    feats = context_features(
        torch.from_numpy(values.astype(np.float64)),
        None if parent is None else torch.from_numpy(parent.astype(np.float64)),
        offset,
        edge,
        columns,
    ).numpy()
    x = feats.reshape(-1, feats.shape[-1]) if mask is None else feats[mask]
    mu, steps = context_exact(x.astype(np.int64), context)
    return np.clip(mu, -maxabs, maxabs).reshape(shape), steps.reshape(shape)


def context_exact(x: np.ndarray, context: QuantisedWeights) -> tuple[np.ndarray, np.ndarray]:
    """The coded context model on integer inputs ``x`` ``(N, k + 2d + 1)``: means (multiples
    of 1/64) and scale-code offsets (sixteenths of an octave).

    The network's weights are integers ``q`` times ``2 ** -k``, so the whole evaluation
    runs in int64 (sums aligned to a common power of two; leaky ReLU's 1/8 is three more
    bits), and only the final rounding touches floats, by a power of two: every machine
    computes the same numbers, which the decoder needs to find the encoder's model.
    """
    (q1, r1, q2, r2), (k1, kb1, k2, kb2) = context.ints, context.exponents
    top1 = max(k1, kb1)
    h = ((x @ q1.T.astype(np.int64)) << (top1 - k1)) + (r1.astype(np.int64) << (top1 - kb1))
    h = np.where(h > 0, h << 3, h)  # leaky ReLU, slope 1/8: units of 2 ** -(top1 + 3)
    s1 = top1 + 3
    top2 = max(s1 + k2, kb2)
    o = ((h @ q2.T.astype(np.int64)) << (top2 - s1 - k2)) + (r2.astype(np.int64) << (top2 - kb2))
    mu = np.rint(o[:, 0] * 2.0 ** (6 - top2)) / MU_STEPS
    return mu, np.rint(o[:, 1] * 2.0 ** (4 - top2)).astype(np.int64)


def level_bits(
    values: np.ndarray,
    coarser: np.ndarray | None,
    level_codes: Sequence[int],
    context: QuantisedWeights | None,
    edge: Sequence[int],
) -> list[float]:
    """Bits a whole grid costs as coded under each of ``level_codes`` (tiles of
    ``edge``; without their bitmap and the coder's flush); ``coarser`` its parent grid."""
    if not values.any():
        return [0.0] * len(level_codes)
    m = int(np.abs(values).max())
    parent = None
    if coarser is not None and context is not None and context.ints:
        whole = tuple(slice(0, n) for n in values.shape)
        parent = _parents(_reader(coarser), whole, values.shape, coarser.shape, edge, context)
    mu, steps = _context_params(values, parent, [0] * values.ndim, m, context, edge)
    y = torch.from_numpy(values.astype(np.float64) - mu)
    out = []
    for c in level_codes:
        s = torch.from_numpy(SCALES[np.clip(steps + c, 0, 255)])
        out.append(float(laplace_bits(y, s).sum()))
    return out


def _parent_columns(context: QuantisedWeights, ndim: int) -> int:
    """The context network's inputs from the parent grid, from its input count: 1 (the
    parent; streams before version 4) or ``1 + 2d`` (and its face neighbours)."""
    return int(context.ints[0].shape[1]) - 2 * ndim - 1


def _reader(grid: np.ndarray) -> Callable[[Sequence[int], Sequence[int]], np.ndarray]:
    """``read(lo, hi)``: the latents ``[lo, hi)`` of a whole grid held in memory."""
    return lambda lo, hi: grid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]


def _parents(
    read: Callable[[Sequence[int], Sequence[int]], np.ndarray],
    box: Sequence[slice],
    grid_shape: Sequence[int],
    coarse_shape: Sequence[int],
    edge: Sequence[int],
    context: QuantisedWeights,
) -> np.ndarray:
    """The parent inputs (:func:`~.field.parent_inputs`) of the window ``box`` of a grid
    of shape ``grid_shape`` whose parent grid has ``coarse_shape``; ``read(lo, hi)``
    gives that grid's latents ``[lo, hi)`` (the writer's arrays, the reader's tiles)."""
    factors = parent_factors(grid_shape, coarse_shape)
    neighbours = _parent_columns(context, len(grid_shape)) > 1
    lo, hi = parent_window(box, coarse_shape, factors, edge, neighbours)
    return parent_inputs(
        torch.from_numpy(read(lo, hi)),
        [b.stop - b.start for b in box],
        [b.start for b in box],
        factors,
        start=lo,
        coarse_shape=coarse_shape,
        edge=edge,
        neighbours=neighbours,
    ).numpy()


def _encode_tile(
    enc: constriction.stream.queue.RangeEncoder,
    tile: np.ndarray,
    parent: np.ndarray | None,
    offset: Sequence[int],
    level_code: int,
    maxabs: int,
    context: QuantisedWeights | None,
) -> None:
    """Range-code one tile into ``enc``: anchors, then the others."""
    family = constriction.stream.model.QuantizedLaplace(-maxabs, maxabs)
    mask = anchors(tile.shape, offset)
    for part in (mask, ~mask):
        if part.any():
            mu, scale = latent_params(tile, parent, offset, level_code, maxabs, context, mask=part)
            enc.encode(tile[part].astype(np.int32), family, mu, scale)


# -- weights -------------------------------------------------------------------------
@dataclass
class QuantisedWeights:
    """Integer weights of the synthesis with their step exponents."""

    ints: list[np.ndarray]
    exponents: list[int]

    def tensors(self) -> list[torch.Tensor]:
        """The dequantised float weights (exact: ``q * 2**-k``)."""
        return [
            torch.from_numpy(q.astype(np.float32) * np.float32(2.0**-k))
            for q, k in zip(self.ints, self.exponents, strict=True)
        ]


def weight_bits(q: np.ndarray) -> float:
    m = int(np.abs(q).max()) if q.size else 0
    if m == 0:
        return 0.0
    b = scale_from_code(scale_code(max(float(np.abs(q).mean()), 1e-3)))
    return float(laplace_bits(torch.from_numpy(q.astype(np.float32)), torch.tensor(b)).sum())


def quantise_weights(
    fld: GridField,
    features: torch.Tensor,
    target: torch.Tensor,
    lam: float,
    *,
    exponents: Sequence[int] = tuple(range(3, 15)),
    refit: int = REFIT_ITERATIONS,
) -> QuantisedWeights:
    """Per-tensor step ``2**-k`` minimising ``mse + lam * bits / pixels`` (greedy, in order).

    ``features`` ``(N, L)`` and ``target`` ``(N, C)`` are a sample of pixels with the
    rounded latents' features; ``lam`` is the fit's final lambda (MSE per bit/pixel,
    ``pixels`` the image's pixel count divided into ``N`` proportionally).  After each
    tensor is rounded, the tensors after it (still float) are re-fitted on (part of) the
    sample for ``refit`` Adam steps, so they absorb its rounding error
    (:data:`REFIT_ITERATIONS`, :data:`REFIT_SAMPLE`).
    """
    params = [p for p in fld.synthesis.parameters()]
    n_pix = math.prod(fld.spec.shape)
    ints: list[np.ndarray] = []
    chosen: list[int] = []
    # the re-fit's pixels: a fixed random subset of the sample, drawn once
    few_features, few_target = features, target
    if features.shape[0] > REFIT_SAMPLE:
        pick = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(0))
        few_features, few_target = features[pick[:REFIT_SAMPLE]], target[pick[:REFIT_SAMPLE]]
    for i, p in enumerate(params):
        with torch.no_grad():
            original = p.detach().clone()
            best = None
            for k in exponents:
                q = torch.round(original * 2.0**k)
                p.copy_(q * 2.0**-k)
                mse = float(torch.mean((fld.synthesize(features) - target) ** 2))
                cost = mse + lam * weight_bits(q.numpy().astype(np.int64)) / n_pix
                if best is None or cost < best[0]:
                    best = (cost, k, q.numpy().astype(np.int64))
            assert best is not None
            _, k, qi = best
            p.copy_(torch.from_numpy(qi.astype(np.float32)) * 2.0**-k)
        ints.append(qi)
        chosen.append(k)
        later = params[i + 1 :]
        if later and refit > 0:
            _refit(fld, later, few_features, few_target, refit)
    return QuantisedWeights(ints, chosen)


def _refit(
    fld: GridField,
    params: list[torch.nn.Parameter],
    features: torch.Tensor,
    target: torch.Tensor,
    iterations: int,
) -> None:
    """``iterations`` Adam steps on ``params`` alone (the others stay) at the MSE of
    ``features`` against ``target``; only ``params`` are differentiated."""
    opt = torch.optim.Adam(params, lr=REFIT_LR)
    with torch.enable_grad():
        for _ in range(iterations):
            loss = torch.mean((fld.synthesize(features) - target) ** 2)
            for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
                p.grad = g
            opt.step()
    for p in params:
        p.grad = None


# -- encoding ------------------------------------------------------------------------
@dataclass
class EncodedGrid:
    """A written grid stream and where its bytes went."""

    data: bytes
    header_bytes: int
    weight_bytes: int
    latent_bytes: list[int] = field(default_factory=list)


def encode_grid(
    spec: GridSpec,
    latents: Sequence[np.ndarray],
    scales: Sequence[float],
    weights: QuantisedWeights,
    lo: float | Sequence[float] | np.ndarray,
    hi: float | Sequence[float] | np.ndarray,
    dtype: str | np.dtype,
    *,
    edge: int | Sequence[int] | None = None,
) -> EncodedGrid:
    """Write the stream; ``latents`` are the rounded integer grids, finest first;
    ``lo``, ``hi`` the intensity map per channel (or one for all)."""
    dtype_name = np.dtype(dtype).name
    if dtype_name not in DTYPES:
        raise ValueError(f"grid files store {DTYPES}, not {dtype_name}")
    ndim = len(spec.shape)
    edge = edges_of(edge or DEFAULT_EDGE[ndim], ndim)
    if not (spec.levels <= 16 and spec.finest <= 15 and len(spec.hidden) <= 7):
        raise ValueError(f"a grid stream holds at most 16 levels and 7 hidden layers: {spec}")
    explicit = edge != DEFAULT_EDGE[ndim]
    lows, highs = (_per_channel(v, spec.channels) for v in (lo, hi))
    whole = _integer_map(lows, highs)
    time = 0 if spec.time_axis is None else 1 + spec.time_axis
    head = io.BytesIO()
    head.write(MAGIC + bytes([VERSION]))
    code_a = (ndim - 1) | DTYPES.index(dtype_name) << 2 | (spec.degree - 1) << 5 | explicit << 7
    head.write(bytes([code_a, spec.channels]))
    for n in spec.shape:
        _put_varint(head, n)
    code_b = (spec.levels - 1) | spec.finest << 4
    code_c = time | len(spec.hidden) << 3 | whole << 6
    head.write(bytes([code_b, code_c, spec.features, *spec.hidden, spec.context]))
    for e in edge if explicit else ():
        _put_varint(head, e)
    for a, b in zip(lows, highs, strict=True):
        if whole:
            _put_varint(head, int(a))
            _put_varint(head, int(b - a))
        else:
            head.write(struct.pack("<ff", a, b))
    n_syn = len(_weight_shapes(spec))
    context = QuantisedWeights(weights.ints[n_syn:], weights.exponents[n_syn:])

    grid_ints = [np.asarray(z).astype(np.int32) for z in latents]
    codes = [scale_code(s) for s in scales]
    for z, c in zip(grid_ints, codes, strict=True):
        head.write(bytes([c]))
        _put_varint(head, int(np.abs(z).max()) if z.size else 0)

    # the shared stream: weights, then the grids of single-tile levels, coarsest first
    shared = constriction.stream.queue.RangeEncoder()
    # one bound for every weight tensor (a tensor's own would cost a byte each; the
    # wider range costs the coder next to nothing)
    top = max((int(np.abs(q).max()) for q in weights.ints if q.size), default=0)
    _put_varint(head, top)
    for q, k in zip(weights.ints, weights.exponents, strict=True):
        c = scale_code(max(float(np.abs(q).mean()), 1e-3))
        head.write(bytes([k, c]))
        if top:
            shared.encode(q.reshape(-1).astype(np.int32), _model(top, scale_from_code(c)))
    bits_of_weights = shared.num_bits()
    latent_bytes = [0] * len(grid_ints)
    first_shared = _first_shared(spec, edge)

    def parent_of(g: int, box: tuple[slice, ...]) -> np.ndarray | None:
        up = spec.parent(g)
        if up is None or not context.ints:
            return None
        coarser = grid_ints[up]
        return _parents(_reader(coarser), box, grid_ints[g].shape, coarser.shape, edge, context)

    for g in reversed(range(first_shared, len(grid_ints))):
        z = grid_ints[g]
        m = int(np.abs(z).max()) if z.size else 0
        if m:
            before = shared.num_bits()
            box = tuple(slice(0, n) for n in z.shape)
            _encode_tile(shared, z, parent_of(g, box), [0] * ndim, codes[g], m, context)
            latent_bytes[g] = (shared.num_bits() - before) // 8
    shared_words = shared.get_compressed()
    _put_varint(head, int(shared_words.size))

    streams: list[np.ndarray] = []
    for g in range(first_shared):
        z = grid_ints[g]
        m = int(np.abs(z).max()) if z.size else 0
        if m == 0:
            continue
        grid = tile_grid(z.shape, edge)
        bits = np.zeros(math.prod(grid), bool)
        lengths = []
        before = head.tell()
        for t, index in enumerate(np.ndindex(*grid)):
            box = tile_slices(z.shape, edge, index)
            tile = z[box]
            if not tile.any():
                continue
            bits[t] = True
            enc = constriction.stream.queue.RangeEncoder()
            _encode_tile(enc, tile, parent_of(g, box), [b.start for b in box], codes[g], m, context)
            words = enc.get_compressed()
            lengths.append(int(words.size))
            streams.append(words)
        head.write(np.packbits(bits, bitorder="little").tobytes())
        for n in lengths:
            _put_varint(head, n)
        latent_bytes[g] = head.tell() - before + 4 * sum(lengths)
    header = head.getvalue()
    body = b"".join(w.astype("<u4").tobytes() for w in [shared_words, *streams])
    return EncodedGrid(header + body, len(header), bits_of_weights // 8, latent_bytes)


def _integer_map(lows: np.ndarray, highs: np.ndarray) -> bool:
    """Whether the intensity map is whole numbers ``0 <= lo <= hi < 2**24`` (an integer
    image's range), which the stream stores as two varints a channel instead of 8 bytes."""
    both = np.concatenate([lows, highs])
    return bool(
        np.all(both == np.round(both))
        and np.all(lows >= 0)
        and np.all(highs >= lows)
        and np.all(highs < 2**24)
    )


def _per_channel(values: float | Sequence[float] | np.ndarray, channels: int) -> np.ndarray:
    """One value per channel (float64) from one for all or one each."""
    return np.broadcast_to(np.asarray(values, np.float64).reshape(-1), (channels,)).copy()


def _first_shared(spec: GridSpec, edge: Sequence[int]) -> int:
    """The first grid of the finest level with a single tile (grids from it on go in
    the shared stream; a coarser level never has more tiles than a finer one)."""
    for lv in range(spec.levels):
        if math.prod(tile_grid(spec.level_shape(lv), edge)) == 1:
            return lv * spec.features
    return spec.grids


# -- decoding ------------------------------------------------------------------------
class GridCode:
    """A parsed grid stream: the spec, weights, and lazily decoded latent tiles.

    Every size is checked against the stream's length before anything is allocated; a
    malformed stream raises :class:`InifFormatError`.
    """

    def __init__(self, data: bytes, *, max_latents: int = MAX_LATENTS):
        r = _Reader(data)
        if r.take(2) != MAGIC:
            raise InifFormatError("not a grid stream (bad magic)")
        version = r.u8()
        if version not in READ_VERSIONS:
            raise InifFormatError(
                f"grid stream version {version} is not supported (reads {READ_VERSIONS})"
            )
        if version >= 6:
            fields = self._packed_fields(r)
            ndim, channels, dcode, shape, levels, features, hidden = fields[:7]
            context, finest, time, degree, explicit, whole = fields[7:]
        else:
            ndim, channels, dcode = r.u8(), r.u8(), r.u8()
            if not 1 <= ndim <= 4 or channels < 1 or dcode >= len(DTYPES):
                raise InifFormatError("grid stream: bad ndim, channels or dtype")
            shape = tuple(r.varint(1 << 31) for _ in range(ndim))
            levels = r.u8()
            features = 1 if version < 4 else r.u8()
            hidden = tuple(r.take(r.u8()))
            context, finest = r.u8(), r.u8()
            time = 0 if version == 2 else r.u8()  # 0: no time axis, else 1 + its index
            degree = 1 if version < 5 else r.u8()  # of the upsampling B-spline
            explicit, whole = -1, False  # the tiling flag comes later
        self.dtype = np.dtype(DTYPES[dcode])
        if (
            degree not in DEGREES
            or not 1 <= levels <= 16
            or features < 1
            or any(h == 0 for h in hidden)
            or min(shape) < 1
            or finest > 8
            or time > ndim
        ):
            raise InifFormatError(
                "grid stream: bad levels, features, widths, shape, finest level, T or"
                " upsampling degree"
            )
        time_axis = time - 1 if time else None
        self.spec = GridSpec(
            shape,
            channels,
            levels,
            hidden,
            context,
            finest,
            time_axis,
            features,
            version >= 4,
            degree,
        )
        if self.spec.num_latents > max_latents:  # a hostile or a very large file
            raise DecodeBudgetError(
                f"the grid stream declares {self.spec.num_latents} latents, more than the "
                f"decode budget allows ({max_latents}; INIF_DECODE_BUDGET or load(budget=))"
            )
        if explicit < 0:
            explicit = 1 if version == 2 else r.u8()  # version 2 always lists its edges
        if explicit > 1:
            raise InifFormatError(f"grid stream: bad tiling flag {explicit}")
        self.edge = (
            tuple(r.varint(1 << 31) for _ in range(ndim)) if explicit else DEFAULT_EDGE[ndim]
        )
        if min(self.edge) < 1:
            raise InifFormatError("grid stream: tile edge 0")
        # a tile is decoded whole, with ~100 bytes of transients a latent: bound it
        level0 = self.spec.level_shape(0)
        tile = math.prod(min(e, n) for e, n in zip(self.edge, level0, strict=True))
        if tile > MAX_TILE_LATENTS:
            raise InifFormatError(
                f"grid stream: tiles of {tile} latents (at most {MAX_TILE_LATENTS})"
            )
        # the intensity map: per channel (version 4), one for all before
        if whole:  # version 6: whole numbers, lo and hi - lo
            pairs = []
            for _ in range(channels):
                a = r.varint(1 << 24)
                pairs.append((float(a), float(a + r.varint(1 << 24))))
        else:
            n_maps = channels if version >= 4 else 1
            pairs = [struct.unpack("<ff", r.take(8)) for _ in range(n_maps)]
        self.lo = _per_channel([a for a, _ in pairs], channels)
        self.hi = _per_channel([b for _, b in pairs], channels)
        self.codes: list[int] = []
        self.maxabs = []
        for _ in range(self.spec.grids):
            self.codes.append(r.u8())
            self.maxabs.append(r.varint(MAX_SYMBOL))
        self.scales = [scale_from_code(c) for c in self.codes]
        shapes = _weight_shapes(self.spec) + _context_shapes(self.spec)
        self._wmeta = []
        top = r.varint(MAX_SYMBOL) if version >= 6 else 0  # one bound for all
        for _ in shapes:
            k, c = r.u8(), r.u8()
            if k > MAX_STEP_EXPONENT:
                raise InifFormatError("grid stream: weight step out of range")
            bound = top if version >= 6 else r.varint(MAX_SYMBOL)
            self._wmeta.append((k, scale_from_code(c), bound))
        wwords = r.varint(len(data) // 4)
        # grids from ``first_shared`` on have one tile each, in the shared stream
        n_grids = self.spec.grids
        self._first_shared = _first_shared(self.spec, self.edge) if version >= 3 else n_grids
        self._tiles: list[dict[tuple[int, ...], tuple[int, int]]] = []
        lengths: list[list[tuple[tuple[int, ...], int]]] = []
        for g, m in enumerate(self.maxabs):
            grid = tile_grid(self.spec.grid_shape(g), self.edge)
            if m == 0 or g >= self._first_shared:
                lengths.append([])
                continue
            n = math.prod(grid)
            bits = np.unpackbits(np.frombuffer(r.take(-(-n // 8)), np.uint8), bitorder="little")[:n]
            idx = [index for t, index in enumerate(np.ndindex(*grid)) if bits[t]]
            lengths.append([(i, r.varint(len(data) // 4)) for i in idx])
        self.header_bytes = r.pos
        pos = r.pos
        self._data = data
        wend = pos + 4 * wwords
        if wend > len(data):
            raise InifFormatError("grid stream is truncated (weights)")
        wstream = np.frombuffer(data[pos:wend], "<u4").astype(np.uint32)
        pos = wend
        for entries in lengths:
            table = {}
            for index, n in entries:
                table[index] = (pos, n)
                pos += 4 * n
            self._tiles.append(table)
        if pos > len(data):
            raise InifFormatError("grid stream is truncated (latent tiles)")
        self.nbytes = pos
        self._shared = constriction.stream.queue.RangeDecoder(wstream)
        self._shared_lock = threading.Lock()
        self._shared_done = False
        self._shared_error: InifFormatError | None = None
        self.weights = self._decode_weights(shapes)
        n_syn = len(_weight_shapes(self.spec))
        self.context = QuantisedWeights(self.weights.ints[n_syn:], self.weights.exponents[n_syn:])
        self._cache: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}

    @staticmethod
    def _packed_fields(r: _Reader) -> tuple:
        """The fixed fields of a version-6 stream after its version byte: ``(ndim,
        channels, dtype code, shape, levels, features, hidden, context, finest, time,
        degree, tiling flag, integer map)``."""
        code_a, channels = r.u8(), r.u8()
        ndim, dcode, explicit = (code_a & 3) + 1, code_a >> 2 & 7, code_a >> 7
        degree = (code_a >> 5 & 3) + 1
        if channels < 1 or degree > 3:
            raise InifFormatError("grid stream: bad channels or upsampling degree")
        shape = tuple(r.varint(1 << 31) for _ in range(ndim))
        code_b, code_c, features = r.u8(), r.u8(), r.u8()
        if code_c >> 7:
            raise InifFormatError(f"grid stream: reserved bit set ({code_c:#x})")
        hidden = tuple(r.take(code_c >> 3 & 7))
        context = r.u8()
        levels, finest, time = (code_b & 15) + 1, code_b >> 4, code_c & 7
        return (
            ndim,
            channels,
            dcode,
            shape,
            levels,
            features,
            hidden,
            context,
            finest,
            time,
            degree,
            explicit,
            bool(code_c >> 6 & 1),
        )

    def _decode_weights(self, shapes: list[tuple[int, ...]]) -> QuantisedWeights:
        dec = self._shared  # the weights come first in the shared stream
        ints, exps = [], []
        for shape, (k, b, m) in zip(shapes, self._wmeta, strict=True):
            n = math.prod(shape)
            q = dec.decode(_model(m, b), n) if m else np.zeros(n, np.int32)
            ints.append(np.asarray(q, np.int64).reshape(shape))
            exps.append(k)
        return QuantisedWeights(ints, exps)

    def tile(self, grid: int, index: tuple[int, ...]) -> np.ndarray:
        """The integer latents of one tile of a latent grid (decoded once, then cached).

        Decodes the parent grid's tiles under it first, then the tile's anchors and the
        rest in two vectorised calls.
        """
        key = (grid, index)
        if key not in self._cache and grid >= self._first_shared and self.maxabs[grid]:
            self._decode_shared()
        if key not in self._cache:
            shape = self.spec.grid_shape(grid)
            box = tile_slices(shape, self.edge, index)
            tshape = tuple(s.stop - s.start for s in box)
            entry = self._tiles[grid].get(index)
            if entry is None:
                self._cache[key] = np.zeros(tshape, np.int32)
            else:
                pos, n = entry
                words = np.frombuffer(self._data[pos : pos + 4 * n], "<u4").astype(np.uint32)
                dec = constriction.stream.queue.RangeDecoder(words)
                self._cache[key] = self._decode_tile(grid, box, dec)
        return self._cache[key]

    def _decode_shared(self) -> None:
        """Decode the single-tile grids of the shared stream, coarsest first (each one's
        parents are in a grid after it, decoded before).  One stateful decoder:
        locked against the tile threads of a viewer; a failure is kept and raised again."""
        with self._shared_lock:
            if self._shared_error is not None:
                raise self._shared_error
            if self._shared_done:
                return
            ndim = len(self.spec.shape)
            try:
                for g in reversed(range(self._first_shared, self.spec.grids)):
                    if self.maxabs[g]:  # an all-zero grid has nothing in the stream
                        box = tuple(slice(0, n) for n in self.spec.grid_shape(g))
                        self._cache[g, (0,) * ndim] = self._decode_tile(g, box, self._shared)
            except InifFormatError as exc:
                self._shared_error = exc
                raise
            self._shared_done = True

    def _decode_tile(
        self, grid: int, box: tuple[slice, ...], dec: constriction.stream.queue.RangeDecoder
    ) -> np.ndarray:
        tshape = tuple(s.stop - s.start for s in box)
        offset = [s.start for s in box]
        parent = None
        up = self.spec.parent(grid)
        if self.context.ints and up is not None:
            read = functools.partial(self.window, up)
            shape, coarser = self.spec.grid_shape(grid), self.spec.grid_shape(up)
            parent = _parents(read, box, shape, coarser, self.edge, self.context)
        m, code = self.maxabs[grid], self.codes[grid]
        family = constriction.stream.model.QuantizedLaplace(-m, m)
        out = np.zeros(tshape, np.int32)
        mask = anchors(tshape, offset)
        try:
            for part in (mask, ~mask):
                if part.any():
                    mu, scale = latent_params(out, parent, offset, code, m, self.context, mask=part)
                    out[part] = dec.decode(family, mu, scale)
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise InifFormatError(f"grid stream: latent tile does not decode ({exc})") from None
        return out

    def window(self, grid: int, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        """Latents ``[lo, hi)`` of a latent grid, assembled from the tiles they touch."""
        out = np.zeros([b - a for a, b in zip(lo, hi, strict=True)], np.int32)
        if self.maxabs[grid] == 0:
            return out
        shape = self.spec.grid_shape(grid)
        e = self.edge
        ranges = [range(a // n, -(-b // n)) for a, b, n in zip(lo, hi, e, strict=True)]
        for index in np.ndindex(*[len(rg) for rg in ranges]):
            t = tuple(rg[i] for rg, i in zip(ranges, index, strict=True))
            sl = tile_slices(shape, e, t)
            src = tuple(
                slice(max(s.start, a) - s.start, min(s.stop, b) - s.start)
                for s, a, b in zip(sl, lo, hi, strict=True)
            )
            dst = tuple(
                slice(max(s.start, a) - a, min(s.stop, b) - a)
                for s, a, b in zip(sl, lo, hi, strict=True)
            )
            out[dst] = self.tile(grid, t)[src]
        return out

    def latents(self) -> list[np.ndarray]:
        """Every latent grid whole, finest first."""
        return [self.window(g, [0] * len(s), s) for g, s in enumerate(self.spec.grid_shapes)]


def _weight_shapes(spec: GridSpec) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    width = spec.grids
    for h in (*spec.hidden, spec.channels):
        shapes += [(h, width), (h,)]
        width = h
    return shapes


def _context_shapes(spec: GridSpec) -> list[tuple[int, ...]]:
    if not spec.context:
        return []
    w, inputs = spec.context, spec.parent_columns + 2 * len(spec.shape) + 1
    return [(w, inputs), (w,), (2, w), (2,)]


def decode_grid(data: bytes) -> GridCode:
    """Parse a grid stream (the latent tiles decode lazily)."""
    return GridCode(data)
