"""Bit-depth handling: how image values become a codec's unsigned integers and back.

Two maps, one per caller:

* :func:`to_ints` / :func:`from_ints`: normalised values in ``[-1, 1]`` (what the field
  and the hybrid prior see) to the full range of a ``bits``-bit integer, so quality
  settings mean the same on 12-bit data stored in 16-bit integers as on 8-bit data;
* :class:`IntegerMap`: raw data (uint8, uint16, float) to at most ``bits`` bits from the
  data's own range, with ``lo`` and ``step`` kept as float32 side information (the
  benchmark's baselines, which code the data itself).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["IntegerMap", "from_ints", "int_dtype", "to_ints"]


def int_dtype(bits: int) -> np.dtype:
    """The unsigned dtype that holds ``bits``-bit samples."""
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


def to_ints(norm: np.ndarray, bits: int) -> np.ndarray:
    """Normalised values in ``[-1, 1]`` as ``bits``-bit unsigned integers."""
    top = (1 << bits) - 1
    ints = np.rint((np.clip(norm, -1.0, 1.0) + 1.0) * (top / 2.0))
    return ints.astype(int_dtype(bits))


def from_ints(ints: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`to_ints`, float32 (the arithmetic is part of the file format)."""
    top = (1 << bits) - 1
    return ints.astype(np.float32) * np.float32(2.0 / top) - np.float32(1.0)


class IntegerMap(NamedTuple):
    """Linear map between data and a codec's integers: ``x = lo + q * step``."""

    lo: float
    step: float
    dtype: np.dtype
    maxval: int

    @classmethod
    def for_data(cls, data: np.ndarray, bits: int) -> IntegerMap:
        """The map for ``data`` into at most ``bits`` bits (uint8 data stays 8-bit).

        Integer data whose range fits is only shifted (lossless); wider or float data is
        scaled from its minimum to its maximum.
        """
        if data.dtype == np.uint8:
            return cls(0.0, 1.0, np.dtype(np.uint8), 255)
        maxval = (1 << min(bits, 16)) - 1
        lo, hi = float(np.min(data)), float(np.max(data))
        if data.dtype.kind in "iu" and hi - lo <= maxval:
            step = 1.0
        else:
            step = (hi - lo) / maxval if hi > lo else 1.0
        lo, step = float(np.float32(lo)), float(np.float32(step))  # as stored: float32
        return cls(lo, step, np.dtype(np.uint16), maxval)

    @property
    def bits(self) -> int:
        """Sample depth of the integers."""
        return int(self.maxval).bit_length()

    def forward(self, data: np.ndarray) -> np.ndarray:
        """Codec integers of ``data``."""
        q = np.rint((data.astype(np.float64) - self.lo) / self.step)
        return np.clip(q, 0, self.maxval).astype(self.dtype)

    def inverse(self, q: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Data of ``dtype`` from codec integers."""
        x = q.astype(np.float64) * self.step + self.lo
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            return x.astype(dtype)
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
