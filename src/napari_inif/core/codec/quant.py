"""Weight quantisation, entropy coding and rate control.

Every tensor (one weight matrix or bias of one block) is quantised uniformly and
symmetrically with its own scale: ``q = round(w / s)`` with ``|q| <= h`` and
``s = max|w| / h`` stored as float16.  Each tensor's half-range ``h`` (``2 * h + 1``
levels) depends on its *kind* (:data:`KINDS`), one number per kind for all blocks.  The
integers are zigzag-mapped to unsigned 16-bit, byte-shuffled (all low bytes, then all
high bytes, nearly all zero below 256 levels) and coded with LZMA2, whose adaptive range
coder does the entropy coding.

Kinds get :data:`LEVEL_FACTORS` times the levels of the hidden weight matrices because
their rounding errors are *phase* errors: the first layer's folded weights are
coordinate frequencies (|w| up to ~25, biases up to ~45 after long fits), so one step of a
shared quantiser is ~0.15 rad in every sine of the next layer; a hidden bias shifts its
sine's phase directly.  Together they hold ~5% of the weights.  Measured at equal file
size (seed 0, 600-1200 steps): first layer x8 +1.0 to +1.2 dB on 2D images, +0.03 on
stacks; biases x4 on top of it +0.23 / +0.64 dB on two 2D images, -0.02..+0.04 on three
others.

Rate control picks the largest ``half`` whose payload fits the byte budget, so the file
lands on the asked size whatever the weights' statistics are.
"""

from __future__ import annotations

import lzma
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "KINDS",
    "LEVEL_FACTORS",
    "MAX_HALF",
    "SAMPLED_RATE_CONTROL",
    "QuantisedWeights",
    "decode_payload",
    "dequantise",
    "encode_payload",
    "halves_for",
    "payload_size_bound",
    "quantise",
    "rate_control",
]

MAX_HALF = 32767
#: Tensor kinds: a block's first layer (weights and bias), the biases of its other layers,
#: and their weight matrices.
KINDS = ("first", "bias", "weight")
#: Levels of each kind relative to the weight matrices' (module docstring).  First layer
#: x4 and x16 were also measured (each ahead on some images by at most 0.2 dB), biases x2
#: and x8 (x2 0.25 dB worse on one image, x8 the same as x4).
LEVEL_FACTORS = {"first": 8, "bias": 4, "weight": 1}
#: Weights per payload byte a file may declare.  Real payloads carry >= ~1.5 bits per
#: weight; the bound stops a small hostile payload from inflating into a huge allocation.
MAX_EXPANSION = 64
_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0}]

Weights = list[np.ndarray]  # flat list of float32 tensors in file order


@dataclass(frozen=True)
class QuantisedWeights:
    """Integer tensors with one float16 scale and one quantiser half-range each."""

    halves: tuple[int, ...]  # one per tensor: values lie in [-h, h]
    scales: np.ndarray  # float16, one per tensor
    values: list[np.ndarray]  # int16 tensors

    @property
    def n_values(self) -> int:
        """Total number of quantised numbers."""
        return sum(v.size for v in self.values)


def halves_for(kinds: Sequence[str], half: int) -> tuple[int, ...]:
    """Per-tensor half-ranges for tensors of the given :data:`KINDS`: :data:`LEVEL_FACTORS`
    times ``half``, at most :data:`MAX_HALF`."""
    return tuple(min(MAX_HALF, LEVEL_FACTORS[k] * half) for k in kinds)


def quantise(weights: Weights, halves: int | Sequence[int]) -> QuantisedWeights:
    """Quantise each tensor of ``weights`` to integers in ``[-h, h]``, ``h`` its entry of
    ``halves`` (one number: the same for all)."""
    if isinstance(halves, int):
        halves = (halves,) * len(weights)
    halves = tuple(int(h) for h in halves)
    if len(halves) != len(weights):
        raise ValueError(f"{len(halves)} half-ranges for {len(weights)} tensors")
    if not all(1 <= h <= MAX_HALF for h in halves):
        raise ValueError(f"half-ranges must be 1..{MAX_HALF}, got {sorted(set(halves))}")
    scales = np.empty(len(weights), np.float16)
    values = []
    for i, (w, half) in enumerate(zip(weights, halves, strict=True)):
        peak = float(np.max(np.abs(w))) if w.size else 0.0
        s = np.float16(peak / half) if peak > 0 else np.float16(1.0)
        if not np.isfinite(s) or s == 0:
            s = np.float16(max(peak / half, 6e-8)) if np.isfinite(peak / half) else np.float16(1)
        scales[i] = s
        q = np.clip(np.rint(w.astype(np.float64) / float(s)), -half, half).astype(np.int16)
        values.append(q)
    return QuantisedWeights(halves, scales, values)


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


def decode_payload(
    payload: bytes, shapes: list[tuple[int, ...]], halves: int | Sequence[int]
) -> QuantisedWeights:
    """Inverse of :func:`encode_payload`; raises ``ValueError`` on any inconsistency.

    ``halves`` holds each tensor's half-range (one number: the same for all).  The
    decompressor is bounded by the size the ``shapes`` imply, so a hostile payload cannot
    expand beyond it.
    """
    if isinstance(halves, int):
        halves = (halves,) * len(shapes)
    halves = tuple(int(h) for h in halves)
    if len(halves) != len(shapes) or not all(1 <= h <= MAX_HALF for h in halves):
        raise ValueError("quantiser half-ranges out of range or not one per tensor")
    n_values = sum(math.prod(s) for s in shapes)
    if n_values > MAX_EXPANSION * max(len(payload), 1):
        raise ValueError(
            f"header declares {n_values} weights but the payload holds only {len(payload)} bytes"
        )
    expected = 2 * len(shapes) + 2 * n_values
    # The decoder's window need not exceed what it decodes (no match reaches further
    # back): liblzma allocates the whole window up front, 64 MiB at preset 9.
    window = max(1 << 12, min(expected + 1, _FILTERS[0].get("dict_size", 1 << 26)))
    dec = lzma.LZMADecompressor(
        format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": window}]
    )
    body = dec.decompress(payload, max_length=expected + 1)
    if len(body) != expected:
        raise ValueError(
            f"payload holds {len(body)} bytes after decoding, header implies {expected}"
        )
    if not dec.eof:  # the stream must end exactly here (its end marker) ...
        dec.decompress(b"", max_length=1)
        if not dec.eof:
            raise ValueError("payload stream does not end where the header says")
    if dec.unused_data:  # ... with nothing after it
        raise ValueError(f"{len(dec.unused_data)} bytes of trailing data after the payload")
    scales = np.frombuffer(body[: 2 * len(shapes)], "<f2").astype(np.float16)
    if not np.all(np.isfinite(scales)):
        raise ValueError("payload has non-finite quantiser scales")
    codes = _unshuffle(memoryview(body)[2 * len(shapes) :], n_values)
    del body
    sizes = [math.prod(s) for s in shapes]
    # Zigzag codes are 2|v| or 2|v| - 1: checking codes, not values, needs no int32 copy.
    peak = (int(np.max(codes)) + 1) // 2 if n_values else 0
    if peak > min(halves, default=MAX_HALF):  # rare: check tensor by tensor
        at = 0
        for n, half in zip(sizes, halves, strict=True):
            if n and (int(np.max(codes[at : at + n])) + 1) // 2 > half:
                raise ValueError("payload has values outside the quantiser range")
            at += n
    flat = _unzigzag_inplace(codes)
    values, at = [], 0
    for s, n in zip(shapes, sizes, strict=True):
        values.append(flat[at : at + n].reshape(s))  # views: no copy per tensor
        at += n
    return QuantisedWeights(halves, scales, values)


def _unshuffle(ints: memoryview, n: int) -> np.ndarray:
    """uint16 zigzag codes from their byte-shuffled planes."""
    planes = np.frombuffer(ints, np.uint8).reshape(2, n)
    codes = planes[1].astype(np.uint16)
    codes <<= 8
    codes |= planes[0]
    return codes


def _unzigzag_inplace(codes: np.ndarray) -> np.ndarray:
    """int16 values of uint16 zigzag codes, in ``codes``' memory (one bit-plane temporary):
    even codes are ``c / 2``, odd ones ``-(c + 1) / 2``, which is ``~(c >> 1)``."""
    sign = (codes & 1).view(np.int16)
    np.negative(sign, out=sign)  # 0 or -1 (all ones)
    codes >>= 1
    values = codes.view(np.int16)
    values ^= sign
    return values


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


#: Values above which :func:`rate_control` searches on a sample of the blocks first: each
#: full LZMA pass of a multi-megabyte payload takes seconds.
SAMPLED_RATE_CONTROL = 1 << 20


def rate_control(
    weights: Weights,
    budget: int,
    kinds: Sequence[str] | None = None,
    *,
    per_block: int | None = None,
) -> tuple[QuantisedWeights, bytes]:
    """The finest quantiser whose coded payload fits in ``budget`` bytes.

    Binary search over ``half``, every tensor at :func:`halves_for` of its kind (``None``:
    all ``"weight"``, one range for all): coded size grows monotonically (up to coder
    noise) with the number of levels.  Raises ``ValueError`` if even 3 levels do not fit.

    Above :data:`SAMPLED_RATE_CONTROL` values, with ``per_block`` (tensors per block) given, the
    search runs on every k-th block's tensors (against the budget scaled by their share of the
    values); that ``half`` is then checked on all weights: lowered until the payload fits, then
    raised by ~3% steps while it still fits.  The result fits the budget and is within ~3% (in
    ``half``) of the finest quantiser that does.
    """
    kinds = ["weight"] * len(weights) if kinds is None else list(kinds)
    n_values = sum(w.size for w in weights)
    if per_block is None or n_values <= SAMPLED_RATE_CONTROL:
        return _search(weights, budget, kinds)
    n_blocks = len(weights) // per_block
    k = max(1, math.ceil(n_values / SAMPLED_RATE_CONTROL))
    picked = [i for b in range(0, n_blocks, k) for i in range(b * per_block, (b + 1) * per_block)]
    sample = [weights[i] for i in picked]
    share = sum(w.size for w in sample) / n_values
    sampled = _search(sample, int(budget * share), [kinds[i] for i in picked])[0]
    half = min(sampled.halves)  # the weight matrices' (the other kinds' are finer)

    def code(h: int) -> tuple[QuantisedWeights, bytes]:
        q = quantise(weights, halves_for(kinds, h))
        return q, encode_payload(q)

    best = code(half)
    while len(best[1]) > budget:
        if half == 1:
            raise ValueError(f"weights do not fit in {budget} bytes even at 3 levels")
        # Bits per value grow about as log2(half): aim at the budget, 1% under it.
        aim = half * 2 ** ((budget - len(best[1])) * 8 / n_values) * 0.99
        half = max(1, min(half - 1, math.floor(aim)))
        best = code(half)
    while half < MAX_HALF:
        finer = min(MAX_HALF, math.ceil(half * 1.03))
        up = code(finer)
        if len(up[1]) > budget:
            break
        half, best = finer, up
    return best


def _search(weights: Weights, budget: int, kinds: Sequence[str]) -> tuple[QuantisedWeights, bytes]:
    """Binary search of the finest ``half`` whose payload fits (see :func:`rate_control`)."""
    lo, hi = 1, MAX_HALF
    best: tuple[QuantisedWeights, bytes] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        q = quantise(weights, halves_for(kinds, mid))
        payload = encode_payload(q)
        if len(payload) <= budget:
            best = (q, payload)
            lo = mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ValueError(f"weights do not fit in {budget} bytes even at 3 levels")
    return best
