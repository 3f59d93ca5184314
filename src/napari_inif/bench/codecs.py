"""Classic codecs the benchmark compares against, registered by name.

Each :class:`ClassicCodec` codes integer images (8-bit, or up to its ``bits``) and has one
quality setting that :func:`match_size` searches by bisection for the largest bitstream
that fits a byte budget.  2D codecs code a stack either plane by plane (``layout="plane"``,
one shared setting, one codestream per plane) or as one 2D mosaic of its planes
(``layout="mosaic"``); the HEVC codec codes a stack as a video (inter-plane prediction).

Every byte a decoder would need is counted: the codestreams, a 4-byte length per plane
codestream, and 8 bytes for the intensity mapping (``lo``, ``hi`` as float32).

What the installed libraries support (checked by experiment with imagecodecs 2026.3.6 and
Debian's ffmpeg 5.1):

- JPEG XL (``jpegxl_encode``): 16-bit grayscale; quality set by the Butteraugli
  ``distance`` (0.05-25; larger values are clamped to 25, so very small files are
  unreachable per plane).
- JPEG 2000 (``jpeg2k_encode``): 16-bit grayscale; ``level`` is the target PSNR in dB of
  OpenJPEG's rate allocation (irreversible 9/7 wavelet).
- HTJ2K (``htj2k_encode``, OpenJPH): 16-bit grayscale; ``level`` is the quantisation step
  (smaller is better; ``None`` means lossless).
- AVIF (``avif_encode``, libaom): at most 12 bits.  A grayscale (2D) input is coded
  *losslessly whatever* ``level`` *is* (size constant for level 0-100, 8 and 12 bits), so
  the image is given as three identical channels (YUV 4:4:4; the chroma planes are flat and
  cost little) and the first channel is read back.  ``level`` is the quality 0-100;
  encoder ``speed=6`` (imagecodecs' default 0 is about 20x slower for ~8% smaller files).
- HEVC (``ffmpeg -c:v libx265``): 8-, 10- or 12-bit grayscale (``gray12le``), ``crf``
  0-51 (x265 preset ``medium``); a stack is one video, a 2D image one intra frame.
  Skipped with a message when ffmpeg or its libx265 encoder is absent.

Inputs are mapped to the codec's integers linearly from ``[lo, hi]`` of the data
(8-bit data stays as it is; 16-bit data whose range fits the codec's bits is only shifted).
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "CODECS",
    "ClassicCodec",
    "CodedStack",
    "IntegerMap",
    "decode_stack",
    "encode_stack",
    "match_size",
    "mosaic",
    "register_codec",
    "unmosaic",
]

SIDE_BYTES = 8  # lo and hi of the intensity mapping, float32
LENGTH_BYTES = 4  # length of each plane codestream in a plane-by-plane stack
AVIF_SPEED = 6  # libavif's own default; imagecodecs' default (0) is ~20x slower, ~8% smaller


@dataclass(frozen=True)
class ClassicCodec:
    """A classic codec with one searched quality setting.

    Attributes
    ----------
    name, label
        Registry key and display name.
    bits
        Deepest integer input it takes (16 or 12); 8-bit data is always given as uint8.
    setting
        Name of the native quality parameter (reported in the results).
    lo, hi
        Range of the native parameter searched.
    log
        Search the parameter on a log scale.
    larger_is_bigger
        Whether a larger native value gives a larger file.
    integer
        Whether the parameter is an integer.
    stack
        ``True`` if :attr:`encode` takes a whole ``(n, h, w)`` stack (a video codec).
    encode
        ``encode(image, value) -> bytes`` for an integer ``(h, w)`` (or ``(n, h, w)``) array.
    decode
        ``decode(data, shape, dtype) -> array`` of that shape.
    check
        ``check() -> reason`` why the codec cannot run here, or ``None``.
    """

    name: str
    label: str
    bits: int
    setting: str
    lo: float
    hi: float
    log: bool
    larger_is_bigger: bool
    integer: bool
    stack: bool
    encode: Callable[[np.ndarray, float], bytes]
    decode: Callable[[bytes, tuple[int, ...], np.dtype], np.ndarray]
    check: Callable[[], str | None]

    def native(self, t: float) -> float:
        """Native parameter at search position ``t`` in ``[0, 1]`` (0: smallest file)."""
        u = t if self.larger_is_bigger else 1.0 - t
        if self.log:
            value = math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))
        else:
            value = self.lo + u * (self.hi - self.lo)
        return float(round(value)) if self.integer else float(value)

    def unavailable(self) -> str | None:
        """Why this codec cannot run here, or ``None``."""
        return self.check()


#: Classic codecs by name.
CODECS: dict[str, ClassicCodec] = {}


def register_codec(codec: ClassicCodec) -> None:
    """Add (or replace) a codec in :data:`CODECS`."""
    CODECS[codec.name] = codec


# -- intensity mapping -------------------------------------------------------------------


class IntegerMap(NamedTuple):
    """Linear map between the data and a codec's integers: ``x = lo + q * step``."""

    lo: float
    step: float
    dtype: np.dtype
    maxval: int

    @classmethod
    def for_data(cls, data: np.ndarray, bits: int) -> IntegerMap:
        """The map for ``data`` into at most ``bits`` bits (uint8 data stays 8-bit)."""
        if data.dtype == np.uint8:
            return cls(0.0, 1.0, np.dtype(np.uint8), 255)
        bits = min(bits, 16)
        maxval = (1 << bits) - 1
        lo, hi = float(np.min(data)), float(np.max(data))
        if data.dtype.kind in "iu" and hi - lo <= maxval:
            step = 1.0  # only shifted: lossless
        else:
            step = (hi - lo) / maxval if hi > lo else 1.0
        # float32 side information, as stored
        lo, step = float(np.float32(lo)), float(np.float32(step))
        return cls(lo, step, np.dtype(np.uint16), maxval)

    def forward(self, data: np.ndarray) -> np.ndarray:
        """Codec integers of ``data``."""
        q = np.rint((data.astype(np.float64) - self.lo) / self.step)
        return np.clip(q, 0, self.maxval).astype(self.dtype)

    def inverse(self, q: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Data of the original ``dtype`` from codec integers."""
        x = q.astype(np.float64) * self.step + self.lo
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            return x.astype(dtype)
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)


# -- mosaic ------------------------------------------------------------------------------


def _grid(n: int, h: int, w: int) -> tuple[int, int]:
    cols = max(1, min(n, round(math.sqrt(n * h / w))))
    return math.ceil(n / cols), cols


def mosaic(stack: np.ndarray) -> np.ndarray:
    """Tile ``(n, h, w)`` planes row by row into one near-square 2D image (padding 0)."""
    n, h, w = stack.shape
    rows, cols = _grid(n, h, w)
    out = np.zeros((rows * h, cols * w), stack.dtype)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = stack[i]
    return out


def unmosaic(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`mosaic`."""
    n, h, w = shape
    _, cols = _grid(n, h, w)
    out = np.empty(shape, image.dtype)
    for i in range(n):
        r, c = divmod(i, cols)
        out[i] = image[r * h : (r + 1) * h, c * w : (c + 1) * w]
    return out


# -- coding a stack with a searched setting ----------------------------------------------


class CodedStack(NamedTuple):
    """A stack coded by a classic codec at one setting."""

    nbytes: int  # everything counted
    value: float  # native setting
    decoded: np.ndarray  # (n, h, w), original dtype
    encode_s: float  # one encode at this setting (the search not counted)
    decode_s: float


def encode_stack(
    codec: ClassicCodec, q: np.ndarray, layout: str, value: float
) -> tuple[int, list[bytes]]:
    """Code the integer stack ``q`` at ``value``: ``(bytes counted, codestreams)``."""
    if codec.stack:
        streams = [codec.encode(q, value)]
        return sum(map(len, streams)) + SIDE_BYTES, streams
    if layout == "mosaic" and q.shape[0] > 1:
        streams = [codec.encode(mosaic(q), value)]
        return len(streams[0]) + SIDE_BYTES, streams
    streams = [codec.encode(plane, value) for plane in q]
    framing = LENGTH_BYTES * len(streams) if len(streams) > 1 else 0
    return sum(map(len, streams)) + framing + SIDE_BYTES, streams


def decode_stack(
    codec: ClassicCodec,
    streams: list[bytes],
    shape: tuple[int, ...],
    layout: str,
    dtype: np.dtype,
) -> np.ndarray:
    """Integer stack of ``shape`` from the codestreams of :func:`encode_stack`."""
    if codec.stack:
        return codec.decode(streams[0], shape, dtype)
    if layout == "mosaic" and shape[0] > 1:
        n, h, w = shape
        rows, cols = _grid(n, h, w)
        return unmosaic(codec.decode(streams[0], (rows * h, cols * w), dtype), (n, h, w))
    return np.stack([codec.decode(s, shape[1:], dtype) for s in streams])


def match_size(
    codec: ClassicCodec,
    stack: np.ndarray,
    budget: int,
    *,
    layout: str = "plane",
    iterations: int = 12,
) -> CodedStack | None:
    """Code ``stack`` ``(n, h, w)`` at the best setting whose total size is <= ``budget``.

    Bisection on the quality setting (one setting shared by all planes), keeping the
    largest file under the budget among the settings tried.  Returns ``None`` when even
    the smallest setting is over the budget.
    """
    if stack.ndim != 3:
        raise ValueError(f"expected a (planes, height, width) stack, got {stack.shape}")
    if layout not in ("plane", "mosaic"):
        raise ValueError(f"layout is plane or mosaic, got {layout!r}")
    imap = IntegerMap.for_data(stack, codec.bits)
    q = imap.forward(stack)
    sizes: dict[float, int] = {}

    def fits(t: float) -> bool:
        value = codec.native(t)
        if value not in sizes:
            sizes[value] = encode_stack(codec, q, layout, value)[0]
        return sizes[value] <= budget

    if not fits(0.0):
        return None
    if not fits(1.0):
        lo, hi = 0.0, 1.0
        steps = iterations
        if codec.integer:
            steps = min(iterations, math.ceil(math.log2(abs(codec.hi - codec.lo) + 1)) + 1)
        for _ in range(steps):
            mid = (lo + hi) / 2
            if fits(mid):
                lo = mid
                if sizes[codec.native(mid)] >= 0.995 * budget:
                    break
            else:
                hi = mid
    # sizes are nearly, not strictly, monotone in the setting: keep the largest that fits
    best = max((v for v, n in sizes.items() if n <= budget), key=lambda v: (sizes[v], v))
    start = time.perf_counter()
    nbytes, streams = encode_stack(codec, q, layout, best)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode_stack(codec, streams, stack.shape, layout, imap.dtype)
    decode_s = time.perf_counter() - start
    return CodedStack(nbytes, best, imap.inverse(decoded, stack.dtype), encode_s, decode_s)


# -- imagecodecs codecs ------------------------------------------------------------------


def _imagecodecs(name: str) -> str | None:
    try:
        import imagecodecs
    except ImportError:
        return "imagecodecs is not installed"
    codec = getattr(imagecodecs, name.upper(), None)
    if codec is None or not codec.available:
        return f"imagecodecs was built without {name}"
    return None


def _jpegxl_encode(image: np.ndarray, value: float) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpegxl_encode(image, distance=value, effort=7))


def _jpegxl_decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    import imagecodecs

    return _shaped(imagecodecs.jpegxl_decode(data), shape)


def _jpeg2k_encode(image: np.ndarray, value: float) -> bytes:
    import imagecodecs

    # the bisection passes a float setting; imagecodecs takes it, its stubs say int
    coded = imagecodecs.jpeg2k_encode(image, level=value, codecformat="j2k")  # type: ignore[arg-type]
    return bytes(coded)


def _jpeg2k_decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    import imagecodecs

    return _shaped(imagecodecs.jpeg2k_decode(data), shape)


def _htj2k_encode(image: np.ndarray, value: float) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.htj2k_encode(image, level=value))


def _htj2k_decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    import imagecodecs

    return _shaped(imagecodecs.htj2k_decode(data), shape)


def _avif_encode(image: np.ndarray, value: float) -> bytes:
    import imagecodecs

    rgb = np.repeat(image[..., None], 3, axis=-1)  # grayscale would be coded losslessly
    bits = None if image.dtype == np.uint8 else 12
    return bytes(
        imagecodecs.avif_encode(rgb, level=int(value), bitspersample=bits, speed=AVIF_SPEED)
    )


def _avif_decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    import imagecodecs

    out = imagecodecs.avif_decode(data)
    return _shaped(out[..., 0] if out.ndim == 3 else out, shape)


def _shaped(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(image)
    if image.shape != tuple(shape):
        image = image.reshape(shape)
    return image


# -- HEVC through ffmpeg -----------------------------------------------------------------

_PAD = 8  # x265 codes whole 8-pixel units; pad by edge values and crop after decoding


@functools.lru_cache(maxsize=1)
def _ffmpeg_x265() -> str | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return "ffmpeg is not installed (Debian: apt-get install ffmpeg)"
    try:
        listing = subprocess.run(
            [exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ffmpeg does not run: {exc}"
    if "libx265" not in listing:
        return "this ffmpeg has no libx265 encoder"
    return None


def _hevc_pix_fmt(dtype: np.dtype) -> str:
    return "gray" if np.dtype(dtype) == np.uint8 else "gray12le"


def _hevc_encode(stack: np.ndarray, value: float) -> bytes:
    stack = stack if stack.ndim == 3 else stack[None]
    _, h, w = stack.shape
    ph, pw = -h % _PAD, -w % _PAD
    padded = np.pad(stack, ((0, 0), (0, ph), (0, pw)), mode="edge")
    raw = np.ascontiguousarray(padded.astype(padded.dtype.newbyteorder("<"))).tobytes()
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo",
        "-pix_fmt", _hevc_pix_fmt(stack.dtype), "-s", f"{w + pw}x{h + ph}", "-r", "1",
        "-i", "-", "-c:v", "libx265", "-preset", "medium", "-crf", f"{value:.3f}",
        "-x265-params", "log-level=error:info=0:pools=1:frame-threads=1", "-f", "hevc", "-",
    ]  # fmt: skip
    done = subprocess.run(cmd, input=raw, capture_output=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg/x265 failed: {done.stderr.decode(errors='replace')[:300]}")
    return done.stdout


def _hevc_decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    n, h, w = shape if len(shape) == 3 else (1, *shape)
    ph, pw = -h % _PAD, -w % _PAD
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "hevc", "-i", "-",
        "-f", "rawvideo", "-pix_fmt", _hevc_pix_fmt(dtype), "-",
    ]  # fmt: skip
    done = subprocess.run(cmd, input=data, capture_output=True, timeout=600, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace")[:300]
        raise RuntimeError(f"ffmpeg HEVC decode failed: {message}")
    wire = np.dtype(np.uint8) if np.dtype(dtype) == np.uint8 else np.dtype("<u2")
    frames = np.frombuffer(done.stdout, wire).reshape(n, h + ph, w + pw)
    return frames[:, :h, :w].astype(dtype).reshape(shape)


for _codec in (
    ClassicCodec(
        "jpegxl",
        "JPEG XL",
        16,
        "distance",
        0.05,
        25.0,
        log=True,
        larger_is_bigger=False,
        integer=False,
        stack=False,
        encode=_jpegxl_encode,
        decode=_jpegxl_decode,
        check=functools.partial(_imagecodecs, "jpegxl"),
    ),
    ClassicCodec(
        "jpeg2k",
        "JPEG 2000",
        16,
        "level (PSNR dB)",
        5.0,
        99.0,
        log=False,
        larger_is_bigger=True,
        integer=False,
        stack=False,
        encode=_jpeg2k_encode,
        decode=_jpeg2k_decode,
        check=functools.partial(_imagecodecs, "jpeg2k"),
    ),
    ClassicCodec(
        "htj2k",
        "HTJ2K",
        16,
        "level (qstep)",
        1e-5,
        0.5,
        log=True,
        larger_is_bigger=False,
        integer=False,
        stack=False,
        encode=_htj2k_encode,
        decode=_htj2k_decode,
        check=functools.partial(_imagecodecs, "htj2k"),
    ),
    ClassicCodec(
        "avif",
        "AVIF",
        12,
        "level",
        0,
        99,
        log=False,
        larger_is_bigger=True,
        integer=True,
        stack=False,
        encode=_avif_encode,
        decode=_avif_decode,
        check=functools.partial(_imagecodecs, "avif"),
    ),
    ClassicCodec(
        "hevc",
        "HEVC (x265)",
        12,
        "crf",
        0.0,
        51.0,
        log=False,
        larger_is_bigger=False,
        integer=False,
        stack=True,
        encode=_hevc_encode,
        decode=_hevc_decode,
        check=_ffmpeg_x265,
    ),
):
    register_codec(_codec)
