"""The ``.inif`` file of a latent-grid field: container 5.0, a binary header, a grid stream.

In hybrid mode the body is ``[prior section][grid stream]``: a classic-codec prior
(:mod:`napari_inif.core.hybrid.prior`, the same section as in SIREN files) codes the image
and the grid its residual; the header then says how (``p``) and holds the image's dtype
and intensity range (``d``, ``l``, ``h``), which the stream, coding the residual, does not.

The container starts as every ``.inif`` file does (:mod:`.container`; magic, then the
major version, 5, so that 2.x-4.x readers refuse it by its version instead of misreading
it) and spends 16 bytes in all (a u8 minor, the header length as a varint, no payload
length, the CRC).  Its header holds only what people read and what the layout needs:
axes, the shape when the stream does not imply it, and the fit record in binary fields,
the rest (source name, pixel size, prior) as a compact JSON with one-letter keys
(:mod:`.gridheader`; ~18 bytes for a file with a fit record and no metadata, where
format 4.0 took 26 and 3.0's deflated JSON ~90, see ``docs/format.md``).  Format 4.0 and
3.0 files (the whole header as that JSON) are still read.  The decoder's numbers (shape
of the field, dtype, intensity range, latents, weights) are in the grid stream
(:mod:`.grid.coding`), the payload.

:class:`GridEncoded` has the surface of :class:`~.encoded.Encoded` that the CLI, the
writer, the reader and the widgets use (``header.layout``/``fit``/``metadata``,
``to_bytes``, ``nbytes``, ``ratio``, ``save``, ``array()``, ``with_header``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_inif.core.codec.container import (
    GRID_VERSION,
    overhead_bytes,
    pack,
    write_atomic,
)
from napari_inif.core.codec.decode import InifArray, _human, decode_budget
from napari_inif.core.codec.gridheader import from_binary, implied_shape, to_binary
from napari_inif.core.codec.header import MAX_VOXELS, from_json_safe, json_safe
from napari_inif.core.errors import DecodeBudgetError, InifFormatError
from napari_inif.core.layout import Layout

if TYPE_CHECKING:
    from napari_inif.core.codec.grid import GridCode
    from napari_inif.core.codec.griddecode import GridFieldDecoder

__all__ = ["BYTES_PER_LATENT", "FIELD_KIND", "GridEncoded", "GridHeader"]

#: The ``k`` of the JSON: which field the stream holds (format 3.0; 4.x is always a grid).
FIELD_KIND = "grid"
#: Peak bytes per latent while a grid file is read and decoded: the int32 tile cache (4),
#: and for scattered samples every level assembled as int32 (4) and float32 (4); 16
#: leaves room for the transients (the context's int64 inputs exist for one tile at a
#: time: ~64k latents x (2d + 2) x 8 bytes, a few MB).  The decode budget bounds
#: ``latents * BYTES_PER_LATENT`` before the stream is parsed.
BYTES_PER_LATENT = 16
#: Top-level JSON keys (file form <- readable name).
_KEYS = {
    "kind": "k",
    "axes": "a",
    "shape": "s",
    "scale": "x",
    "unit": "u",
    "metadata": "m",
    "fit": "r",
    "prior": "p",
    "dtype": "d",
    "lo": "l",
    "hi": "h",
}
#: Keys of the ``prior`` object (:func:`~napari_inif.core.hybrid.prior.encode_prior`)
#: stored short.
_PRIOR_KEYS = {
    "codec": "c",
    "nbytes": "n",
    "tile": "t",
    "planes": "p",
    "bits": "b",
    "quality": "q",
    "scale": "s",
}
_PRIOR_NAMES = {v: k for k, v in _PRIOR_KEYS.items()}
#: Fit-record keys (:func:`~napari_inif.core.engine.record.fit_record`) stored short.
_FIT_KEYS = {
    "architecture": "A",
    "steps": "n",
    "seconds": "t",
    "device": "d",
    "seed": "z",
    "psnr": "p",
    "psnr_dtype": "P",
    "ssim": "q",
    "max_error": "e",
    "quality": "Q",
    "guidance": "g",
}
_FIT_NAMES = {v: k for k, v in _FIT_KEYS.items()}
#: Fit-record values left out of the file (the reader puts them back).
_FIT_DEFAULTS = {"device": "cpu", "seed": 0}


@dataclass(frozen=True)
class GridHeader:
    """What a grid file says about its image besides the stream.

    Attributes
    ----------
    layout
        Shape, axes and dtype of the original array.
    lo, hi
        Per-channel intensity range (the stream stores one range for all channels; in
        hybrid mode, the range the prior and the residual are normalised by).
    scale, unit
        Physical pixel size per original axis (``None`` if unknown) and its unit.
    fit
        The fit record (steps, seconds, psnr, ssim, ...).
    metadata
        Small free-form JSON (source name, ...).
    prior
        Hybrid mode: the classic-codec prior's description (the ``info`` of
        :class:`~napari_inif.core.hybrid.prior.Prior`; ``nbytes`` is the size of its
        section), else ``None``.
    """

    layout: Layout
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    scale: tuple[float, ...] | None = None
    unit: str | None = None
    fit: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    prior: dict[str, Any] | None = None
    kind: str = FIELD_KIND

    @property
    def prior_bytes(self) -> int:
        """Bytes of the prior section (0 without a prior)."""
        return 0 if self.prior is None else int(self.prior["nbytes"])

    def with_fit(self, **values: Any) -> GridHeader:
        """A copy with ``fit`` updated."""
        return replace(self, fit={**self.fit, **values})

    def to_json(self) -> dict[str, Any]:
        """Readable JSON (``inif info --json``); the file stores :meth:`to_file_json`."""
        return {
            "field": self.kind,
            "shape": list(self.layout.shape),
            "axes": self.layout.axes,
            "dtype": self.layout.dtype,
            "lo": list(self.lo),
            "hi": list(self.hi),
            "scale": None if self.scale is None else list(self.scale),
            "unit": self.unit,
            "fit": json_safe(self.fit),
            "metadata": self.metadata,
            "prior": self.prior,
        }

    def to_file_json(self) -> dict[str, Any]:
        """The JSON object stored in the file: short keys, absent values left out, the
        architecture left out of the fit record when it is the field kind."""
        fit = {
            _FIT_KEYS.get(k, k): v
            for k, v in json_safe(self.fit).items()
            if not (k == "architecture" and v == self.kind) and _FIT_DEFAULTS.get(k, ...) != v
        }
        values = {
            "kind": self.kind,
            "axes": self.layout.axes,
            "shape": list(self.layout.shape),
            "scale": None if self.scale is None else list(self.scale),
            "unit": self.unit,
            "metadata": self.metadata or None,
            "fit": fit or None,
        }
        if self.prior is not None:  # the stream codes the residual: the image's own map
            values |= {
                "prior": {_PRIOR_KEYS.get(k, k): v for k, v in self.prior.items()},
                "dtype": self.layout.dtype,
                "lo": [_compact(v) for v in self.lo],
                "hi": [_compact(v) for v in self.hi],
            }
        return {_KEYS[k]: v for k, v in values.items() if v is not None}

    @classmethod
    def from_file_json(cls, obj: dict[str, Any], code: GridCode) -> GridHeader:
        """Validate a file's JSON against its parsed stream; raises :class:`InifFormatError`."""
        prior = prior_of(obj)
        layout = layout_of(obj, code.dtype.name if prior is None else obj.get(_KEYS["dtype"]))
        spec = code.spec
        if layout.coord_shape != spec.shape or layout.channels != spec.channels:
            raise InifFormatError(
                f"the grid stream's field {spec.shape} x {spec.channels} channel(s) does not "
                f"match the image {layout.shape} {layout.axes!r}"
            )
        n = layout.channels
        stream_lo, stream_hi = code.lo, code.hi  # per channel
        if (
            not (np.isfinite(stream_lo).all() and np.isfinite(stream_hi).all())
            or (stream_lo > stream_hi).any()
        ):
            raise InifFormatError(
                f"invalid intensity range {stream_lo}..{stream_hi} in the grid stream"
            )
        if prior is None:
            lo, hi = tuple(map(float, stream_lo)), tuple(map(float, stream_hi))
        else:
            lo_in, hi_in = obj.get(_KEYS["lo"]), obj.get(_KEYS["hi"])
            if not (
                isinstance(lo_in, list)
                and isinstance(hi_in, list)
                and len(lo_in) == len(hi_in) == n
                and all(
                    _finite(a) and _finite(b) and a <= b for a, b in zip(lo_in, hi_in, strict=True)
                )
            ):
                raise InifFormatError("a hybrid file needs a finite lo <= hi per channel")
            lo, hi = tuple(float(v) for v in lo_in), tuple(float(v) for v in hi_in)
        scale = obj.get(_KEYS["scale"])
        if scale is not None and not (
            isinstance(scale, list)
            and len(scale) == len(layout.shape)
            and all(_finite(v) for v in scale)
        ):
            raise InifFormatError("scale must be a finite number per axis")
        unit = obj.get(_KEYS["unit"])
        metadata = obj.get(_KEYS["metadata"], {})
        fit = obj.get(_KEYS["fit"], {})
        if unit is not None and not isinstance(unit, str):
            raise InifFormatError("unit must be a string")
        if not isinstance(fit, dict) or not isinstance(metadata, dict):
            raise InifFormatError("fit and metadata must be objects")
        record = {str(_FIT_NAMES.get(k, k)): from_json_safe(v) for k, v in fit.items()}
        record.setdefault("architecture", FIELD_KIND)
        if fit:  # a fit record leaves out its default values
            for key, value in _FIT_DEFAULTS.items():
                record.setdefault(key, value)
        return cls(
            layout,
            lo,
            hi,
            None if scale is None else tuple(float(v) for v in scale),
            unit,
            record,
            metadata,
            prior,
        )


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _compact(v: float) -> int | float:
    """``v`` as the JSON int it is (uint8/uint16 ranges), else the float."""
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else float(v)


def prior_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The readable ``prior`` object of a grid file's JSON (``None``: no prior).

    Only its shape is checked here; :func:`~napari_inif.core.hybrid.prior.check_section`
    checks it against the image and the section.
    """
    short = obj.get(_KEYS["prior"])
    if short is None:
        return None
    if not isinstance(short, dict):
        raise InifFormatError("prior must be an object")
    prior = {str(_PRIOR_NAMES.get(k, k)): v for k, v in short.items()}
    n = prior.get("nbytes")
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise InifFormatError(f"invalid prior section size {n!r}")
    return prior


def layout_of(obj: dict[str, Any], dtype: Any) -> Layout:
    """The image layout a grid file's JSON declares; raises :class:`InifFormatError`."""
    kind = obj.get(_KEYS["kind"])
    if kind != FIELD_KIND:
        raise InifFormatError(f"unknown field kind {kind!r} in a grid file")
    axes, shape = obj.get(_KEYS["axes"]), obj.get(_KEYS["shape"])
    if dtype not in ("uint8", "uint16", "float32"):
        raise InifFormatError(f"unsupported dtype {dtype!r}")
    if not (isinstance(axes, str) and axes.isascii() and axes.isalpha() and axes.isupper()):
        raise InifFormatError(f"axes must be upper-case letters, got {axes!r}")
    if not (
        isinstance(shape, list)
        and 1 <= len(shape) <= 5
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
        and math.prod(shape) <= MAX_VOXELS
    ):
        raise InifFormatError(f"unsupported shape {shape!r}")
    try:
        return Layout(tuple(shape), axes, dtype)
    except ValueError as exc:
        raise InifFormatError(f"invalid image layout: {exc}") from None


@dataclass(frozen=True)
class GridEncoded:
    """A latent-grid field, compressed: its header and grid stream.

    Decoding in memory and from its file gives identical values (both parse the stream).

    Attributes
    ----------
    header
        What the file says about the image (:class:`GridHeader`).
    stream
        The grid stream (:mod:`napari_inif.core.codec.grid.coding`).
    prior
        Hybrid mode: the bytes of the classic-codec prior section
        (:mod:`napari_inif.core.hybrid.prior`), which the file's body starts with; else
        empty.
    budget
        Decode memory budget in bytes (``None``: :func:`.decode.decode_budget`).
    """

    header: GridHeader
    stream: bytes
    prior: bytes = b""
    budget: int | None = field(default=None, compare=False)
    _decoder: list[GridFieldDecoder] = field(default_factory=list, repr=False, compare=False)

    @property
    def payload(self) -> bytes:
        """The file's body: the prior section (hybrid mode), then the grid stream."""
        return self.prior + self.stream

    def to_bytes(self) -> bytes:
        """The complete ``.inif`` file."""
        return pack(_binary_header(self.header), self.payload, GRID_VERSION)

    @cached_property
    def nbytes(self) -> int:
        """Size of the whole file in bytes."""
        return len(self.to_bytes())

    @property
    def ratio(self) -> float:
        """``raw bytes / file bytes``, the whole file counted."""
        return self.header.layout.raw_bytes / self.nbytes

    @staticmethod
    def overhead(header: GridHeader) -> int:
        """Bytes a file with ``header`` spends besides its grid stream (container, header
        and, in hybrid mode, the prior section)."""
        head = len(_binary_header(header))
        return overhead_bytes(GRID_VERSION, head) + head + header.prior_bytes

    def with_header(self, header: GridHeader) -> GridEncoded:
        """The same stream under another header (e.g. with fit results)."""
        return replace(self, header=header, _decoder=[])

    def decoder(self, device: str = "cpu") -> GridFieldDecoder:
        """The (cached) decoder of this field (CPU only)."""
        if not self._decoder:
            from napari_inif.core.codec.griddecode import GridFieldDecoder

            code = parse_stream(self.stream, self.header.layout, decode_budget(self.budget))
            self._decoder.append(GridFieldDecoder(self.header, code, self.budget, self.prior))
        return self._decoder[0]

    def array(self) -> InifArray:
        """Lazy, numpy-like full-resolution view of the decoded image."""
        return InifArray(self.decoder())  # type: ignore[arg-type]  # FieldDecoder's surface

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
        """Write the file atomically; returns its path.

        ``overwrite=False`` raises ``FileExistsError`` instead of replacing a file.
        """
        return write_atomic(Path(path), self.to_bytes(), overwrite=overwrite)

    @classmethod
    def from_parts(
        cls,
        head: dict[str, Any] | bytes,
        body: bytes,
        budget: int | str | None = None,
        version: tuple[int, int] = GRID_VERSION,
    ) -> GridEncoded:
        """Validate a grid file's header and stream (see :func:`.encoded.load`): a
        format 4 or 5 binary header (``version``), or the JSON object of a format 3 file."""
        limit = decode_budget(budget)
        obj = from_binary(head, major=version[0]) if isinstance(head, bytes) else head
        info = prior_of(obj)
        n_prior = 0 if info is None else info["nbytes"]
        if n_prior > len(body):
            raise InifFormatError(f"codec prior size {n_prior} does not fit the body")
        prior, stream = body[:n_prior], body[n_prior:]
        if "s" in obj:
            # the stream's dtype is not known yet: check the layout with a placeholder
            code = parse_stream(stream, layout_of(obj, "uint8"), limit)
        else:  # format 5 without a shape: the stream's field says it
            code = parse_stream(stream, None, limit)
            axes = obj.get("a")
            shape = None
            if isinstance(axes, str):
                shape = implied_shape(axes, code.spec.shape, code.spec.channels)
            if shape is None:
                raise InifFormatError(
                    f"the axes {axes!r} do not fit the grid stream's field {code.spec.shape}"
                    f" x {code.spec.channels} channel(s)"
                )
            obj = {**obj, "s": shape}
            _check_pixels(layout_of(obj, "uint8"), limit)
        header = GridHeader.from_file_json(obj, code)
        if header.prior is not None:
            from napari_inif.core.hybrid.prior import check_section

            check_section(header.layout, header.prior, prior)
        encoded = cls(header, stream, prior, limit)
        from napari_inif.core.codec.griddecode import GridFieldDecoder

        encoded._decoder.append(GridFieldDecoder(header, code, limit, prior))
        return encoded


def _check_pixels(layout: Layout, limit: int) -> None:
    """Refuse (:class:`DecodeBudgetError`) an image whose pixels are over the budget: the
    finest latent level may hold one latent a pixel."""
    pixels = math.prod(layout.coord_shape)
    if pixels * BYTES_PER_LATENT > limit:
        raise DecodeBudgetError(
            f"the grid field of {pixels} pixels has at least as many latents; decoding them "
            f"would take about {_human(pixels * BYTES_PER_LATENT)}, over the decode budget "
            f"of {_human(limit)} (INIF_DECODE_BUDGET or load(budget=))"
        )


def _binary_header(header: GridHeader) -> bytes:
    """The format 5 header of ``header``: without the shape when the stream implies it."""
    layout = header.layout
    implied = implied_shape(layout.axes, layout.coord_shape, layout.channels)
    return to_binary(header.to_file_json(), implied=implied)


def parse_stream(stream: bytes, layout: Layout | None, limit: int) -> GridCode:
    """The parsed grid stream of an image ``layout`` under the decode budget ``limit``.

    The finest latent level has one latent per pixel: an image over the budget is refused
    (:class:`DecodeBudgetError`) before the stream is read (``layout=None``: the caller
    checks it after, from the stream's field); the stream may declare at most
    ``limit // BYTES_PER_LATENT`` latents over all levels (:class:`InifFormatError`).
    """
    from napari_inif.core.codec.grid import GridCode

    if layout is not None:
        _check_pixels(layout, limit)
    try:
        return GridCode(stream, max_latents=limit // BYTES_PER_LATENT)
    except InifFormatError:
        raise
    except MemoryError:
        raise DecodeBudgetError("out of memory reading the grid stream") from None
    except Exception as exc:  # constriction, struct, numpy: anything a bad stream raises
        raise InifFormatError(f"invalid grid stream: {exc}") from None
