"""Hybrid mode: a classic codec codes the bulk of the image, the field codes its residual.

A classic codec (the *prior*) captures most of an image in milliseconds; the field then
only learns what the codec lost, which it reaches in far fewer steps than fitting the
image from scratch (the hybrid mode of INIF, arXiv 2405.19012).  The prior is coded
tile by tile -- one 2-D tile of one plane of one channel, or for a video codec a block
of neighbouring planes -- so decoding a region decodes only the tiles it touches.

The codecs are the classic codecs of :mod:`napari_inif.core.classic`, found by name in
:data:`napari_inif.core.registry.CODECS` (``jpegxl``, ``jpeg2k``, ``htj2k``, ``avif``,
``hevc``; each codes 8-bit images at 8 bits and others at its ``high_bits``).  Each
channel is mapped by the header's ``lo``/``hi`` to the full range of the codec's sample
depth before coding (:func:`napari_inif.core.classic.to_ints`), so quality settings mean
the same on 12-bit data stored in 16-bit integers as on 8-bit data; :func:`encode_prior`
searches the codec's quality knob so that the prior lands on its share of the file budget.

The prior section of the file is ``u32 n_tiles``, ``n_tiles`` x ``u32`` tile lengths and
the tiles' codec bytes, in the order (channel, plane block, tile row, tile column).
The header's ``prior`` object names the codec and the tiling and holds ``scale``: the
field's output times ``scale`` is the residual in normalised units (``scale`` is four
times the residual's RMS), so that the field is fitted to values of order one whatever
the codec's quality.
"""

from __future__ import annotations

import math
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_inif.core.classic import (
    ClassicCodec,
    available_codecs,
    from_ints,
    get_codec,
    search_quality,
    to_ints,
)
from napari_inif.core.config import CompressionConfig
from napari_inif.core.errors import BudgetError, InifFormatError
from napari_inif.core.layout import Layout
from napari_inif.core.registry import CODECS

__all__ = [
    "AUTO_PRIOR_FRACTION",
    "Prior",
    "PriorDecoder",
    "available_priors",
    "check_section",
    "decoder_of",
    "encode_prior",
    "get_prior",
    "plan_fields",
    "prepare",
    "quiet_head",
    "section_of",
]

#: Share of the file budget the prior gets when ``prior_fraction`` is ``None``.
AUTO_PRIOR_FRACTION = 0.9
_FIELD_ROOM = 400  # bytes beyond the smallest field: the header's prior entry, a wider net
_U32 = struct.Struct("<I")
_CACHE_BYTES = 256 << 20  # decoded prior tiles kept per decoder
_MAX_TILE_VOXELS = 1 << 26


def available_priors() -> list[str]:
    """Names of the codecs that can serve as priors on this machine, sorted."""
    return available_codecs()


def get_prior(name: str) -> ClassicCodec:
    """The codec ``name``; ``ValueError`` naming the available ones if it cannot be used."""
    return get_codec(name, role="codec prior")


# --------------------------------------------------------------------------- tiling
@dataclass(frozen=True)
class _Tiling:
    """How the canonical array ``(*coord_shape, C)`` is cut into codec tiles."""

    stack_shape: tuple[int, ...]  # coordinate axes before the plane (T, Z ...)
    height: int
    width: int
    channels: int
    planes: int  # planes per tile (video codecs)
    tile: tuple[int, int]

    @classmethod
    def of(cls, layout: Layout, planes: int, tile: Sequence[int]) -> _Tiling:
        shape = layout.coord_shape
        stack, plane = (shape[:-2], shape[-2:]) if len(shape) >= 2 else ((), (1, *shape))
        th, tw = (min(int(t), n) for t, n in zip(tile, plane, strict=True))
        return cls(tuple(stack), plane[0], plane[1], layout.channels, max(1, planes), (th, tw))

    @property
    def n_planes(self) -> int:
        return math.prod(self.stack_shape)

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """Tiles along (channel, plane block, row, column)."""
        return (
            self.channels,
            math.ceil(self.n_planes / self.planes),
            math.ceil(self.height / self.tile[0]),
            math.ceil(self.width / self.tile[1]),
        )

    @property
    def n_tiles(self) -> int:
        return math.prod(self.counts)

    def tile_id(self, c: int, pb: int, ty: int, tx: int) -> int:
        return int(np.ravel_multi_index((c, pb, ty, tx), self.counts))

    def bounds(self, pb: int, ty: int, tx: int) -> tuple[slice, slice, slice]:
        th, tw = self.tile
        return (
            slice(pb * self.planes, min((pb + 1) * self.planes, self.n_planes)),
            slice(ty * th, min((ty + 1) * th, self.height)),
            slice(tx * tw, min((tx + 1) * tw, self.width)),
        )

    def shape_of(self, pb: int, ty: int, tx: int) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in self.bounds(pb, ty, tx))  # type: ignore[return-value]

    def planes_view(self, canon: np.ndarray) -> np.ndarray:
        """``(C, planes, height, width)`` view of a canonical array."""
        arr = canon.reshape(self.n_planes, self.height, self.width, self.channels)
        return np.moveaxis(arr, -1, 0)


def _pack(tiles: Sequence[bytes]) -> bytes:
    index = struct.pack(f"<{len(tiles) + 1}I", len(tiles), *(len(t) for t in tiles))
    return index + b"".join(tiles)


# --------------------------------------------------------------------------- encoding
@dataclass(frozen=True)
class Prior:
    """A coded prior: the file section, its header entry and the decoded image.

    Attributes
    ----------
    section
        Bytes of the prior section of the file.
    info
        The header's ``prior`` object (codec, tiling, sample depth, scale, ...).
    decoded
        The decoded prior, canonical ``(*coord_shape, C)``, normalised like the image.
    decoder
        The :class:`PriorDecoder` that produced ``decoded`` (its tile cache serves the
        previews during the fit).
    """

    section: bytes
    info: dict[str, Any]
    decoded: np.ndarray = field(repr=False)
    decoder: PriorDecoder | None = field(default=None, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        """Bytes of the section."""
        return len(self.section)

    @property
    def scale(self) -> float:
        """Residual units per unit of field output."""
        return float(self.info["scale"])

    def residual(self, norm: np.ndarray) -> np.ndarray:
        """What the field is fitted to: ``(norm - decoded) / scale``."""
        return ((norm - self.decoded) / np.float32(self.scale)).astype(np.float32)


def _residual_scale(norm: np.ndarray, decoded: np.ndarray) -> float:
    """Four times the residual's RMS: the field's target is then of order one.

    (Measured on a 1024x1024 AICS plane at 256x with a quarter of the bytes in a JPEG 2000
    prior, 300 steps: 4 x RMS gave 38.7 dB, 2 x RMS 38.5 dB, the maximum 38.3 dB.)
    """
    rms = float(np.sqrt(np.mean(np.square(norm - decoded, dtype=np.float64)))) if norm.size else 0
    return float(np.float32(max(4.0 * rms, 1e-6)))


def encode_prior(
    norm: np.ndarray,
    layout: Layout,
    codec: str | ClassicCodec,
    target_bytes: int,
    *,
    tile: int | None = None,
) -> Prior:
    """Code the normalised canonical image with a classic codec in about ``target_bytes``.

    Searches the codec's quality so that the section is the largest that fits in
    ``target_bytes``.  Raises :class:`~napari_inif.core.errors.BudgetError` if even the
    lowest quality does not fit, ``ValueError`` for an unknown or unavailable codec.
    """
    codec = get_prior(codec) if isinstance(codec, str) else codec
    tiling = _Tiling.of(layout, codec.planes, (tile or codec.tile,) * 2)
    bits = codec.bits(layout.dtype)
    ints = tiling.planes_view(to_ints(norm, bits))
    keys = list(np.ndindex(*tiling.counts))
    index_bytes = _U32.size * (1 + len(keys))
    encoded: dict[float, list[bytes]] = {}

    def size_at(q: float) -> int:
        if q not in encoded:
            encoded[q] = [
                codec.encode(np.ascontiguousarray(ints[c][tiling.bounds(pb, ty, tx)]), q)
                for c, pb, ty, tx in keys
            ]
        return index_bytes + sum(len(t) for t in encoded[q])

    # Every prior byte short of the target goes to the field, which buys less PSNR with
    # it than the codec would: search to a fine resolution, no early stop.
    quality = search_quality(
        size_at, target_bytes, snap=codec.snap, iterations=16, close=1.0, resolution=5e-4
    )
    if quality is None:
        raise BudgetError(
            f"the {codec.name} prior needs at least {size_at(codec.snap(0.0))} bytes at its "
            f"lowest quality but its share of the budget is {target_bytes} bytes; lower the "
            "ratio, raise the prior fraction or use the field mode",
            float("nan"),
        )
    tiles = encoded[quality]
    section = _pack(tiles)
    info: dict[str, Any] = {
        "codec": codec.name,
        "nbytes": len(section),
        "tile": list(tiling.tile),
        "planes": tiling.planes,
        "bits": bits,
        "quality": round(quality, 5),
        "scale": 1.0,
    }
    decoder = PriorDecoder(layout, info, section)
    decoded = decoder.full()
    info["scale"] = decoder.scale = _residual_scale(norm, decoded)
    return Prior(section, info, decoded, decoder)


def prepare(
    norm: np.ndarray,
    layout: Layout,
    config: CompressionConfig,
    *,
    field_floor: float | None = None,
) -> Prior | None:
    """The prior for a :class:`~napari_inif.core.config.CompressionConfig`, or ``None`` in
    field mode.

    The prior's share of the budget ``raw bytes / ratio`` is ``prior_fraction``; the
    automatic split (``None``) gives it :data:`AUTO_PRIOR_FRACTION` but always leaves
    the field ``field_floor`` bytes (default: the smallest SIREN file, its prior entry
    and a little room to learn).
    """
    if config.mode != "hybrid":
        return None
    budget = layout.raw_bytes / config.ratio
    if config.prior_fraction is not None:
        target = int(config.prior_fraction * budget)
    else:
        floor = _field_floor(layout) if field_floor is None else field_floor
        target = int(min(AUTO_PRIOR_FRACTION * budget, budget - floor))
    return encode_prior(norm, layout, config.prior, max(target, 0))


def _field_floor(layout: Layout) -> float:
    """Bytes of the smallest field file plus its prior entry and a little room to learn."""
    from napari_inif.core.codec.plan import max_ratio

    return layout.raw_bytes / max_ratio(layout) + _FIELD_ROOM


def quiet_head(net: Any, factor: float = 1e-2) -> None:
    """Shrink the linear head of a freshly initialised field so it starts near zero.

    A SIREN head is initialised to outputs of order one; added to a prior that is
    already close to the image, that is noise the fit would first have to unlearn.
    """
    import torch

    with torch.no_grad():
        net.weights[-1].mul_(factor)
        net.biases[-1].zero_()


def plan_fields(prior: Prior | None) -> dict[str, Any]:
    """Keyword arguments of :func:`~.budget.plan` for ``prior`` (none in field mode)."""
    return {} if prior is None else {"prior_bytes": prior.nbytes, "prior": prior.info}


def section_of(prior: Prior | None) -> bytes:
    """The file section of ``prior`` (empty in field mode)."""
    return b"" if prior is None else prior.section


def decoder_of(prior: Prior | None) -> PriorDecoder | None:
    """The (cached) decoder of ``prior``, for previews during a fit."""
    return None if prior is None else prior.decoder


# --------------------------------------------------------------------------- decoding
def check_section(
    layout: Layout, info: dict[str, Any], section: bytes
) -> tuple[_Tiling, int, float, np.ndarray]:
    """Validate a prior header entry and section: ``(tiling, bits, scale, tile starts)``.

    Raises :class:`InifFormatError` for anything inconsistent; does not need the codec.
    """
    try:
        codec = info["codec"]
        tile = [int(v) for v in info["tile"]]
        planes, bits, scale = int(info["planes"]), int(info["bits"]), float(info["scale"])
        nbytes = info["nbytes"]
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InifFormatError(f"invalid prior header: {exc!r}") from None
    if not isinstance(codec, str) or nbytes != len(section):
        raise InifFormatError("invalid prior codec name or section size")
    if len(tile) != 2 or min(tile) < 1 or not 1 <= planes <= 4096 or bits not in (8, 12, 16):
        raise InifFormatError("invalid prior tiling or sample depth")
    if not math.isfinite(scale) or scale <= 0:
        raise InifFormatError("invalid prior residual scale")
    tiling = _Tiling.of(layout, planes, tile)
    if list(tiling.tile) != tile or tiling.planes != planes:
        raise InifFormatError("prior tiling does not match the image")
    if math.prod(tiling.shape_of(0, 0, 0)) > _MAX_TILE_VOXELS:
        raise InifFormatError("prior tiles are too large")
    n = tiling.n_tiles
    if len(section) < _U32.size * (1 + n) or _U32.unpack_from(section, 0)[0] != n:
        raise InifFormatError("prior section does not match its tile count")
    lengths = np.frombuffer(section, "<u4", count=n, offset=_U32.size).astype(np.int64)
    starts = _U32.size * (1 + n) + np.concatenate([[0], np.cumsum(lengths)])
    if starts[-1] != len(section):
        raise InifFormatError("prior tile lengths do not add up to the section")
    return tiling, bits, scale, starts


class PriorDecoder:
    """Decodes the prior of one file, tile by tile, with a bounded cache.

    Parameters
    ----------
    layout
        The image layout from the header.
    info
        The header's ``prior`` object.
    section
        The prior section bytes.

    Raises
    ------
    InifFormatError
        If ``info`` or the section is inconsistent, or the file's codec is unknown or not
        available here (saying what to install).
    """

    def __init__(self, layout: Layout, info: dict[str, Any], section: bytes):
        self.tiling, self.bits, self.scale, self._starts = check_section(layout, info, section)
        name = str(info["codec"])
        if name not in CODECS:
            known = ", ".join(CODECS.names())
            raise InifFormatError(f"this file needs the unknown codec {name!r} (known: {known})")
        self.codec: ClassicCodec = CODECS[name]
        if not self.codec.available():
            raise InifFormatError(f"this file needs the {name} codec: {self.codec.install}")
        self.layout = layout
        self._section = section
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self.tiles_decoded: set[int] = set()  # which tiles were decoded (for tests/stats)

    # tiles -----------------------------------------------------------------------------
    def _tile(self, c: int, pb: int, ty: int, tx: int) -> np.ndarray:
        """Normalised float32 ``(planes, h, w)`` of one tile (cached)."""
        key = self.tiling.tile_id(c, pb, ty, tx)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        data = self._section[self._starts[key] : self._starts[key + 1]]
        shape = self.tiling.shape_of(pb, ty, tx)
        try:
            ints = self.codec.decode(data, shape, self.bits)
        except InifFormatError as exc:
            raise InifFormatError(f"prior tile {key} does not decode: {exc}") from None
        values = from_ints(ints, self.bits)
        with self._lock:
            self.tiles_decoded.add(key)
            self._cache[key] = values
            self._cached_bytes += values.nbytes
            while self._cached_bytes > _CACHE_BYTES and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return values

    def _planes_grid(
        self, plane_ids: np.ndarray, ys: np.ndarray, xs: np.ndarray, channels: np.ndarray
    ) -> np.ndarray:
        """Values ``(len(plane_ids), len(ys), len(xs), len(channels))`` at integer pixels."""
        t = self.tiling
        th, tw = t.tile
        out = np.empty((len(plane_ids), len(ys), len(xs), len(channels)), np.float32)
        pbs, tys, txs = plane_ids // t.planes, ys // th, xs // tw
        for ci, c in enumerate(channels.tolist()):
            for pb in np.unique(pbs).tolist():
                sp = np.nonzero(pbs == pb)[0]
                for ty in np.unique(tys).tolist():
                    sy = np.nonzero(tys == ty)[0]
                    for tx in np.unique(txs).tolist():
                        sx = np.nonzero(txs == tx)[0]
                        tile = self._tile(c, pb, ty, tx)
                        block = tile[
                            np.ix_(
                                plane_ids[sp] - pb * t.planes, ys[sy] - ty * th, xs[sx] - tx * tw
                            )
                        ]
                        out[np.ix_(sp, sy, sx, [ci])] = block[..., None]
        return out

    def grid(self, positions: Sequence[np.ndarray], channels: np.ndarray) -> np.ndarray:
        """Normalised values at integer pixel positions per coordinate axis.

        Returns ``(*[len(p) for p in positions], len(channels))`` float32.
        """
        t = self.tiling
        positions = [np.asarray(p, np.int64) for p in positions]
        n_stack = len(t.stack_shape)
        if len(positions) >= 2:
            stack, ys, xs = positions[:n_stack], positions[-2], positions[-1]
        else:
            stack, ys, xs = [], np.zeros(1, np.int64), positions[0]
        if stack:
            mesh = np.meshgrid(*stack, indexing="ij")
            plane_ids = np.ravel_multi_index(tuple(m.ravel() for m in mesh), t.stack_shape)
        else:
            plane_ids = np.zeros(1, np.int64)
        values = self._planes_grid(np.asarray(plane_ids, np.int64), ys, xs, channels)
        return values.reshape((*[len(p) for p in positions], len(channels)))

    def full(self) -> np.ndarray:
        """The whole decoded prior, canonical and normalised."""
        shape = self.layout.coord_shape
        return self.grid([np.arange(n) for n in shape], np.arange(self.layout.channels))

    def region(self, positions: Sequence[np.ndarray], channels: np.ndarray) -> np.ndarray:
        """Values on the grid ``positions[0] x positions[1] x ...`` of float pixel coordinates.

        Between pixel centres the prior is interpolated linearly on each axis.
        """
        shape = self.layout.coord_shape
        lower, upper, weights, fetch = [], [], [], []
        for p, n in zip(positions, shape, strict=True):
            p = np.clip(np.asarray(p, np.float64), 0, n - 1)
            i0 = np.floor(p).astype(np.int64)
            w = p - i0
            i1 = np.minimum(i0 + 1, n - 1)
            exact = not np.any(w > 1e-9)
            idx = i0 if exact else np.unique(np.concatenate([i0, i1]))
            fetch.append(idx)
            lower.append(np.searchsorted(idx, i0) if not exact else np.arange(len(i0)))
            upper.append(None if exact else np.searchsorted(idx, i1))
            weights.append(None if exact else w.astype(np.float32))
        values = self.grid(fetch, channels)
        for axis in range(len(positions)):
            if upper[axis] is None:
                continue
            a = np.take(values, lower[axis], axis=axis)
            b = np.take(values, upper[axis], axis=axis)
            w = weights[axis].reshape([-1 if i == axis else 1 for i in range(values.ndim)])
            values = a + (b - a) * w
        return values

    def points(self, coords: np.ndarray) -> np.ndarray:
        """Normalised values ``(N, C)`` at float pixel coordinates ``(N, d)`` (multilinear)."""
        coords = np.asarray(coords, np.float64)
        shape = np.asarray(self.layout.coord_shape)
        coords = np.clip(coords, 0, shape - 1)
        base = np.floor(coords).astype(np.int64)
        frac = (coords - base).astype(np.float32)
        channels = np.arange(self.layout.channels)
        out = np.zeros((coords.shape[0], len(channels)), np.float32)
        d = coords.shape[1]
        for corner in np.ndindex(*(2,) * d):
            offset = np.asarray(corner)
            idx = np.minimum(base + offset, shape - 1)
            weight = np.prod(np.where(offset == 1, frac, 1 - frac), axis=1)
            if not np.any(weight):
                continue
            out += weight[:, None] * self._gather(idx, channels)
        return out

    def _gather(self, idx: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """Values ``(N, C)`` at integer pixel coordinates ``(N, d)``."""
        out = np.empty((idx.shape[0], len(channels)), np.float32)
        # Group by (plane block, row tile, column tile) so each tile is looked up once.
        t = self.tiling
        n_stack = len(t.stack_shape)
        if idx.shape[1] >= 2:
            plane_ids = (
                np.ravel_multi_index(tuple(idx[:, :n_stack].T), t.stack_shape)
                if n_stack
                else np.zeros(len(idx), np.int64)
            )
            ys, xs = idx[:, -2], idx[:, -1]
        else:
            plane_ids = ys = np.zeros(len(idx), np.int64)
            xs = idx[:, 0]
        th, tw = t.tile
        groups = np.stack([plane_ids // t.planes, ys // th, xs // tw], axis=1)
        uniq, inverse = np.unique(groups, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        for g, (pb, ty, tx) in enumerate(uniq.tolist()):
            rows = np.nonzero(inverse == g)[0]
            for ci, c in enumerate(channels.tolist()):
                tile = self._tile(c, pb, ty, tx)
                out[rows, ci] = tile[
                    plane_ids[rows] - pb * t.planes, ys[rows] - ty * th, xs[rows] - tx * tw
                ]
        return out
