"""Weight quantisation, entropy coding and rate control.

Every tensor (one weight matrix or bias of one block) is quantised uniformly and
symmetrically with its own scale: ``q = round(w / s)`` with ``|q| <= half`` and
``s = max|w| / half`` stored as float16.  All blocks share ``half`` (so ``2 * half + 1``
levels).  The integers are zigzag-mapped to unsigned 16-bit, byte-shuffled (all low
bytes, then all high bytes, nearly all zero below 256 levels) and coded with LZMA2, whose
adaptive range coder does the entropy coding.

Rate control picks the largest ``half`` whose payload fits the byte budget, so the file
lands on the asked size whatever the weights' statistics are.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAX_HALF",
    "QuantisedWeights",
    "decode_payload",
    "dequantise",
    "encode_payload",
    "payload_size_bound",
    "quantise",
    "rate_control",
]

MAX_HALF = 32767
#: Weights per payload byte a file may declare.  Real payloads carry >= ~1.5 bits per
#: weight; the bound stops a small hostile payload from inflating into a huge allocation.
MAX_EXPANSION = 64
_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0}]

Weights = list[np.ndarray]  # flat list of float32 tensors in file order


@dataclass(frozen=True)
class QuantisedWeights:
    """Integer tensors with one float16 scale each and the shared ``half`` of the quantiser."""

    half: int
    scales: np.ndarray  # float16, one per tensor
    values: list[np.ndarray]  # int16 tensors

    @property
    def n_values(self) -> int:
        """Total number of quantised numbers."""
        return sum(v.size for v in self.values)


def quantise(weights: Weights, half: int) -> QuantisedWeights:
    """Quantise each tensor of ``weights`` to integers in ``[-half, half]``."""
    if not 1 <= half <= MAX_HALF:
        raise ValueError(f"half must be 1..{MAX_HALF}, got {half}")
    scales = np.empty(len(weights), np.float16)
    values = []
    for i, w in enumerate(weights):
        peak = float(np.max(np.abs(w))) if w.size else 0.0
        s = np.float16(peak / half) if peak > 0 else np.float16(1.0)
        if not np.isfinite(s) or s == 0:
            s = np.float16(max(peak / half, 6e-8)) if np.isfinite(peak / half) else np.float16(1)
        scales[i] = s
        q = np.clip(np.rint(w.astype(np.float64) / float(s)), -half, half).astype(np.int16)
        values.append(q)
    return QuantisedWeights(half, scales, values)


def dequantise(q: QuantisedWeights) -> Weights:
    """Float32 tensors from a :class:`QuantisedWeights`."""
    return [v.astype(np.float32) * np.float32(s) for v, s in zip(q.values, q.scales, strict=True)]


def encode_payload(q: QuantisedWeights) -> bytes:
    """Entropy-coded bytes of the scales and integers (see module docstring)."""
    flat = np.concatenate([v.ravel() for v in q.values]) if q.values else np.zeros(0, np.int16)
    raw = _zigzag(flat).astype("<u2").view(np.uint8).reshape(-1, 2)
    ints = raw[:, 0].tobytes() + raw[:, 1].tobytes()
    body = q.scales.astype("<f2").tobytes() + ints
    return lzma.compress(body, format=lzma.FORMAT_RAW, filters=_FILTERS)


def decode_payload(payload: bytes, shapes: list[tuple[int, ...]], half: int) -> QuantisedWeights:
    """Inverse of :func:`encode_payload`; raises ``ValueError`` on any inconsistency.

    The decompressor is bounded by the size the ``shapes`` imply, so a hostile payload
    cannot expand beyond it.
    """
    if not 1 <= half <= MAX_HALF:
        raise ValueError(f"quantiser half {half} out of range")
    n_values = sum(int(np.prod(s)) for s in shapes)
    if n_values > MAX_EXPANSION * max(len(payload), 1):
        raise ValueError(
            f"header declares {n_values} weights but the payload holds only {len(payload)} bytes"
        )
    expected = 2 * len(shapes) + 2 * n_values
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_FILTERS)
    body = dec.decompress(payload, max_length=expected + 1)
    if len(body) != expected or (not dec.eof and dec.needs_input):
        raise ValueError(
            f"payload holds {len(body)} bytes after decoding, header implies {expected}"
        )
    scales = np.frombuffer(body[: 2 * len(shapes)], "<f2").astype(np.float16)
    if not np.all(np.isfinite(scales)):
        raise ValueError("payload has non-finite quantiser scales")
    ints = body[2 * len(shapes) :]
    planes = np.frombuffer(ints, np.uint8).reshape(2, n_values)
    flat = _unzigzag(np.ascontiguousarray(planes.T).view("<u2").ravel())
    if flat.size and int(np.max(np.abs(flat))) > half:
        raise ValueError("payload has values outside the quantiser range")
    values, at = [], 0
    for s in shapes:
        n = int(np.prod(s))
        values.append(flat[at : at + n].reshape(s))
        at += n
    return QuantisedWeights(half, scales, values)


def _zigzag(values: np.ndarray) -> np.ndarray:
    """Signed to unsigned, small magnitudes first: 0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4."""
    v = values.astype(np.int32)
    return np.where(v >= 0, 2 * v, -2 * v - 1).astype(np.uint16)


def _unzigzag(codes: np.ndarray) -> np.ndarray:
    c = codes.astype(np.int32)
    return np.where(c % 2 == 0, c // 2, -(c + 1) // 2).astype(np.int32)


def payload_size_bound(n_values: int, n_tensors: int, bits: int) -> int:
    """Bytes a payload of ``n_values`` at ``bits`` per value takes without coding gain."""
    return int(np.ceil(n_values * bits / 8)) + 2 * n_tensors + 64


def rate_control(weights: Weights, budget: int) -> tuple[QuantisedWeights, bytes]:
    """The finest quantiser whose coded payload fits in ``budget`` bytes.

    Binary search over ``half``: coded size grows monotonically (up to coder noise) with
    the number of levels.  Raises ``ValueError`` if even 3 levels do not fit.
    """
    lo, hi = 1, MAX_HALF
    best: tuple[QuantisedWeights, bytes] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        q = quantise(weights, mid)
        payload = encode_payload(q)
        if len(payload) <= budget:
            best = (q, payload)
            lo = mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ValueError(f"weights do not fit in {budget} bytes even at 3 levels")
    return best
