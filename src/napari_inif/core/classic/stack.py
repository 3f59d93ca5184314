"""Coding a whole ``(planes, height, width)`` stack of data under a byte budget.

This is what a codec is compared on: the benchmark's baselines.  Data are mapped to the
codec's integers by :class:`~.intmap.IntegerMap`; a 2D codec codes the stack plane by
plane (``"plane"``: one shared setting, one codestream per plane) or as one near-square
mosaic of its planes (``"mosaic"``); a video codec codes it as one video.

Every byte a decoder would need is counted: the codestreams, a 4-byte length per plane
codestream, and 8 bytes for the intensity map (``lo``, ``step`` as float32).
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

from napari_inif.core.classic.codec import ClassicCodec
from napari_inif.core.classic.intmap import IntegerMap
from napari_inif.core.classic.search import search_quality

__all__ = ["CodedStack", "decode_stack", "encode_stack", "match_size", "mosaic", "unmosaic"]

SIDE_BYTES = 8  # lo and step of the intensity map, float32
LENGTH_BYTES = 4  # length of each plane codestream in a plane-by-plane stack


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


def encode_stack(
    codec: ClassicCodec, q: np.ndarray, layout: str, quality: float
) -> tuple[int, list[bytes]]:
    """Code the integer stack ``q`` at ``quality``: ``(bytes counted, codestreams)``."""
    if codec.video:
        streams = [codec.encode(q, quality)]
    elif layout == "mosaic" and q.shape[0] > 1:
        streams = [codec.encode(mosaic(q)[None], quality)]
    else:
        streams = [codec.encode(plane[None], quality) for plane in q]
    framing = LENGTH_BYTES * len(streams) if len(streams) > 1 else 0
    return sum(map(len, streams)) + framing + SIDE_BYTES, streams


def decode_stack(
    codec: ClassicCodec, streams: list[bytes], shape: tuple[int, int, int], layout: str, bits: int
) -> np.ndarray:
    """Integer stack of ``shape`` from the codestreams of :func:`encode_stack`."""
    n, h, w = shape
    if codec.video:
        return codec.decode(streams[0], shape, bits)
    if layout == "mosaic" and n > 1:
        rows, cols = _grid(n, h, w)
        return unmosaic(codec.decode(streams[0], (1, rows * h, cols * w), bits)[0], shape)
    return np.concatenate([codec.decode(s, (1, h, w), bits) for s in streams])


class CodedStack(NamedTuple):
    """A stack coded by a classic codec at one setting."""

    nbytes: int  # everything counted
    value: float  # the codec's native setting
    decoded: np.ndarray  # (n, h, w), the data's dtype
    encode_s: float  # one encode at this setting (the search not counted)
    decode_s: float


def match_size(
    codec: ClassicCodec, stack: np.ndarray, budget: int, *, layout: str = "plane"
) -> CodedStack | None:
    """Code ``stack`` ``(n, h, w)`` at the best setting whose total size is <= ``budget``.

    Returns ``None`` when even the lowest setting is over the budget.
    """
    if stack.ndim != 3:
        raise ValueError(f"expected a (planes, height, width) stack, got {stack.shape}")
    if layout not in ("plane", "mosaic"):
        raise ValueError(f"layout is plane or mosaic, got {layout!r}")
    imap = IntegerMap.for_data(stack, codec.high_bits)
    q = imap.forward(stack)
    sizes: dict[float, int] = {}

    def size_at(quality: float) -> int:
        if quality not in sizes:
            sizes[quality] = encode_stack(codec, q, layout, quality)[0]
        return sizes[quality]

    best = search_quality(size_at, budget, snap=codec.snap)
    if best is None:
        return None
    start = time.perf_counter()
    nbytes, streams = encode_stack(codec, q, layout, best)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    n, h, w = stack.shape
    decoded = decode_stack(codec, streams, (n, h, w), layout, imap.bits)
    decode_s = time.perf_counter() - start
    value = codec.native(best)
    return CodedStack(nbytes, value, imap.inverse(decoded, stack.dtype), encode_s, decode_s)
