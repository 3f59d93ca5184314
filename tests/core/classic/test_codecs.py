"""Classic codecs: round trips, the size search, and decoding untrusted codestreams."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_inif
from napari_inif.core.classic import (
    IntegerMap,
    from_ints,
    get_codec,
    match_size,
    mosaic,
    search_quality,
    to_ints,
    unmosaic,
)
from napari_inif.core.classic.hevc import run_capped
from napari_inif.core.errors import InifFormatError
from napari_inif.core.registry import CODECS

SAMPLE = Path(napari_inif.__file__).parent / "_data" / "cancer_cells_TYX.tif"
NAMES = ["jpegxl", "jpeg2k", "htj2k", "avif", "hevc"]


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    """The bundled 16 x 130 x 130 uint16 cancer-cell stack, first 4 planes, odd crop."""
    import tifffile

    return tifffile.imread(SAMPLE)[:4, 10:75, 3:100]  # 65 x 97


def _usable(name: str):
    codec = CODECS[name]
    if not codec.available():
        pytest.skip(f"{name}: {codec.unavailable()}")
    return codec


def _block(cells: np.ndarray, bits: int, planes: int) -> np.ndarray:
    lo, hi = float(cells.min()), float(cells.max())
    return to_ints((cells[:planes] - lo) / (hi - lo) * 2 - 1, bits)


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(float) - b.astype(float)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("depth", ["8-bit", "16-bit"])
def test_round_trip_at_each_depth(name, depth, cells):
    codec = _usable(name)
    bits = codec.bits(np.uint8 if depth == "8-bit" else np.uint16)
    assert bits == (8 if depth == "8-bit" else {"avif": 12, "hevc": 12}.get(name, 16))
    block = _block(cells, bits, 3 if codec.video else 1)
    peak = (1 << bits) - 1
    good, poor = codec.encode(block, 0.7), codec.encode(block, 0.2)
    out = codec.decode(good, block.shape, bits)
    assert out.shape == block.shape and out.dtype == block.dtype
    assert _psnr(block, out, peak) > 37  # the knob's upper half is high quality
    assert len(poor) < min(len(good), block.nbytes / 8)
    assert 20 < _psnr(block, codec.decode(poor, block.shape, bits), peak) < _psnr(block, out, peak)


@pytest.mark.parametrize("name", NAMES)
def test_size_search_lands_under_the_budget(name, cells):
    codec = _usable(name)
    stack = cells[:3]
    budget = stack.nbytes // 24
    for layout in ("plane", "mosaic"):
        coded = match_size(codec, stack, budget, layout=layout)
        assert coded is not None
        assert 0.8 * budget <= coded.nbytes <= budget, (layout, coded.nbytes, budget)
        assert coded.decoded.shape == stack.shape and coded.decoded.dtype == stack.dtype
        assert _psnr(stack, coded.decoded, float(stack.max()) - float(stack.min())) > 24
    assert match_size(codec, stack, 10) is None  # nothing fits in 10 bytes


def test_search_takes_the_largest_size_under_the_budget():
    calls = []

    def size_at(q: float) -> int:
        calls.append(q)
        return int(1000 + 9000 * q)

    q = search_quality(size_at, 5000)
    assert 4975 <= size_at(q) <= 5000  # within 0.5 % of the budget
    assert search_quality(size_at, 999) is None
    assert search_quality(size_at, 20000) == 1.0
    # A discrete knob: no setting is tried twice.
    calls.clear()
    q = search_quality(size_at, 5000, snap=lambda v: round(v * 9) / 9)
    assert q == pytest.approx(4 / 9) and len(calls) == len(set(calls))


@pytest.mark.parametrize("name", NAMES)
def test_header_declaring_another_shape_is_a_format_error(name, cells):
    codec = _usable(name)
    block = _block(cells, 8, 2 if codec.video else 1)
    data = codec.encode(block, 0.5)
    planes, h, w = block.shape
    with pytest.raises(InifFormatError, match=rf"declares {h}x{w} pixels.*tile of {w}x{h}"):
        codec.decode(data, (planes, w, h), 8)
    with pytest.raises(InifFormatError, match="no readable header"):
        codec.decode(b"\x00" * 64, block.shape, 8)
    with pytest.raises(InifFormatError, match=r"does not decode|no readable header"):
        codec.decode(data[:60], block.shape, 8)  # a header and hardly anything after it


def test_hevc_frame_count_is_bounded(cells):
    codec = _usable("hevc")
    block = _block(cells, 12, 3)
    data = codec.encode(block, 0.5)
    with pytest.raises(InifFormatError, match="not the"):
        codec.decode(data, (4, *block.shape[1:]), 12)  # one frame short
    with pytest.raises(InifFormatError, match="more than the"):
        codec.decode(data, (2, *block.shape[1:]), 12)  # one frame too many: cap


def test_capped_subprocess_read_and_timeout():
    talk = [sys.executable, "-c", "import sys; sys.stdout.write('x' * 100000)"]
    assert run_capped(talk, b"", 100000, 30) == b"x" * 100000
    with pytest.raises(RuntimeError, match="more than the 1000 bytes"):
        run_capped(talk, b"", 1000, 30)
    with pytest.raises(RuntimeError, match="timeout"):
        run_capped([sys.executable, "-c", "import time; time.sleep(30)"], b"", 10, 0.5)
    with pytest.raises(RuntimeError, match=r"failed \(3\): boom"):
        run_capped(
            [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"], b"", 10, 30
        )


def test_unavailable_codec_says_what_to_install(cells):
    gone = dataclasses.replace(CODECS["hevc"], check=lambda: "ffmpeg is not installed")
    with pytest.raises(
        InifFormatError, match="this file needs the hevc codec: install ffmpeg with libx265"
    ):
        gone.decode(b"\x00\x00\x01", (1, 8, 8), 8)
    gone = dataclasses.replace(CODECS["jpegxl"], check=lambda: "imagecodecs is not installed")
    with pytest.raises(InifFormatError, match="needs the jpegxl codec: install imagecodecs"):
        gone.decode(b"", (1, 8, 8), 8)


def test_get_codec_names_the_usable_ones(monkeypatch):
    with pytest.raises(ValueError, match=r"'webp2' is unknown; available codecs: .*jpeg2k"):
        get_codec("webp2")
    monkeypatch.setitem(CODECS, "avif", dataclasses.replace(CODECS["avif"], check=lambda: "no"))
    with pytest.raises(ValueError, match=r"codec prior 'avif' is not available here \(no\)"):
        get_codec("avif", role="codec prior")


def test_listing_codecs_imports_no_codec_library_and_no_torch():
    code = (
        "import sys\n"
        "import napari_inif.core.classic, napari_inif.core.hybrid.prior\n"
        "from napari_inif.core.registry import CODECS\n"
        "print(CODECS.names(), CODECS.describe('avif'))\n"
        "assert 'imagecodecs' not in sys.modules and 'torch' not in sys.modules\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert "['jpegxl', 'jpeg2k', 'htj2k', 'avif', 'hevc'] AVIF 4:0:0" in out


def test_integer_maps_and_mosaic_round_trip():
    data = np.random.default_rng(0).integers(100, 3000, (5, 7, 9)).astype(np.uint16)
    imap = IntegerMap.for_data(data, 12)
    assert imap.step == 1.0 and imap.bits == 12  # the range fits in 12 bits: lossless
    assert np.array_equal(imap.inverse(imap.forward(data), data.dtype), data)
    wide = data.astype(np.float32) * 20
    fmap = IntegerMap.for_data(wide, 12)
    back = fmap.inverse(fmap.forward(wide), wide.dtype)
    assert back.dtype == np.float32 and np.abs(back - wide).max() <= fmap.step
    assert np.array_equal(unmosaic(mosaic(data), data.shape), data)
    norm = np.linspace(-1, 1, 4096, dtype=np.float32)
    ints = to_ints(norm, 12)
    assert ints.dtype == np.uint16 and ints.min() == 0 and ints.max() == 4095
    assert np.abs(from_ints(ints, 12) - norm).max() <= 1 / 4095
