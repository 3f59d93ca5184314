"""Fuzz the ``.inif`` reader with mutated files; print what happened.

Every case is a file made from a small valid seed (built here, no fitting) by one of:
byte flips, truncation and extension (caught by the checksum or the sizes), byte flips
with the checksum recomputed, *structured* header mutations re-packed with a valid
checksum (a key swapped for an interesting value: huge, negative, wrong type, escape
sequences, lone surrogates, ...), payload mutations and bombs re-packed, and trailing
data after the compressed streams.  Each file goes through the whole reader:
``Encoded.from_bytes`` -> ``array()`` -> a region -> a plane -> the whole array ->
``sample()``.  The only exception allowed is ``InifFormatError`` (and its subclass
``DecodeBudgetError``).

Usage::

    python benchmarks/fuzz.py --cases 100000 --workers 2      # counts per outcome
    python benchmarks/fuzz.py --seconds 600                   # as many as fit

Prints: inputs, outcomes (ok / InifFormatError / other), cases over 10 s, and the peak
RSS growth of a case (Linux: ``VmHWM`` reset before every case through
``/proc/self/clear_refs``), the largest and the 99th percentile, against the decode budget.
The test suite (``tests/core/codec/test_fuzz.py``) runs a few hundred cases of the same
generator.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import random
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from typing import Any

import numpy as np

from napari_inif.core.codec.container import MAGIC, header_bytes, pack, unpack_version
from napari_inif.core.codec.encoded import Encoded, loads
from napari_inif.core.codec.gridheader import from_binary, to_binary
from napari_inif.core.codec.header import FieldHeader
from napari_inif.core.codec.quant import _FILTERS, encode_payload, halves_for, quantise
from napari_inif.core.errors import InifFormatError
from napari_inif.core.layout import Layout

HANG_SECONDS = 10.0


# ----------------------------------------------------------------------------- seeds
def make_file(
    shape: tuple[int, ...],
    axes: str,
    dtype: str,
    grid: tuple[int, ...],
    depth: int,
    width: int,
    *,
    margin: int = 0,
    seed: int = 0,
    fit: dict[str, Any] | None = None,
) -> bytes:
    """A valid ``.inif`` file with random (seeded) weights: what a fit would store."""
    layout = Layout(shape, axes, dtype)
    n_blocks = math.prod(grid)
    c = layout.channels
    header = FieldHeader(
        layout,
        (0.0,) * c,
        (255.0,) * c,
        grid,
        depth,
        (width,) * n_blocks,
        margin=margin,
        fit=fit or {"psnr": 30.0, "steps": 40},
        metadata={"source": "fuzz"},
    )
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.5, s).astype(np.float32) for s in header.tensor_shapes()]
    q = quantise(weights, halves_for(header.tensor_kinds(), 15))
    return Encoded(header.with_halves(q.halves), q, encode_payload(q)).to_bytes()


def seed_files() -> list[bytes]:
    """A few small valid files: 2D, a multi-block stack with margin, channels, float."""
    return [
        make_file((24, 20), "YX", "uint8", (1, 1), 3, 8),
        make_file((4, 20, 18), "ZYX", "uint16", (2, 2, 1), 3, 8, margin=2, seed=1),
        make_file((2, 16, 16), "CYX", "float32", (1, 2), 4, 8, seed=2),
        make_file((3, 1, 12, 14), "TZYX", "uint8", (3, 1, 1), 2, 8, seed=3),
    ]


# ----------------------------------------------------------------------------- mutations
INTERESTING: list[Any] = [
    0,
    -1,
    1,
    2,
    255,
    4096,
    4097,
    32767,
    32768,
    1 << 20,
    (1 << 31) - 1,
    1 << 31,
    1 << 48,
    (1 << 63) - 1,
    1 << 64,
    -(1 << 63),
    0.5,
    -0.0,
    1e308,
    1e-308,
    True,
    False,
    None,
    "",
    "YX",
    "ZYX",
    "\x1b[2J\x1b[31m",
    "\ud800",
    "uint64",
    "float64",
    [],
    [0],
    [1, 1],
    [1 << 24, 1 << 24],
    [1 << 20, 1 << 20, 1 << 8],
    [-1, 5],
    {},
    {"codec": "nope"},
]


def _repack_raw(head: bytes, body: bytes, version: tuple[int, int] = (2, 0)) -> bytes:
    """A container around already deflated ``head``, with a valid checksum."""
    if version[0] >= 5:  # the compact layout of grid files
        return pack(head, body, version)
    data = b"".join(
        [
            struct.pack("<8sHHI", MAGIC, *version, len(head)),
            head,
            struct.pack("<I", len(body)),
            body,
        ]
    )
    return data + struct.pack("<I", zlib.crc32(data))


def _mutate_value(value: Any, rng: random.Random) -> Any:
    if isinstance(value, list) and value and rng.random() < 0.6:
        out = list(value)
        op = rng.randrange(4)
        if op == 0:
            out[rng.randrange(len(out))] = rng.choice(INTERESTING)
        elif op == 1:
            out.append(rng.choice(out))
        elif op == 2:
            out.pop(rng.randrange(len(out)))
        else:
            k = rng.choice([2, 16, 1 << 10])
            out = [v * k if isinstance(v, int) and not isinstance(v, bool) else v for v in out]
        return out
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
        return value + rng.choice([-2, -1, 1, 2, 1 << 16, -(1 << 16)])
    return rng.choice(INTERESTING)


def mutate_header(obj: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One to three keys of a header object changed (or dropped, or added)."""
    obj = json.loads(json.dumps(obj))
    for _ in range(rng.randint(1, 3)):
        keys = sorted(obj)
        roll = rng.random()
        if roll < 0.08:
            obj.pop(rng.choice(keys), None)
        elif roll < 0.12:
            obj[rng.choice(["extra", "prior", "fit"])] = rng.choice(INTERESTING)
        elif roll < 0.2 and all(  # consistent grid bomb
            isinstance(obj.get(k), list) and obj[k] for k in ("widths", "grid", "shape")
        ):
            k = rng.choice([2, 4, 64, 1024])
            grid, shape = obj["grid"], obj["shape"]
            obj["grid"] = [min(n * k, 1 << 20) if isinstance(n, int) else n for n in grid]
            obj["shape"] = [n * k if isinstance(n, int) and n > 1 else n for n in shape]
            n = math.prod(v if isinstance(v, int) else 1 for v in obj["grid"])
            obj["widths"] = [obj["widths"][0]] * max(1, min(n, 1 << 21))
        else:
            key = rng.choice(keys)
            obj[key] = _mutate_value(obj[key], rng)
    return obj


_BOMBS: dict[int, bytes] = {}


def _bomb(n: int) -> bytes:
    """A valid LZMA stream of ``n`` zero bytes (made once per size)."""
    if n not in _BOMBS:
        _BOMBS[n] = lzma.compress(bytes(n), format=lzma.FORMAT_RAW, filters=_FILTERS)
    return _BOMBS[n]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One mutated file from a valid one."""
    kind = rng.random()
    if kind < 0.15:  # raw byte flips (the checksum catches them)
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind < 0.2:  # truncated or extended
        cut = rng.randrange(len(data) + 64)
        return data[:cut] if cut < len(data) else data + os.urandom(cut - len(data))
    version, header, body = unpack_version(data)  # a grid file (3.x-5.x) stays one
    if isinstance(header, bytes):  # a binary grid header (formats 4, 5)
        return _mutate_binary(header, body, version, kind, rng)
    if kind < 0.65:  # structured header mutation, valid checksum
        try:
            head = header_bytes(mutate_header(header, rng))
        except (ValueError, TypeError, RecursionError):
            head = header_bytes(header)
        return _repack_raw(head, body, version)
    if kind < 0.75:  # payload byte flips, valid checksum
        return pack(header, _flip(body, rng), version)
    if kind < 0.82:  # payload bomb: a long run of zeros claims a big network
        n = rng.choice([1 << 16, 1 << 20, 1 << 24])
        if "widths" in header:  # a SIREN file; a grid file gets the bytes as its stream
            header = dict(header, depth=rng.choice([2, 8, 32]))
            header["widths"] = [rng.choice([8, 512, 4096])] * len(header["widths"])
        return pack(header, _bomb(n), version)
    if kind < 0.88:  # trailing data after the LZMA stream or the DEFLATE header
        junk = os.urandom(rng.randint(1, 16))
        if rng.random() < 0.5:
            return pack(header, body + junk, version)
        return _repack_raw(header_bytes(header) + junk, body, version)
    if kind < 0.94:  # header that is not a JSON object, or not UTF-8, or deep
        return _repack_raw(_deflated(rng.choice(_NOT_HEADERS)), body, version)
    # byte flips in the deflated header with a valid checksum
    return _repack_raw(_flip(header_bytes(header), rng), body, version)


#: Deflated texts that are no header object.
_NOT_HEADERS = [b"[]", b"1", b'"x"', b"\xff\xfe", b"[" * 100_000, b'{"shape":' * 2000, b"{}"]


def _deflated(raw: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(raw) + c.flush()


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _mutate_binary(
    head: bytes, body: bytes, version: tuple[int, int], kind: float, rng: random.Random
) -> bytes:
    """A mutation of a format 4 or 5 grid file (binary header, grid stream), valid
    checksum."""
    major = version[0]
    if kind < 0.55:  # structured: the header's fields and JSON part changed
        try:
            new = to_binary(mutate_header(from_binary(head, major=major), rng), major=major)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError, struct.error):
            new = head
        return _repack_raw(new, body, version)
    if kind < 0.65:  # header byte flips
        return _repack_raw(_flip(head, rng), body, version)
    if kind < 0.75:  # payload byte flips
        return _repack_raw(head, _flip(body, rng), version)
    if kind < 0.82:  # the stream replaced by a long run of zeros
        return _repack_raw(head, _bomb(rng.choice([1 << 16, 1 << 20, 1 << 24])), version)
    if kind < 0.88:  # trailing bytes after the header's fields, or after the stream
        junk = os.urandom(rng.randint(1, 16))
        if rng.random() < 0.5:
            return _repack_raw(head, body + junk, version)
        return _repack_raw(head + junk, body, version)
    # hand-made headers: a JSON part that is no object, huge or zero axes, a huge shape
    n_axes = head[1] & 7 if major >= 5 else head[1]
    fields = head[: 2 + n_axes]
    hostile = rng.choice(
        [
            bytes([0x40]) + fields[1:] + b"\x00" + _deflated(rng.choice(_NOT_HEADERS)),
            bytes([0x40]) + fields[1:] + b"\x00" + _deflated(b'{"k":"x"}'),
            bytes([0, 0]),
            bytes([0, 200]) + b"Y" * 200,
            fields + b"\xff" * 12,
            fields + b"\xff\xff\xff\xff\x0f" * n_axes,
            fields,
        ]
    )
    return _repack_raw(hostile, body, version)


# ----------------------------------------------------------------------------- running
def exercise(data: bytes) -> str:
    """Read ``data`` the way a user would; ``"ok"`` or ``"format"`` (InifFormatError)."""
    try:
        enc = loads(data)  # either field kind
        arr = enc.array()
        box = tuple(slice(0, min(n, 5)) for n in arr.shape)
        arr[box]
        arr[(0,) * max(arr.ndim - 2, 0)]
        np.asarray(arr)
        n_cols = len(arr.shape) - (arr.layout.channel_axis is not None)
        arr.sample(np.full((3, n_cols), 0.5))
    except InifFormatError:
        return "format"
    return "ok"


def _reset_peak() -> int | None:
    """Reset the peak RSS of this process (Linux), returning the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status("VmRSS")
    except OSError:
        return None


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def run_cases(start: int, count: int, seed: int, deadline: float | None = None) -> dict:
    """Run cases ``start .. start + count`` (case ``i`` is seeded by ``(seed, i)``)."""
    seeds = seed_files()
    outcomes: Counter[str] = Counter()
    slow, peaks, others = [], [], []
    for i in range(start, start + count):
        if deadline is not None and time.monotonic() > deadline:
            break
        rng = random.Random(seed * 1_000_003 + i)
        data = mutate(rng.choice(seeds), rng)
        before = _reset_peak()
        t0 = time.monotonic()
        try:
            outcome = exercise(data)
        except Exception as exc:  # the bug class this harness hunts
            outcome = "other"
            others.append((i, f"{type(exc).__name__}: {exc}"[:300], traceback.format_exc()))
        seconds = time.monotonic() - t0
        if before is not None:
            peaks.append(max(0, _status("VmHWM") - before))
        if seconds > HANG_SECONDS:
            slow.append((i, round(seconds, 1)))
        outcomes[outcome] += 1
    return {"outcomes": outcomes, "slow": slow, "peaks": peaks, "others": others}


def _worker(args: tuple[int, int, int, float | None]) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    return run_cases(*args)


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer; exit status 1 if any case raised something else or hung."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=100_000)
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=500, help="cases per worker task")
    args = p.parse_args(argv)
    from napari_inif.core.codec.decode import decode_budget

    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    tasks = [
        (s, min(args.chunk, args.cases - s), args.seed, deadline)
        for s in range(0, args.cases, args.chunk)
    ]
    t0 = time.monotonic()
    if args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=20) as pool:
            parts = pool.map(_worker, tasks, chunksize=1)
    else:
        parts = [_worker(t) for t in tasks]
    seconds = time.monotonic() - t0
    outcomes: Counter[str] = Counter()
    slow, peaks, others = [], [], []
    for part in parts:
        outcomes.update(part["outcomes"])
        slow += part["slow"]
        peaks += part["peaks"]
        others += part["others"]
    n = sum(outcomes.values())
    budget = decode_budget()
    print(f"inputs              {n} in {seconds:.0f} s ({n / max(seconds, 1e-9):.0f}/s)")
    print(f"ok (decoded)        {outcomes['ok']}")
    print(f"InifFormatError     {outcomes['format']}")
    print(f"other exceptions    {outcomes['other']}")
    print(f"over {HANG_SECONDS:.0f} s           {len(slow)} {slow[:10]}")
    if peaks:
        arr = np.asarray(peaks, np.float64) / 2**20
        print(
            f"peak RSS growth     max {arr.max():.1f} MiB, p99 {np.percentile(arr, 99):.1f} MiB, "
            f"median {np.median(arr):.2f} MiB (decode budget {budget / 2**20:.0f} MiB)"
        )
    for i, line, tb in others[:10]:
        print(f"case {i}: {line}\n{tb}", file=sys.stderr)
    return 1 if others or slow else 0


if __name__ == "__main__":
    raise SystemExit(main())
