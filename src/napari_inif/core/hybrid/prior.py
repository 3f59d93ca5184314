"""Hybrid mode: a classic codec codes the bulk of the image, the field codes its residual.

A classic codec (the *prior*) captures most of an image in milliseconds; the field then
only learns what the codec lost, which it reaches in far fewer steps than fitting the
image from scratch (the hybrid mode of INIF, arXiv 2405.19012).  The prior is coded
tile by tile -- one 2-D tile of one plane of one channel, or for a video codec a block
of neighbouring planes -- so decoding a region decodes only the tiles it touches.

Codecs are registered by name in :data:`PRIORS` (:func:`register_prior`):

============  =================================  ===========================================
name          codec                              samples it is given
============  =================================  ===========================================
``jpegxl``    JPEG XL (libjxl, lossy, VarDCT)    8-bit data: 8 bits; 16-bit/float: 16 bits
``jpeg2k``    JPEG 2000 (OpenJPEG codestream)    8 bits / 16 bits
``htj2k``     High-throughput JPEG 2000          8 bits / 16 bits
``avif``      AVIF (libavif + libaom), 4:0:0     8 bits / 12 bits
``hevc``      HEVC via ``ffmpeg`` + libx265      8 bits / 12 bits, blocks of 16 planes
============  =================================  ===========================================

Each channel is mapped by the header's ``lo``/``hi`` to the full range of the codec's
sample depth before coding, so quality settings mean the same on 12-bit data stored in
16-bit integers as on 8-bit data.  Each codec exposes one quality knob in ``[0, 1]``
(1 best); :func:`encode_prior` searches it so that the prior's bytes land on their share
of the file budget.

The prior section of the file is ``u32 n_tiles``, ``n_tiles`` x ``u32`` tile lengths and
the tiles' codec bytes, in the order (channel, plane block, tile row, tile column).
The header's ``prior`` object names the codec and the tiling and holds ``scale``: the
field's output times ``scale`` is the residual in normalised units (``scale`` is four
times the residual's RMS), so that the field is fitted to values of order one whatever
the codec's quality.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from napari_inif.core.codec.container import InifFormatError
from napari_inif.core.layout import Layout
from napari_inif.core.registry import CODECS

__all__ = [
    "AUTO_PRIOR_FRACTION",
    "PRIORS",
    "Prior",
    "PriorCodec",
    "PriorDecoder",
    "available_priors",
    "check_section",
    "decoder_of",
    "encode_prior",
    "get_prior",
    "plan_fields",
    "prepare",
    "quiet_head",
    "register_prior",
    "section_of",
]

#: Share of the file budget the prior gets when ``prior_fraction`` is ``None``.
AUTO_PRIOR_FRACTION = 0.9
_FIELD_ROOM = 400  # bytes beyond the smallest field: the header's prior entry, a wider net
_U32 = struct.Struct("<I")
_CACHE_BYTES = 256 << 20  # decoded prior tiles kept per decoder
_MAX_TILE_VOXELS = 1 << 26


# --------------------------------------------------------------------------- codecs
@dataclass(frozen=True)
class PriorCodec:
    """A classic codec usable as a hybrid prior.

    Attributes
    ----------
    name
        Registry key (``--prior NAME``).
    description
        One line for the CLI and the widget.
    encode
        ``encode(block, quality) -> bytes`` for an unsigned integer block of shape
        ``(planes, height, width)`` and ``quality`` in ``[0, 1]`` (1 best).
    decode
        ``decode(data, shape, dtype, bits) -> ndarray`` of exactly that shape and dtype;
        raises ``ValueError`` (or the codec's error) on invalid data.
    high_bits
        Sample depth used for 16-bit and float images (8-bit images are coded at 8 bits).
    tile
        Default tile edge in pixels (larger tiles: less per-tile overhead, coarser ROI).
    planes
        Planes coded together: 1 for image codecs, more for video codecs.
    available
        Whether the codec can be used here (library or program present).
    levels
        Number of distinct quality settings (``None``: continuous).
    """

    name: str
    description: str
    encode: Callable[[np.ndarray, float], bytes]
    decode: Callable[[bytes, tuple[int, ...], np.dtype, int], np.ndarray]
    high_bits: int
    tile: int
    planes: int = 1
    available: Callable[[], bool] = lambda: True
    levels: int | None = None

    def bits(self, dtype: str) -> int:
        """Sample depth this codec is fed for an image of ``dtype``."""
        return 8 if dtype == "uint8" else self.high_bits


#: Codec priors by name: the classic-codec registry (built-in names are listed in
#: :mod:`napari_inif.core.registry` without importing this module).
PRIORS = CODECS


def register_prior(codec: PriorCodec) -> None:
    """Make ``codec`` available to :class:`~.config.CompressionConfig` by its name."""
    CODECS.register(codec.name, codec, codec.description)


def available_priors() -> list[str]:
    """Names of the registered priors that can be used on this machine, sorted."""
    return sorted(name for name in CODECS if CODECS[name].available())


def get_prior(name: str) -> PriorCodec:
    """The codec registered as ``name``; ``ValueError`` naming the available ones if absent."""
    codec = CODECS[name] if name in CODECS else None
    if codec is None or not codec.available():
        why = "is not available here" if codec is not None else "is unknown"
        usable = ", ".join(available_priors()) or "none"
        raise ValueError(f"codec prior {name!r} {why}; available priors: {usable}")
    return codec


def _imagecodecs_has(attr: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            import imagecodecs
        except ImportError:
            return False
        return bool(getattr(getattr(imagecodecs, attr, None), "available", False))

    return check


def _plane(block: np.ndarray) -> np.ndarray:
    if block.shape[0] != 1:
        raise ValueError("image codecs code one plane at a time")
    return np.ascontiguousarray(block[0])


def _log_knob(quality: float, worst: float, best: float) -> float:
    """Geometric interpolation from ``worst`` (quality 0) to ``best`` (quality 1)."""
    q = min(max(quality, 0.0), 1.0)
    return float(math.exp(math.log(worst) + q * (math.log(best) - math.log(worst))))


def _decode_into(
    fn: Callable[..., np.ndarray], data: bytes, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    out = np.empty(shape[1:], dtype)  # the codec refuses a stream of another shape
    return fn(data, out=out)[None]


def _jpegxl_encode(block: np.ndarray, quality: float) -> bytes:
    import imagecodecs

    # Butteraugli distance 25 (worst lossy) .. 0.01 (visually lossless x 100).
    distance = _log_knob(quality, 25.0, 0.01)
    return bytes(imagecodecs.jpegxl_encode(_plane(block), distance=distance, numthreads=1))


def _jpegxl_decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype, bits: int) -> np.ndarray:
    import imagecodecs

    return _decode_into(imagecodecs.jpegxl_decode, data, shape, dtype)


def _jpeg2k_encode(block: np.ndarray, quality: float) -> bytes:
    import imagecodecs

    # OpenJPEG's fixed-quality mode: ``level`` is the target PSNR in dB of the tile.
    level = 15.0 + 85.0 * min(max(quality, 0.0), 1.0)
    return bytes(
        imagecodecs.jpeg2k_encode(_plane(block), level=level, codecformat="j2k", numthreads=1)
    )


def _jpeg2k_decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype, bits: int) -> np.ndarray:
    import imagecodecs

    return _decode_into(imagecodecs.jpeg2k_decode, data, shape, dtype)


def _htj2k_encode(block: np.ndarray, quality: float) -> bytes:
    import imagecodecs

    # OpenJPH's ``level`` is the quantisation step relative to the sample range.
    qstep = _log_knob(quality, 0.5, 1e-5)
    return bytes(imagecodecs.htj2k_encode(_plane(block), level=qstep))


def _htj2k_decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype, bits: int) -> np.ndarray:
    import imagecodecs

    return _decode_into(imagecodecs.htj2k_decode, data, shape, dtype)


def _avif_encode(block: np.ndarray, quality: float) -> bytes:
    import imagecodecs

    # libavif codes one-sample images losslessly whatever the quality in imagecodecs, so
    # the plane goes in as grey RGB and is stored as 4:0:0 (luma only).
    plane = _plane(block)
    bits = 8 if plane.dtype == np.uint8 else 12
    level = round(99 * min(max(quality, 0.0), 1.0))
    return bytes(
        imagecodecs.avif_encode(
            np.repeat(plane[..., None], 3, axis=-1),
            level=level,
            speed=6,
            pixelformat="400",
            bitspersample=bits,
            numthreads=1,
        )
    )


def _avif_decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype, bits: int) -> np.ndarray:
    import imagecodecs

    return _decode_into(imagecodecs.avif_decode, data, shape, dtype)


# HEVC through ffmpeg/libx265: neighbouring planes are coded as frames of one video, so
# the codec's inter prediction exploits their similarity.
# Constant rate factor with x265's PSNR tuning (no psycho-visual or adaptive quantisation):
# a continuous knob, and on the cancer-cell stack 0.2-0.4 dB better than a constant QP at
# the same size.
_HEVC_PARAMS = (
    "log-level=error:info=0:pools=1:frame-threads=1:keyint=-1:aq-mode=0:psy-rd=0:psy-rdoq=0"
)


@lru_cache(maxsize=1)
def _hevc_available() -> bool:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return False
    try:
        out = subprocess.run(
            [exe, "-hide_banner", "-encoders"], capture_output=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return b"libx265" in out


def _hevc_format(bits: int) -> str:
    return "gray" if bits == 8 else "gray12le"


def _hevc_encode(block: np.ndarray, quality: float) -> bytes:
    planes, h, w = block.shape
    bits = 8 if block.dtype == np.uint8 else 12
    crf = round(51.0 * (1 - min(max(quality, 0.0), 1.0)), 3)
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        _hevc_format(bits),
        "-s",
        f"{w}x{h}",
        "-r",
        "25",
        "-i",
        "pipe:",
        "-frames:v",
        str(planes),
        "-c:v",
        "libx265",
        "-preset",
        "medium",
        "-x265-params",
        f"crf={crf}:{_HEVC_PARAMS}",
        "-f",
        "hevc",
        "pipe:",
    ]
    raw = block.astype("<u2" if bits > 8 else np.uint8).tobytes()
    done = subprocess.run(cmd, input=raw, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg/libx265 failed: {done.stderr.decode(errors='replace')[-300:]}")
    return done.stdout


def _hevc_decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype, bits: int) -> np.ndarray:
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-f",
        "hevc",
        "-i",
        "pipe:",
        "-f",
        "rawvideo",
        "-pix_fmt",
        _hevc_format(bits),
        "pipe:",
    ]
    done = subprocess.run(cmd, input=data, capture_output=True, check=False)
    sample = np.dtype(np.uint8 if bits == 8 else "<u2")
    if done.returncode != 0 or len(done.stdout) != math.prod(shape) * sample.itemsize:
        raise ValueError("HEVC prior block does not decode to its declared shape")
    return np.frombuffer(done.stdout, sample).reshape(shape).astype(dtype)


JPEGXL = PriorCodec(
    "jpegxl",
    "JPEG XL (libjxl, via imagecodecs)",
    _jpegxl_encode,
    _jpegxl_decode,
    16,
    256,
    available=_imagecodecs_has("JPEGXL"),
)

JPEG2K = PriorCodec(
    "jpeg2k",
    "JPEG 2000 (OpenJPEG, via imagecodecs)",
    _jpeg2k_encode,
    _jpeg2k_decode,
    16,
    512,
    available=_imagecodecs_has("JPEG2K"),
)

HTJ2K = PriorCodec(
    "htj2k",
    "High-throughput JPEG 2000 (OpenJPH, via imagecodecs)",
    _htj2k_encode,
    _htj2k_decode,
    16,
    512,
    available=_imagecodecs_has("HTJ2K"),
)

AVIF = PriorCodec(
    "avif",
    "AVIF 4:0:0 (libavif/libaom, via imagecodecs)",
    _avif_encode,
    _avif_decode,
    12,
    512,
    available=_imagecodecs_has("AVIF"),
    levels=100,
)

HEVC = PriorCodec(
    "hevc",
    "HEVC video of neighbouring planes (ffmpeg + libx265)",
    _hevc_encode,
    _hevc_decode,
    12,
    512,
    planes=16,
    available=_hevc_available,
)


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


def _to_ints(norm: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    ints = np.rint((np.clip(norm, -1.0, 1.0) + 1.0) * (top / 2.0))
    return ints.astype(np.uint8 if bits == 8 else np.uint16)


def _from_ints(ints: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return ints.astype(np.float32) * np.float32(2.0 / top) - np.float32(1.0)


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
    codec: str | PriorCodec,
    target_bytes: int,
    *,
    tile: int | None = None,
) -> Prior:
    """Code the normalised canonical image with a classic codec in about ``target_bytes``.

    Searches the codec's quality so that the section is the largest that fits in
    ``target_bytes``.  Raises :class:`~.budget.BudgetError` if even the lowest quality
    does not fit, ``ValueError`` for an unknown or unavailable codec.
    """
    from napari_inif.core.codec.plan import BudgetError

    codec = get_prior(codec) if isinstance(codec, str) else codec
    tiling = _Tiling.of(layout, codec.planes, (tile or codec.tile,) * 2)
    bits = codec.bits(layout.dtype)
    ints = tiling.planes_view(_to_ints(norm, bits))
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

    def knob(q: float) -> float:
        # Discrete codecs: snap to their settings so no setting is encoded twice.
        return q if codec.levels is None else round(q * (codec.levels - 1)) / (codec.levels - 1)

    lo, hi = 0.0, 1.0
    if size_at(knob(lo)) > target_bytes:
        raise BudgetError(
            f"the {codec.name} prior needs at least {size_at(knob(lo))} bytes at its lowest "
            f"quality but its share of the budget is {target_bytes} bytes; lower the ratio, "
            "raise the prior fraction or use the field mode",
            float("nan"),
        )
    if size_at(knob(hi)) <= target_bytes:
        lo = hi
    else:
        for _ in range(16):
            mid = knob((lo + hi) / 2)
            if mid in (lo, hi):
                break
            if size_at(mid) <= target_bytes:
                lo = mid
            else:
                hi = mid
            if hi - lo < 2e-3:
                break
    tiles = encoded[knob(lo)]
    section = _pack(tiles)
    info: dict[str, Any] = {
        "codec": codec.name,
        "nbytes": len(section),
        "tile": list(tiling.tile),
        "planes": tiling.planes,
        "bits": bits,
        "quality": round(knob(lo), 5),
        "scale": 1.0,
    }
    decoder = PriorDecoder(layout, info, section)
    decoded = decoder.full()
    info["scale"] = decoder.scale = _residual_scale(norm, decoded)
    return Prior(section, info, decoded, decoder)


def prepare(norm: np.ndarray, layout: Layout, config: Any) -> Prior | None:
    """The prior for a :class:`~.config.CompressionConfig`, or ``None`` in field mode.

    The prior's share of the budget ``raw bytes / ratio`` is ``prior_fraction``; the
    automatic split (``None``) gives it :data:`AUTO_PRIOR_FRACTION` but always leaves
    the field room for a small network and the header.
    """
    if getattr(config, "mode", "field") != "hybrid":
        return None
    budget = layout.raw_bytes / config.ratio
    if config.prior_fraction is not None:
        target = int(config.prior_fraction * budget)
    else:
        target = int(min(AUTO_PRIOR_FRACTION * budget, budget - _field_floor(layout)))
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
        If ``info`` or the section is inconsistent; ``ValueError`` if the codec is not
        available here (naming the available ones).
    """

    def __init__(self, layout: Layout, info: dict[str, Any], section: bytes):
        self.tiling, self.bits, self.scale, self._starts = check_section(layout, info, section)
        self.codec = get_prior(str(info["codec"]))
        self.layout = layout
        self._dtype = np.dtype(np.uint8 if self.bits == 8 else np.uint16)
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
            ints = self.codec.decode(data, shape, self._dtype, self.bits)
        except (ValueError, RuntimeError) as exc:
            raise InifFormatError(f"prior tile {key} does not decode: {exc}") from None
        if ints.shape != shape:
            raise InifFormatError(f"prior tile {key} decodes to {ints.shape}, not {shape}")
        values = _from_ints(ints, self.bits)
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
