import numpy as np
import pytest

from napari_inif.core.metrics.quality import max_abs_error, psnr, quality, ssim


def test_psnr_known_values():
    a = np.zeros((10, 10), np.uint16)
    a[0, 0] = 1000  # data range 1000
    b = a.copy()
    b[5, 5] = 10  # mse = 100 / 100 = 1
    assert psnr(a, b) == pytest.approx(60.0)
    assert psnr(a, b, data_range=65535) == pytest.approx(20 * np.log10(65535))
    assert psnr(a, a) == float("inf")


def test_ssim_is_one_for_identical_and_lower_for_noise(nuclei_crop):
    noisy = np.clip(nuclei_crop + np.random.default_rng(0).normal(0, 10, nuclei_crop.shape), 0, 255)
    assert ssim(nuclei_crop, nuclei_crop) == pytest.approx(1.0)
    assert ssim(nuclei_crop, noisy) < 0.9


def test_quality_reports_both_psnr_ranges(cells_tyx):
    decoded = cells_tyx.astype(np.int64) + 100
    q = quality(cells_tyx, decoded)
    assert q.max_error == 100 == max_abs_error(cells_tyx, decoded)
    assert q.psnr_dtype > q.psnr  # dtype range flatters data that uses part of it


def test_slab_accumulator_equals_the_whole_array_metrics(cells_tyx):
    from napari_inif.core.metrics.quality import QualityAccumulator, quality

    rng = np.random.default_rng(0)
    noisy = np.clip(cells_tyx + rng.normal(0, 300, cells_tyx.shape), 0, 65535).astype(np.uint16)
    whole = quality(cells_tyx, noisy, plane_axes=2)
    acc = QualityAccumulator(float(cells_tyx.max()) - float(cells_tyx.min()), cells_tyx.dtype)
    for s0 in range(0, len(cells_tyx), 4):  # uneven slabs: 4 + 2 planes
        acc.add(cells_tyx[s0 : s0 + 4], noisy[s0 : s0 + 4])
    got = acc.result()
    assert got.psnr == pytest.approx(whole.psnr, abs=1e-9)
    assert got.psnr_dtype == pytest.approx(whole.psnr_dtype, abs=1e-9)
    assert got.ssim == pytest.approx(whole.ssim, abs=1e-9)
    assert got.max_error == whole.max_error


def test_fit_measures_a_stack_slab_by_slab_with_the_same_numbers(cells_tyx, monkeypatch):
    import importlib

    from napari_inif.core import CompressionConfig, compress
    from napari_inif.core.metrics.quality import quality

    fit_module = importlib.import_module("napari_inif.core.engine.local")
    monkeypatch.setattr(fit_module, "QUALITY_SLAB_VOXELS", 2 * 48 * 40)  # 2-plane slabs
    stack = np.stack([cells_tyx[:, :, :20], cells_tyx[:, :, 20:]], axis=1)  # TCYX, 2 channels
    encoded = compress(stack, CompressionConfig(ratio=8, steps=20), axes="TCYX")
    decoded = encoded.array()[...]
    expected = quality(np.moveaxis(stack, 1, 0), np.moveaxis(decoded, 1, 0), plane_axes=2)
    fit = encoded.header.fit
    assert fit["psnr"] == pytest.approx(expected.psnr, abs=1e-3)
    assert fit["ssim"] == pytest.approx(expected.ssim, abs=1e-3)
    assert fit["max_error"] == pytest.approx(expected.max_error, abs=1e-3)
