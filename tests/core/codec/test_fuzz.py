"""Hostile and mutated ``.inif`` files: only ``InifFormatError``, bounded time and memory.

The mutation generator is ``benchmarks/fuzz.py`` (the long run); here a few hundred
seeded cases plus the reproducers of issue 17, each built in the test.
"""

from __future__ import annotations

import importlib.util
import json
import lzma
import math
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from napari_inif.core.codec.container import header_bytes, pack, unpack
from napari_inif.core.codec.encoded import BYTES_PER_WEIGHT, Encoded, load
from napari_inif.core.errors import DecodeBudgetError, InifFormatError

_FAST = {"id": lzma.FILTER_LZMA2, "preset": 1}
_FUZZ = Path(__file__).resolve().parents[3] / "benchmarks" / "fuzz.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("inif_fuzz", _FUZZ)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _header(**changes) -> dict:
    """The JSON header of a small valid 2D file, with ``changes``."""
    obj = {
        "shape": [24, 20],
        "axes": "YX",
        "dtype": "uint8",
        "lo": [0.0],
        "hi": [255.0],
        "grid": [1, 1],
        "depth": 3,
        "widths": [8],
        "half": 15,
        "first_half": 120,
        "bias_half": 60,
        "margin": 0,
        "scale": None,
        "unit": None,
        "prior": None,
        "fit": {},
        "metadata": {},
    }
    obj.update(changes)
    return obj


def _zeros_payload(n_tensors: int, n_values: int, body: bytes | None = None) -> bytes:
    """A valid payload of all-zero scales and integers (compresses to almost nothing),
    or of ``body``; coded fast (LZMA2 preset 1: any dictionary up to the reader's)."""
    body = bytes(2 * n_tensors + 2 * n_values) if body is None else body
    return lzma.compress(body, format=lzma.FORMAT_RAW, filters=[_FAST])


def test_fuzz_cases_raise_only_inif_format_error(fuzz):
    result = fuzz.run_cases(0, 250, seed=17)
    assert result["others"] == [], result["others"][0][2]
    assert result["slow"] == []
    # The generator reaches both ends: files that decode and files that are refused.
    assert result["outcomes"]["ok"] >= 3
    assert result["outcomes"]["format"] >= 150


def test_seed_files_decode(fuzz):
    for data in fuzz.seed_files():
        assert fuzz.exercise(data) == "ok"


def test_million_blocks_in_a_small_file_refused_fast():
    n = 1 << 20  # 1024 x 1024 blocks of width 1: 5 weights each
    head = _header(shape=[1024, 1024], grid=[1024, 1024], depth=2, widths=[1] * n)
    data = pack(head, _zeros_payload(4 * n, 5 * n))
    assert len(data) < 200_000
    t0 = time.perf_counter()
    with pytest.raises(InifFormatError, match="blocks"):
        Encoded.from_bytes(data)
    assert time.perf_counter() - t0 < 3.0  # was 59 s and 1.6 GB


def test_huge_declared_image_refuses_whole_decode_but_decodes_a_region():
    # 2^48 voxels declared in a file of a few hundred bytes (numpy asked for 1 PiB).
    head = _header(shape=[1 << 24, 1 << 24])
    n_values = 2 * 8 + 8 + 8 * 8 + 8 + 8 * 1 + 1
    data = pack(head, _zeros_payload(6, n_values))
    assert len(data) < 600
    arr = Encoded.from_bytes(data).array()
    with pytest.raises(DecodeBudgetError, match="region"):
        np.asarray(arr)
    with pytest.raises(DecodeBudgetError):
        arr[:5]  # five rows of 2^24 pixels: 1.25 GiB at 16 bytes per value
    region = arr[:4, :5]
    assert region.shape == (4, 5) and region.dtype == np.uint8


def test_weight_bomb_beyond_budget_refused_before_allocation():
    # 1 block, depth 32, width 4096: ~5e8 weights, within 64 weights per payload byte
    # of a ~8 MB payload, i.e. 6 GB to decode; refused from the header alone.
    head = _header(depth=32, widths=[4096])
    payload = bytes(8 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(DecodeBudgetError, match="budget"):
            Encoded._from_parts(head, payload, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_accepted_payload_stays_within_bytes_per_weight():
    # 2 M weights in one block: the reader's peak is what the budget assumes per weight.
    head = _header(depth=3, widths=[1400])
    from napari_inif.core.codec.header import FieldHeader

    n = FieldHeader.from_json(head).n_params
    low = np.random.default_rng(0).integers(0, 31, n, dtype=np.uint8)  # zigzag codes < 31
    payload = _zeros_payload(6, n, bytes(12) + low.tobytes() + bytes(n))
    tracemalloc.start()
    try:
        enc = Encoded._from_parts(head, payload, None)
        enc.decoder()  # dequantised float32 weights
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n > 1_500_000
    assert peak <= BYTES_PER_WEIGHT * n


def test_decode_budget_is_settable(tmp_path, monkeypatch):
    head = _header(shape=[256, 256])
    path = tmp_path / "a.inif"
    path.write_bytes(pack(head, _zeros_payload(6, 2 * 8 + 8 + 8 * 8 + 8 + 8 + 1)))
    assert np.asarray(load(path).array()).shape == (256, 256)  # 1 MiB of values: fine
    with pytest.raises(DecodeBudgetError, match="INIF_DECODE_BUDGET"):
        np.asarray(load(path, budget="256K").array())
    monkeypatch.setenv("INIF_DECODE_BUDGET", "100000")
    with pytest.raises(DecodeBudgetError):
        np.asarray(load(path).array())
    assert load(path).array()[:10, :10].shape == (10, 10)
    with pytest.raises(DecodeBudgetError, match="weights"):
        load(path, budget=1000)  # even the weights do not fit


def test_unknown_prior_codec_is_a_format_error():
    section = struct.pack("<2I", 1, 3) + b"abc"
    prior = {"codec": "no-such-codec", "tile": [24, 20], "planes": 1, "bits": 8}
    head = _header(prior={**prior, "scale": 1.0, "nbytes": len(section)})
    payload = _zeros_payload(6, 2 * 8 + 8 + 8 * 8 + 8 + 8 + 1)
    with pytest.raises(InifFormatError, match="no-such-codec"):
        Encoded.from_bytes(pack(head, section + payload)).array()[:2, :2]


def test_trailing_data_after_the_compressed_streams_is_refused():
    payload = _zeros_payload(6, 2 * 8 + 8 + 8 * 8 + 8 + 8 + 1)
    good = pack(_header(), payload)
    Encoded.from_bytes(good)
    with pytest.raises(InifFormatError, match="trailing"):
        Encoded.from_bytes(pack(_header(), payload + b"\x00junk"))
    head = header_bytes(_header()) + b"junk"
    body = struct.pack("<8sHHI", good[:8], 2, 0, len(head)) + head
    body += struct.pack("<I", len(payload)) + payload
    with pytest.raises(InifFormatError, match="trailing"):
        Encoded.from_bytes(body + struct.pack("<I", zlib.crc32(body)))


def test_non_finite_metrics_are_stored_as_json_safe_strings():
    head = _header(fit={"psnr": math.inf, "ssim": 1.0})
    from napari_inif.core.codec.header import FieldHeader

    header = FieldHeader.from_json(head)
    stored = header.to_json()
    assert stored["fit"]["psnr"] == "inf"
    json.dumps(stored, allow_nan=False)  # what the container writes
    data = pack(stored, _zeros_payload(6, 2 * 8 + 8 + 8 * 8 + 8 + 8 + 1))
    assert unpack(data)[0]["fit"]["psnr"] == "inf"
    assert Encoded.from_bytes(data).header.fit["psnr"] == math.inf


@pytest.mark.parametrize("axes", ["\x1b[", "Y\ud800", "yx", "Y1"])
def test_axes_must_be_upper_case_letters(axes):
    head = _header(axes=axes)
    with pytest.raises(InifFormatError):
        Encoded._from_parts(head, _zeros_payload(6, 105), None)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1G", 1 << 30), ("512MiB", 512 << 20), (" 64k ", 64 << 10), ("1e9", 10**9), (4096, 4096)],
)
def test_decode_budget_values(text, value, monkeypatch):
    from napari_inif.core.codec.decode import DEFAULT_DECODE_BUDGET, decode_budget

    assert decode_budget(text) == value
    monkeypatch.setenv("INIF_DECODE_BUDGET", str(text))
    assert decode_budget() == value
    monkeypatch.delenv("INIF_DECODE_BUDGET")
    assert decode_budget() == DEFAULT_DECODE_BUDGET == 1 << 30
    for bad in ("lots", "0", "-5G"):
        with pytest.raises(ValueError, match="budget"):
            decode_budget(bad)


def test_fuzz_mutations_of_a_grid_file_raise_only_inif_format_error(fuzz, grid_encoded):
    """The generator's mutations (a grid file keeps its 5.0 container) read with loads()."""
    import random

    rng = random.Random(14)
    good = grid_encoded.to_bytes()
    assert fuzz.exercise(good) == "ok"
    outcomes = {"ok": 0, "format": 0}
    for _ in range(120):
        outcomes[fuzz.exercise(fuzz.mutate(good, rng))] += 1  # anything else raises here
    assert outcomes["format"] >= 60
