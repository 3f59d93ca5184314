"""The engine's grid path: file = memory, the whole file at the asked ratio, refusals."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
import tifffile

from napari_inif.core import CompressionConfig, compress, fit, loads
from napari_inif.core.codec.gridfile import GridEncoded
from napari_inif.core.errors import BudgetError
from napari_inif.core.metrics.quality import psnr
from tests.conftest import data_file


def _tinc_zyx() -> np.ndarray:
    return tifffile.imread(data_file("tinc_test_ZYX.tif"))[:, 40:88, 40:88, 0]


def _two_channels(cells: np.ndarray) -> np.ndarray:
    return np.stack([cells[0], cells[3]])  # CYX, 2 x 48 x 40


CASES = {
    # name: (make array, axes, ratio, PSNR floor in dB over the data range)
    "tyx-uint16": (lambda c, n: c, "TYX", 16, 24.0),
    "zyx-uint16": (lambda c, n: _tinc_zyx(), "ZYX", 16, 24.0),
    "yx-uint8": (lambda c, n: n, "YX", 8, 24.0),
    "cyx-2-channels": (lambda c, n: _two_channels(c), "CYX", 8, 22.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_file_decodes_as_memory_at_the_asked_ratio(case, cells_tyx, nuclei_crop):
    make, axes, ratio, floor = CASES[case]
    data = make(cells_tyx, nuclei_crop)
    enc = compress(data, CompressionConfig(ratio=ratio, steps=60, architecture="grid"), axes=axes)
    assert isinstance(enc, GridEncoded)
    blob = enc.to_bytes()
    # 2.x-4.x readers refuse it by its major version, where every layout has it
    assert struct.unpack_from("<H", blob, 8) == (5,) and blob[10] == 0
    assert len(blob) == enc.nbytes
    # the whole file (container + JSON + stream) within 10% of raw / ratio; never over
    target = data.nbytes / ratio
    assert enc.nbytes <= 1.01 * target
    tolerance = 0.1 if case != "cyx-2-channels" else 0.3  # see the strict xfail below
    assert enc.nbytes >= (1 - tolerance) * target
    back = loads(blob)
    decoded = back.array()[...]
    np.testing.assert_array_equal(decoded, enc.array()[...])  # bit-identical
    assert decoded.shape == data.shape and decoded.dtype == data.dtype
    assert back.header.layout == enc.header.layout
    assert back.header.fit == enc.header.fit
    # the recorded quality is the decoded file's, and above the floor
    measured = psnr(data, decoded, float(data.max()) - float(data.min()))
    assert back.header.fit["psnr"] >= floor
    assert abs(back.header.fit["psnr"] - measured) < 0.05
    assert back.header.fit["architecture"] == "grid" and "w0" not in back.header.fit


def test_two_channel_file_within_ten_percent(cells_tyx):
    data = _two_channels(cells_tyx)
    enc = compress(data, CompressionConfig(ratio=8, steps=60, architecture="grid"), axes="CYX")
    assert enc.nbytes >= 0.9 * data.nbytes / 8


def test_each_channel_gets_its_own_latents_and_range():
    """A 3-channel Cell Painting crop (nuclei, cytoplasm, nucleoli: different content,
    ranges 684 / 1519 / 962): one latent grid a channel per level, so the field can
    spend the budget, and each channel fitted on its own range, so no channel is left
    behind.  One grid a level shared by the channels and one range for all (before)
    landed this file at 22.0x when 16x was asked, channels 28.73 / 34.92 / 30.19 dB."""
    data = tifffile.imread(data_file("bbbc022_A02_s9_crop_CYX.tif"))
    enc = compress(data, CompressionConfig(ratio=16, steps=150, architecture="grid"), axes="CYX")
    assert 0.9 * data.nbytes / 16 <= enc.nbytes <= data.nbytes / 16
    assert enc.decoder().field.code.spec.features == 3
    decoded = enc.array()[...]
    # measured 34.84 / 34.73 / 33.23 dB
    for c in range(3):
        span = float(data[c].max()) - float(data[c].min())
        assert psnr(data[c], decoded[c], span) >= 32.0, c


def test_a_dim_channel_keeps_its_detail():
    """Each channel is fitted on its own intensity range: a dim stain (the crop's nuclei
    channel divided by 8, a range of 85 beside 1519) is not left with the bright
    channel's leftovers.  Under one range for all: 37.18 dB bright, 19.58 dB dim."""
    crop = tifffile.imread(data_file("bbbc022_A02_s9_crop_CYX.tif"))
    data = np.stack([crop[1], crop[0] // 8])
    enc = compress(data, CompressionConfig(ratio=16, steps=150, architecture="grid"), axes="CYX")
    assert enc.nbytes >= 0.9 * data.nbytes / 16
    decoded = enc.array()[...]
    bright, dim = (
        psnr(data[c], decoded[c], float(data[c].max()) - float(data[c].min())) for c in (0, 1)
    )
    assert dim >= 30.0 and dim >= bright - 2.0, (bright, dim)  # measured 33.08 / 32.78


def test_progress_phases_steps_and_time_limit(cells_tyx):
    config = CompressionConfig(ratio=16, steps=50, architecture="grid")
    reports = list(_drive(fit(cells_tyx, config, axes="TYX")))
    phases = [p.phase for p in reports]
    assert phases[0] == "fit" and phases[-1] == "done" and "quantise" in phases
    fitting = [p for p in reports if p.phase == "fit"]
    assert all(p.steps <= 50 and 1 <= p.step <= p.steps for p in fitting)
    assert fitting[-1].step == fitting[-1].steps  # ran its steps
    assert all(p.eta >= 0 and np.isfinite(p.psnr) for p in reports)
    # a time limit ends a long schedule early
    t0 = time.perf_counter()
    limited = CompressionConfig(ratio=16, steps=100_000, time_limit=2.0, architecture="grid")
    enc = compress(cells_tyx, limited, axes="TYX")
    assert time.perf_counter() - t0 < 20
    assert enc.header.fit["steps"] < 100_000


def _drive(gen):
    while True:
        try:
            yield next(gen)
        except StopIteration:
            return


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"target_psnr": 30.0}, "not to a PSNR"),
        ({"device": "cuda"}, "fits on the CPU"),
    ],
)
def test_target_psnr_and_device_refused_before_any_work(cells_tyx, change, match):
    config = CompressionConfig(ratio=16, architecture="grid", **change)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        fit(cells_tyx, config, axes="TYX")  # raised by the call, before a first step
    assert time.perf_counter() - t0 < 1.0


def test_block_streamed_path_refuses_grid(cells_zarr):
    from napari_inif.core.io.source import open_source

    config = CompressionConfig(ratio=16, architecture="grid")
    with (
        open_source(cells_zarr) as source,
        pytest.raises(ValueError, match="one field over the whole image"),
    ):
        fit(source, config)


def test_unreachable_ratio_is_a_budget_error(nuclei_crop):
    config = CompressionConfig(ratio=1000, steps=10, architecture="grid")
    with pytest.raises(BudgetError, match="grid stream") as err:
        compress(nuclei_crop, config, axes="YX")
    assert 1 < err.value.max_ratio < 1000
