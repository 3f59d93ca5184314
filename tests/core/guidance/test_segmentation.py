"""Segmentation agreement: matching, F1/AP/IoU on hand-made masks, classical segmentation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_inif.core.guidance.segmentation import (
    agreement,
    estimate_diameter,
    match_objects,
    segment_classical,
    segmentation_agreement,
)


def squares(shape, boxes):
    """Label image with one square object per ``(y, x, size)``, numbered from 1."""
    out = np.zeros(shape, np.int32)
    for label, (y, x, s) in enumerate(boxes, start=1):
        out[y : y + s, x : x + s] = label
    return out


def test_identical_masks_agree_fully_whatever_the_numbering():
    ref = squares((64, 64), [(2, 2, 10), (20, 20, 8), (40, 5, 12)])
    renumbered = np.where(ref > 0, 10 - ref, 0)  # 9, 8, 7 instead of 1, 2, 3
    a = agreement(ref, renumbered)
    assert (a.f1, a.ap, a.mean_iou) == (1.0, 1.0, 1.0)
    assert (a.n_original, a.n_decoded) == (3, 3)


def test_hand_made_masks_give_the_expected_numbers():
    ref = squares((64, 64), [(2, 2, 10), (20, 20, 10), (40, 40, 10), (2, 40, 10)])
    test = squares(
        (64, 64),
        [
            (2, 2, 10),  # identical: IoU 1
            (20, 22, 10),  # shifted by 2: 80 / 120 = 2/3, matched
            (40, 45, 10),  # shifted by 5: 50 / 150 = 1/3, not matched
            (52, 2, 6),  # an object that is not in the reference
        ],
    )  # the fourth reference object (2, 40) is missing
    m = match_objects(ref, test)
    assert (m.n_reference, m.n_test, m.tp) == (4, 4, 2)
    a = agreement(ref, test)
    tp, fp, fn = 2, 2, 2
    assert a.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))  # 0.5
    assert a.ap == pytest.approx(tp / (tp + fp + fn))  # 1/3
    assert a.mean_iou == pytest.approx((1 + 2 / 3) / 2)


def test_lower_threshold_uses_an_assignment():
    ref = squares((32, 32), [(0, 0, 10)])
    test = squares((32, 32), [(0, 5, 10)])  # IoU 1/3
    assert match_objects(ref, test, 0.5).tp == 0
    m = match_objects(ref, test, 0.3)
    assert m.tp == 1 and m.iou_sum == pytest.approx(1 / 3)


def test_empty_images():
    empty = np.zeros((16, 16), np.int32)
    one = squares((16, 16), [(2, 2, 5)])
    assert agreement(empty, empty).f1 == 1.0
    a = agreement(one, empty)
    assert (a.f1, a.ap, a.mean_iou, a.n_original, a.n_decoded) == (0.0, 0.0, 0.0, 1, 0)


def test_counts_are_pooled_over_planes():
    ref = [squares((16, 16), [(0, 0, 5)]), squares((16, 16), [(0, 0, 5), (8, 8, 5)])]
    test = [squares((16, 16), [(0, 0, 5)]), squares((16, 16), [(0, 0, 5)])]
    a = agreement(ref, test)
    assert (a.n_original, a.n_decoded) == (3, 2)
    assert a.f1 == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        match_objects(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="integer"):
        match_objects(np.zeros((4, 4)), np.zeros((4, 4)))


def disks(shape=(96, 96), centres=((20, 20), (20, 70), (70, 30), (65, 72)), r=9, seed=0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
    rng = np.random.default_rng(seed)
    return (100 + 800 * img + rng.normal(0, 20, shape)).astype(np.float32)


def test_classical_segmentation_finds_the_disks():
    img = disks()
    labels = segment_classical(img)
    assert labels.max() == 4
    assert estimate_diameter(img) == pytest.approx(18, abs=3)


def test_agreement_of_an_image_with_itself_and_with_a_damaged_copy():
    img = disks()
    assert segmentation_agreement(img, img).f1 == 1.0
    damaged = img.copy()
    damaged[60:82, 60:85] = 100  # one disk erased
    a = segmentation_agreement(img, damaged)
    assert a.method == "classical"
    assert (a.n_original, a.n_decoded) == (4, 3)
    assert a.f1 == pytest.approx(2 * 3 / (2 * 3 + 1))


def test_real_nuclei_survive_mild_noise(nuclei_crop):
    rng = np.random.default_rng(1)
    noisy = nuclei_crop + rng.normal(0, 1.0, nuclei_crop.shape)
    a = segmentation_agreement(nuclei_crop.astype(np.float32), noisy.astype(np.float32))
    assert a.n_original >= 3
    assert a.f1 >= 0.8
