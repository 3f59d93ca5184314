"""Unsigned LEB128 varints and a bounds-checked byte reader (torch-free: the grid
header is read when napari checks a file, before torch is imported)."""

from __future__ import annotations

import io

from napari_inif.core.errors import InifFormatError

__all__ = ["Reader", "put_varint"]


def put_varint(out: io.BytesIO, value: int) -> None:
    """Write ``value`` (>= 0) as an unsigned LEB128 varint."""
    if value < 0:
        raise ValueError("varints are unsigned")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.write(bytes([byte | 0x80]))
        else:
            out.write(bytes([byte]))
            return


class Reader:
    """Reads ``data`` front to back; running past its end or a bound raises
    :class:`InifFormatError` naming ``what`` is read."""

    def __init__(self, data: bytes | memoryview, what: str = "grid stream"):
        self.data = memoryview(data)
        self.pos = 0
        self.what = what  # named in errors

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes."""
        if n < 0 or self.pos + n > len(self.data):
            raise InifFormatError(f"{self.what} is truncated")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def u8(self) -> int:
        """The next byte."""
        return self.take(1)[0]

    def varint(self, limit: int = 1 << 40) -> int:
        """The next varint, at most ``limit``."""
        value = shift = 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise InifFormatError(f"{self.what}: varint too long")
        if value > limit:
            raise InifFormatError(f"{self.what}: value {value} over its bound {limit}")
        return value
