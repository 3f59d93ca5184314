"""The binary header of a latent-grid file (formats 4.0 and 5.0).

A grid file's header says what people read (axes, shape, the fit record, the source
name, pixel size) and, in hybrid mode, how the prior is laid out.  Format 3.0 stored it
as a deflated compact JSON, ~90 bytes with a fit record: at 512x a 258-byte 2D file
spent 45% of itself on container and JSON.  Formats 4.0 and 5.0 store the common part
in binary fields and keep a JSON (deflated when that is shorter) only for what has no
field (metadata, scale, unit, the hybrid prior, guidance results, any number a field
cannot give back exactly).  Format 4.0::

    u8  flags         bit k (k < 6): fit-record field k below is present;
                      bit 6: a JSON object follows the fields; bit 7: it is deflated
    u8  n             axes (1 to 5)
    n   axis letters  ASCII, upper case
    v   shape[n]      unsigned LEB128 varints
    fit-record fields present, in this order, little-endian:
        u32 steps  | u32 seconds x 10 | u16 PSNR x 100 | u16 PSNR (dtype range) x 100
        i16 SSIM x 10000 | u32 max error x 10
    [the rest: a UTF-8 JSON object with format 3.0's short keys, raw DEFLATE-compressed
     when that is shorter (bit 7)]

Format 5.0 spends ~10 bytes less on the same: the axis count byte also says whether the
shape is stored (bit 3 set: it is not, being the one the grid stream implies,
:func:`implied_shape`), and the fit record's u32 fields are varints::

    u8  flags         as in 4.0
    u8  axes          bits 0-2: n (1 to 5); bit 3: no shape follows; bits 4-7: 0
    n   axis letters
    v   shape[n]      unless bit 3
    fit-record fields present: v steps | v seconds x 10 | u16 PSNR x 100
        | u16 PSNR (dtype range) x 100 | i16 SSIM x 10000 | v max error x 10
    [the JSON part as in 4.0]

A value is stored in its field only when the field gives it back exactly (the engine
rounds the record to these decimals, :data:`~napari_inif.core.engine.grid.RECORD_DECIMALS`);
anything else (an infinite PSNR, a negative one) stays in the JSON.  Both directions go
through the format 3.0 JSON object (:meth:`.gridfile.GridHeader.to_file_json`), so one
validation serves both formats.
"""

from __future__ import annotations

import io
import json
import math
import struct
from typing import Any

from napari_inif.core.codec.container import header_bytes, read_header_json
from napari_inif.core.codec.varint import Reader, put_varint
from napari_inif.core.errors import InifFormatError

__all__ = ["RECORD_FIELDS", "from_binary", "implied_shape", "to_binary"]

#: Fit-record fields: (short key of the JSON record, struct code, scale).
RECORD_FIELDS = (
    ("n", "I", 1),
    ("t", "I", 10),
    ("p", "H", 100),
    ("P", "H", 100),
    ("q", "h", 10000),
    ("e", "I", 10),
)
_JSON_FOLLOWS, _DEFLATED = 1 << 6, 1 << 7
#: Format 5: bit of the axes byte saying that the shape is not stored.
_NO_SHAPE = 1 << 3
#: Axis letters of a channel axis (as :data:`napari_inif.core.layout.CHANNEL_AXES`).
_CHANNEL_LETTERS = "CS"
#: The JSON keys the binary part holds (kind, axes, shape, fit record).
_KIND, _AXES, _SHAPE, _FIT = "k", "a", "s", "r"


def _field_value(value: Any, code: str, scale: int) -> int | None:
    """The integer a field stores for ``value``, or ``None`` if it cannot give it back."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return None
    stored = round(value * scale)
    lo, hi = {"I": (0, 2**32 - 1), "H": (0, 2**16 - 1), "h": (-(2**15), 2**15 - 1)}[code]
    if not lo <= stored <= hi:
        return None
    back = stored if scale == 1 and isinstance(value, int) else stored / scale
    return stored if back == value and type(back) is type(value) else None


def implied_shape(
    axes: str, coord_shape: tuple[int, ...] | list[int], channels: int
) -> list[int] | None:
    """The array shape a format 5.0 header without a shape stands for: the grid stream's
    coordinate extents in order, with ``channels`` at the first channel letter (C or S)
    when there is more than one; ``None`` when the letters do not fit that pattern."""
    extents = iter(coord_shape)
    out: list[int] = []
    placed = channels == 1
    for letter in axes:
        if letter in _CHANNEL_LETTERS and not placed:
            out.append(channels)
            placed = True
        else:
            n = next(extents, None)
            if n is None:
                return None
            out.append(int(n))
    if not placed or next(extents, None) is not None:
        return None
    return out


def _put(out: io.BytesIO, code: str, value: int, major: int) -> None:
    """A record field: a varint in format 5 where 4.0 has a u32."""
    if code == "I" and major >= 5:
        put_varint(out, value)
    else:
        out.write(struct.pack("<" + code, value))


def to_binary(obj: dict[str, Any], *, major: int = 5, implied: list[int] | None = None) -> bytes:
    """The format ``major``.0 header (4 or 5) of a format 3.0 JSON object
    (``GridHeader.to_file_json()``); format 5 leaves the shape out when it equals
    ``implied`` (:func:`implied_shape` of the stream it goes with) or when ``obj`` has
    none (what :func:`from_binary` gives for such a header)."""
    if major not in (4, 5):
        raise ValueError(f"binary grid headers are formats 4 and 5, not {major}")
    rest = dict(obj)
    rest.pop(_KIND)
    axes, shape = rest.pop(_AXES), rest.pop(_SHAPE, None)
    if shape is None and major < 5:
        raise ValueError("a format 4 header needs the shape")
    if not 1 <= len(axes) == len(shape if shape is not None else axes) <= 5:
        raise ValueError(f"axes {axes!r} and shape {shape} do not match")
    record = dict(rest.pop(_FIT, {}))
    flags, fields = 0, io.BytesIO()
    for bit, (key, code, scale) in enumerate(RECORD_FIELDS):
        stored = _field_value(record.get(key), code, scale)
        if stored is not None:
            flags |= 1 << bit
            _put(fields, code, stored, major)
            del record[key]
    if record:
        rest[_FIT] = record
    part = b""
    if rest:
        flags |= _JSON_FOLLOWS
        part = json.dumps(rest, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
        deflated = header_bytes(rest)
        if len(deflated) < len(part):
            flags, part = flags | _DEFLATED, deflated
    omit = shape is None or (major >= 5 and implied is not None and list(shape) == implied)
    out = io.BytesIO()
    out.write(bytes([flags, len(axes) | (_NO_SHAPE if omit else 0)]))
    out.write(axes.encode("ascii"))
    for n in () if omit or shape is None else shape:
        put_varint(out, n)
    out.write(fields.getvalue())
    out.write(part)
    return out.getvalue()


def from_binary(data: bytes, *, major: int = 5) -> dict[str, Any]:
    """The format 3.0 JSON object a format ``major``.0 header (4 or 5) says; raises
    :class:`InifFormatError` for a truncated or malformed header.  A format 5 header
    without a shape gives an object without ``s``: the reader takes
    :func:`implied_shape` of the stream."""
    r = Reader(data, "grid header")
    flags, axes_byte = r.u8(), r.u8()
    n = axes_byte & 0x07 if major >= 5 else axes_byte
    if (
        (flags & _DEFLATED and not flags & _JSON_FOLLOWS)
        or not 1 <= n <= 5
        or (major >= 5 and axes_byte & ~(0x07 | _NO_SHAPE))
    ):
        raise InifFormatError(f"grid header: bad flags {flags:#x} or axes byte {axes_byte:#x}")
    try:
        axes = r.take(n).decode("ascii")
    except UnicodeDecodeError:
        raise InifFormatError("grid header: axes are not ASCII letters") from None
    stored_shape = not (major >= 5 and axes_byte & _NO_SHAPE)
    shape = [r.varint(1 << 48) for _ in range(n)] if stored_shape else None
    record: dict[str, Any] = {}
    for bit, (key, code, scale) in enumerate(RECORD_FIELDS):
        if flags >> bit & 1:
            if code == "I" and major >= 5:
                stored = r.varint(2**32 - 1)
            else:
                fmt = "<" + code
                (stored,) = struct.unpack(fmt, r.take(struct.calcsize(fmt)))
            record[key] = stored if scale == 1 else stored / scale
    tail = bytes(r.data[r.pos :])
    obj: dict[str, Any] = {}
    if flags & _JSON_FOLLOWS:
        obj = read_header_json(tail, deflated=bool(flags & _DEFLATED))
        if {_KIND, _AXES, _SHAPE} & obj.keys():
            raise InifFormatError("grid header: its JSON part repeats the binary fields")
    elif tail:
        raise InifFormatError(f"grid header: {len(tail)} bytes after its fields")
    extra = obj.get(_FIT, {})
    if not isinstance(extra, dict):
        raise InifFormatError("fit and metadata must be objects")
    if record or extra:
        obj[_FIT] = {**extra, **record}
    out = {**obj, _KIND: "grid", _AXES: axes}
    if shape is not None:
        out[_SHAPE] = shape
    return out
