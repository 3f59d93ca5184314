"""The classic-codec contract: one :class:`ClassicCodec` per codec, found by name.

A classic codec codes an unsigned-integer block ``(planes, height, width)`` at a sample
depth (8 bits for 8-bit images, :attr:`ClassicCodec.high_bits` otherwise) with one
quality knob in ``[0, 1]`` (0: smallest file, 1: best).  The same definitions serve the
hybrid priors (:mod:`napari_inif.core.hybrid.prior`) and the benchmark's baselines
(:mod:`napari_inif.bench`), so the benchmark measures the codecs hybrid files ship.

Decoding treats the codestream as untrusted: the dimensions the codestream declares in
its own header are checked against the shape the ``.inif`` file declares before anything
is decoded, and every failure (a missing codec, a library error, a wrong shape) is an
:class:`~napari_inif.core.errors.InifFormatError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from napari_inif.core.errors import InifFormatError
from napari_inif.core.registry import CODECS

__all__ = ["ClassicCodec", "available_codecs", "get_codec", "register_codec"]

Block = tuple[int, int, int]


@dataclass(frozen=True)
class ClassicCodec:
    """One classic codec and the one configuration napari-inif uses it in.

    Attributes
    ----------
    name
        Registry key (``--prior NAME``, ``inif bench --codecs NAME``).
    label
        Display name in benchmark tables.
    high_bits
        Sample depth for 16-bit and float data (8-bit data is coded at 8 bits).
    setting
        Name of the codec's native quality parameter (reported by the benchmark).
    native
        ``native(quality) -> value`` of that parameter for a knob in ``[0, 1]``.
    levels
        Number of distinct knob settings (``None``: continuous).
    tile
        Default hybrid tile edge in pixels.
    planes
        Planes a hybrid tile holds: 1 for image codecs, more for video codecs.
    video
        ``True`` if a block may hold any number of planes (inter-plane prediction).
    install
        What to install to get the codec, for error messages.
    check
        ``check() -> reason`` why the codec cannot run here, or ``None``.
    encoder
        ``encoder(block, value) -> bytes`` at the native ``value``.
    decoder
        ``decoder(data, shape, dtype) -> ndarray``; may raise anything on bad data.
    dims
        ``dims(data) -> (height, width)`` declared by the codestream's own header;
        raises ``ValueError`` when the header is not readable.
    """

    name: str
    label: str
    high_bits: int
    setting: str
    native: Callable[[float], float]
    levels: int | None
    tile: int
    planes: int
    video: bool
    install: str
    check: Callable[[], str | None]
    encoder: Callable[[np.ndarray, float], bytes]
    decoder: Callable[[bytes, Block, np.dtype], np.ndarray]
    dims: Callable[[bytes], tuple[int, int]]

    def unavailable(self) -> str | None:
        """Why this codec cannot run here, or ``None``."""
        return self.check()

    def available(self) -> bool:
        """Whether this codec can run here."""
        return self.check() is None

    def bits(self, dtype: str | np.dtype) -> int:
        """Sample depth this codec is fed for an image of ``dtype``."""
        return 8 if np.dtype(dtype) == np.uint8 else self.high_bits

    def snap(self, quality: float) -> float:
        """``quality`` clipped to ``[0, 1]`` and, for a discrete knob, to its settings."""
        q = min(max(float(quality), 0.0), 1.0)
        return q if self.levels is None else round(q * (self.levels - 1)) / (self.levels - 1)

    def encode(self, block: np.ndarray, quality: float) -> bytes:
        """Codestream of the unsigned-integer ``block`` ``(planes, h, w)`` at ``quality``."""
        if block.ndim != 3 or block.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected a uint8/uint16 (planes, h, w) block, got {block.shape}")
        if block.shape[0] != 1 and not self.video:
            raise ValueError(f"{self.name} codes one plane at a time, got {block.shape[0]}")
        return self.encoder(np.ascontiguousarray(block), self.native(self.snap(quality)))

    def decode(self, data: bytes, shape: Block, bits: int) -> np.ndarray:
        """The ``(planes, h, w)`` block of ``bits``-bit samples that ``data`` codes.

        Raises
        ------
        InifFormatError
            If the codec is not available here (saying what to install), if the
            codestream declares other dimensions than ``shape``, or if it does not decode.
        """
        reason = self.unavailable()
        if reason is not None:
            raise InifFormatError(
                f"this file needs the {self.name} codec: {self.install} ({reason})"
            )
        shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        try:
            declared = self.dims(data)
        except (ValueError, IndexError) as exc:
            raise InifFormatError(f"{self.name} codestream has no readable header: {exc}") from None
        if declared != shape[1:]:
            raise InifFormatError(
                f"{self.name} codestream declares {declared[0]}x{declared[1]} pixels, the file "
                f"declares a tile of {shape[1]}x{shape[2]}"
            )
        dtype = np.dtype(np.uint8 if bits == 8 else np.uint16)
        try:
            out = self.decoder(data, shape, dtype)
        except InifFormatError:
            raise
        except Exception as exc:  # a library's error on untrusted bytes, whatever its type
            raise InifFormatError(f"{self.name} codestream does not decode: {exc}") from None
        if out.shape != shape or out.dtype != dtype:
            raise InifFormatError(
                f"{self.name} codestream decodes to {out.shape} {out.dtype}, not {shape} {dtype}"
            )
        return out


def register_codec(codec: ClassicCodec, description: str = "") -> None:
    """Make ``codec`` usable by its name (hybrid priors and benchmark baselines)."""
    CODECS.register(codec.name, codec, description or codec.label)


def available_codecs() -> list[str]:
    """Names of the registered codecs that can run on this machine, sorted."""
    return sorted(name for name in CODECS if CODECS[name].available())


def get_codec(name: str, role: str = "codec") -> ClassicCodec:
    """The codec registered as ``name``.

    Raises ``ValueError`` naming the codecs available here if it is unknown or cannot
    run here (``role`` names what it was asked for, e.g. ``"codec prior"``).
    """
    usable = ", ".join(available_codecs()) or "none"
    if name not in CODECS:
        raise ValueError(f"{role} {name!r} is unknown; available {role}s: {usable}")
    codec: ClassicCodec = CODECS[name]
    reason = codec.unavailable()
    if reason is not None:
        raise ValueError(
            f"{role} {name!r} is not available here ({reason}); available {role}s: {usable}"
        )
    return codec
