"""The binary header of a latent-grid file (format 4.0).

A grid file's header says what people read (axes, shape, the fit record, the source
name, pixel size) and, in hybrid mode, how the prior is laid out.  Format 3.0 stored it
as a deflated compact JSON, ~90 bytes with a fit record: at 512x a 258-byte 2D file
spent 45% of itself on container and JSON.  Format 4.0 stores the common part in fixed
binary fields and keeps a JSON (deflated when that is shorter) only for what has no
field (metadata, scale, unit, the hybrid prior, guidance results, any number a field
cannot give back exactly)::

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

__all__ = ["RECORD_FIELDS", "from_binary", "to_binary"]

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


def to_binary(obj: dict[str, Any]) -> bytes:
    """The format 4.0 header of a format 3.0 JSON object (``GridHeader.to_file_json()``)."""
    rest = dict(obj)
    rest.pop(_KIND)
    axes, shape = rest.pop(_AXES), rest.pop(_SHAPE)
    if not 1 <= len(axes) == len(shape) <= 5:
        raise ValueError(f"axes {axes!r} and shape {shape} do not match")
    record = dict(rest.pop(_FIT, {}))
    flags, fields = 0, b""
    for bit, (key, code, scale) in enumerate(RECORD_FIELDS):
        stored = _field_value(record.get(key), code, scale)
        if stored is not None:
            flags |= 1 << bit
            fields += struct.pack("<" + code, stored)
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
    out = io.BytesIO()
    out.write(bytes([flags, len(axes)]))
    out.write(axes.encode("ascii"))
    for n in shape:
        put_varint(out, n)
    out.write(fields)
    out.write(part)
    return out.getvalue()


def from_binary(data: bytes) -> dict[str, Any]:
    """The format 3.0 JSON object a format 4.0 header says; raises
    :class:`InifFormatError` for a truncated or malformed header."""
    r = Reader(data, "grid header")
    flags, n = r.u8(), r.u8()
    if (flags & _DEFLATED and not flags & _JSON_FOLLOWS) or not 1 <= n <= 5:
        raise InifFormatError(f"grid header: bad flags {flags:#x} or {n} axes")
    try:
        axes = r.take(n).decode("ascii")
    except UnicodeDecodeError:
        raise InifFormatError("grid header: axes are not ASCII letters") from None
    shape = [r.varint(1 << 48) for _ in range(n)]
    record: dict[str, Any] = {}
    for bit, (key, code, scale) in enumerate(RECORD_FIELDS):
        if flags >> bit & 1:
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
    return {**obj, _KIND: "grid", _AXES: axes, _SHAPE: shape}
