"""The ``.inif`` container: magic, version, JSON header, payload, checksum.

Layout (all integers little-endian; see ``docs/format.md``)::

    magic        8 bytes   b"\\x89INIF\\r\\n\\x1a"
    version      u16 major, u16 minor (2.x: SIREN block fields, 3.x to 5.x: a latent-grid
                           field, 4.x and 5.x with a binary header)
    header_len   u32       length of the header, at most MAX_HEADER_BYTES
    header       bytes     1.x-3.x: raw-deflate-compressed UTF-8 JSON object; 4.x: the
                           binary header of :mod:`.gridheader`
    payload_len  u32       length of the payload
    payload      bytes     entropy-coded weights (and codec-prior sections), see quant.py
    crc32        u32       CRC-32 of everything before it

Major 5 (latent-grid files, November 2026) keeps the magic and the u16 major, so every
reader reaches the version check, and then spends 8 bytes less, which a 250-byte file
feels (3% of it)::

    magic 8 bytes | u16 major (5) | u8 minor | v header_len | header | payload | u32 crc32

(``v``: an unsigned LEB128 varint; the payload is what lies between the header and the
checksum, so its length is not stored.)

Nothing is unpickled and no size read from a file is trusted before it is checked
against the bytes actually present and fixed bounds, so a truncated, corrupted or
hostile file raises :class:`InifFormatError` rather than allocating or crashing.
Writes go to a temporary file in the target folder and are renamed into place.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from napari_inif.core.codec.varint import Reader, put_varint
from napari_inif.core.errors import InifFormatError

__all__ = [
    "FORMAT_VERSION",
    "GRID_JSON_VERSION",
    "GRID_MAJORS",
    "GRID_VERSION",
    "MAGIC",
    "MAX_FILE_BYTES",
    "MAX_HEADER_BYTES",
    "Container",
    "InifFormatError",
    "check_writable",
    "is_inif",
    "overhead_bytes",
    "pack",
    "read_file",
    "read_header_json",
    "unpack",
    "unpack_version",
    "write_atomic",
]

MAGIC = b"\x89INIF\r\n\x1a"
#: Version written.  2.0 added finer quantiser ranges for first layers and biases
#: (``first_half``, ``bias_half``), which a 1.x reader cannot ignore; 1.x files (neither
#: key) are still read.
FORMAT_VERSION = (2, 0)
#: Version of latent-grid files (:mod:`.gridfile`): a binary header (:mod:`.gridheader`)
#: and a grid stream as the payload.  No 2.x or 3.x reader can read the header (they
#: refuse the file by its version); 3.0 grid files, whose header is a compact JSON
#: (:data:`GRID_JSON_VERSION`), are still read.
GRID_VERSION = (5, 0)
GRID_JSON_VERSION = (3, 0)
#: Majors whose payload is a latent-grid field.
GRID_MAJORS = (3, 4, 5)
READ_MAJORS = (1, 2, 3, 4, 5)
#: Majors whose header is binary (kept as bytes by :func:`unpack_version`).
_BINARY_HEADER_MAJORS = (4, 5)
#: Majors with the compact layout (u8 minor, varint header length, no payload length).
_COMPACT_MAJORS = (5,)
MAX_HEADER_BYTES = 1 << 20  # deflated
MAX_HEADER_JSON_BYTES = 8 << 20  # inflated
MAX_FILE_BYTES = 1 << 36
_PREFIX = struct.Struct("<8sHHI")
_U32 = struct.Struct("<I")
_COMPACT_PREFIX = struct.Struct("<8sHB")
OVERHEAD_BYTES = _PREFIX.size + 2 * _U32.size  # without header and payload


def overhead_bytes(version: tuple[int, int], header_len: int) -> int:
    """Bytes a file of format ``version`` spends besides its header and payload."""
    if version[0] in _COMPACT_MAJORS:
        return _COMPACT_PREFIX.size + _varint_len(header_len) + _U32.size
    return OVERHEAD_BYTES


def _varint_len(n: int) -> int:
    return max(1, -(-n.bit_length() // 7))


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return c.compress(data) + c.flush()


def _inflate(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(-15)
    out = d.decompress(data, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise InifFormatError(f"header inflates to more than {limit} bytes")
    if not d.eof:
        raise InifFormatError("header is truncated")
    if d.unused_data:
        raise InifFormatError(f"{len(d.unused_data)} bytes of trailing data after the header")
    return out


def header_bytes(header: dict[str, Any]) -> bytes:
    """The deflated JSON of ``header`` as it is stored."""
    text = json.dumps(header, separators=(",", ":"), sort_keys=True, allow_nan=False)
    return _deflate(text.encode("utf-8"))


class Container(NamedTuple):
    """The parts of an ``.inif`` file: format version, header, payload.

    ``header`` is the JSON object (formats 1.x-3.x) or, for a binary-header format
    (4.x), the header's bytes, which :mod:`.gridheader` parses.
    """

    version: tuple[int, int]
    header: dict[str, Any] | bytes
    payload: bytes


def pack(
    header: dict[str, Any] | bytes,
    payload: bytes,
    version: tuple[int, int] = FORMAT_VERSION,
) -> bytes:
    """Serialise ``header`` (a JSON object, deflated here, or a binary header's bytes,
    stored as they are) and ``payload`` into the bytes of an ``.inif`` file."""
    head = header if isinstance(header, bytes) else header_bytes(header)
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    if len(payload) >= 1 << 32:
        raise ValueError("payload above 4 GiB; split the image into several files")
    if version[0] in _COMPACT_MAJORS:
        out = io.BytesIO()
        out.write(_COMPACT_PREFIX.pack(MAGIC, *version))
        put_varint(out, len(head))
        out.write(head)
        out.write(payload)
        body = out.getvalue()
        return body + _U32.pack(zlib.crc32(body))
    body = b"".join(
        [
            _PREFIX.pack(MAGIC, *version, len(head)),
            head,
            _U32.pack(len(payload)),
            payload,
        ]
    )
    return body + _U32.pack(zlib.crc32(body))


def unpack(data: bytes) -> tuple[dict[str, Any] | bytes, bytes]:
    """Parse and check the bytes of an ``.inif`` file: ``(header, payload)``."""
    parsed = unpack_version(data)
    return parsed.header, parsed.payload


def unpack_version(data: bytes) -> Container:
    """Parse and check the bytes of an ``.inif`` file, keeping its format version."""
    view = memoryview(data)
    if len(view) < _PREFIX.size or bytes(view[:8]) != MAGIC:
        raise InifFormatError("not an .inif file (magic bytes missing)")
    major = int.from_bytes(view[8:10], "little")
    if major in _COMPACT_MAJORS:
        return _unpack_compact(view)
    _, major, minor, head_len = _PREFIX.unpack_from(view, 0)
    if major not in READ_MAJORS:
        raise InifFormatError(
            f"unsupported .inif format version {major}.{minor}; this napari-inif reads "
            + ", ".join(f"{m}.x" for m in READ_MAJORS)
        )
    if head_len > MAX_HEADER_BYTES:
        raise InifFormatError(f"header length {head_len} exceeds {MAX_HEADER_BYTES}")
    at = _PREFIX.size
    if at + head_len + 2 * _U32.size > len(view):
        raise InifFormatError("file is truncated (header)")
    head = bytes(view[at : at + head_len])
    at += head_len
    (payload_len,) = _U32.unpack_from(view, at)
    at += _U32.size
    if at + payload_len + _U32.size != len(view):
        raise InifFormatError(
            f"file size {len(view)} does not match the payload length {payload_len} "
            "(truncated or trailing bytes)"
        )
    payload = bytes(view[at : at + payload_len])
    (crc,) = _U32.unpack_from(view, at + payload_len)
    if zlib.crc32(view[: at + payload_len]) != crc:
        raise InifFormatError("checksum mismatch: the file is corrupted")
    if major in _BINARY_HEADER_MAJORS:
        return Container((major, minor), head, payload)
    return Container((major, minor), read_header_json(head), payload)


def _unpack_compact(view: memoryview) -> Container:
    """The parts of a file in the compact layout (major 5)."""
    _, major, minor = _COMPACT_PREFIX.unpack_from(view, 0)
    length = Reader(view[_COMPACT_PREFIX.size :], "file (header length)")
    head_len = length.varint(MAX_HEADER_BYTES)
    at = _COMPACT_PREFIX.size + length.pos
    end = len(view) - _U32.size
    if at + head_len > end:
        raise InifFormatError("file is truncated (header)")
    (crc,) = _U32.unpack_from(view, end)
    if zlib.crc32(view[:end]) != crc:
        raise InifFormatError("checksum mismatch: the file is corrupted or truncated")
    head = bytes(view[at : at + head_len])
    return Container((major, minor), head, bytes(view[at + head_len : end]))


def read_header_json(head: bytes, *, deflated: bool = True) -> dict[str, Any]:
    """The JSON object of header bytes (raw-deflated unless ``deflated=False``); raises
    :class:`InifFormatError`."""
    try:
        text = _inflate(head, MAX_HEADER_JSON_BYTES) if deflated else head
        header = json.loads(text.decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InifFormatError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InifFormatError("header is not a JSON object")
    return header


def read_file(path: str | os.PathLike[str]) -> Container:
    """Read and check an ``.inif`` file: ``(version, header, payload)``."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InifFormatError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
        data = path.read_bytes()
    except IsADirectoryError:
        raise InifFormatError(f"{path} is a directory, not an .inif file") from None
    return unpack_version(data)


def is_inif(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts with the ``.inif`` magic bytes (reads 8 bytes, never raises)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except (OSError, TypeError, ValueError):
        return False


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | Callable[[str], object],
    *,
    overwrite: bool = True,
) -> Path:
    """Write ``data`` to ``path`` via a temporary file and a rename; returns ``path``.

    ``data`` is the bytes, or a function that writes the file at the path it is given
    (e.g. a TIFF writer).  A failure or interruption (Ctrl-C included, at any moment)
    leaves any existing file at ``path`` untouched and no file behind: the temporary
    ``.NAME.XXXX.part`` name is chosen before the file is made, so an interrupt between
    making it and knowing its name cannot strand it.  With ``overwrite=False`` an
    existing ``path`` raises ``FileExistsError`` (also one appearing while writing).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; not replacing it")
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.part{path.suffix}")
    made = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        made = True
        if callable(data):
            os.close(fd)
            data(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never replaces it
            except FileExistsError:
                raise FileExistsError(f"{path} exists; not replacing it") from None
            except OSError:  # a file system without hard links
                if path.exists():
                    raise FileExistsError(f"{path} exists; not replacing it") from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException as exc:
        if made or os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise _naming(exc, path) from None
        raise
    return path


def check_writable(
    path: str | os.PathLike[str], *, overwrite: bool = True, nbytes: int = 0
) -> Path:
    """Fail now, before a long fit or decode, if ``path`` cannot be written.

    Writes (and removes) a temporary file of ``nbytes`` bytes in the target folder, so a
    missing, read-only or full folder is reported naming the path; ``overwrite=False``
    also refuses an existing ``path``.  Raises ``OSError`` (``FileExistsError``, ...).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file name")
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    probe = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(bytes(nbytes))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            os.unlink(probe)
    except OSError as exc:
        raise _naming(exc, path) from None
    return path


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` re-made so that its message names ``path`` (disk full says no file)."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, f"cannot write {path}: {exc.strerror}")
