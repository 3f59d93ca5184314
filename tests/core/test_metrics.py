import numpy as np
import pytest

from napari_inif.core.metrics import max_abs_error, psnr, quality, ssim


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
