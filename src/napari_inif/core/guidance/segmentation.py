"""Segmentation agreement: did the cells survive compression?

Segment the original and the decoded image with the same method and compare the two
label images object by object: an object of the original is *matched* when one decoded
object overlaps it with intersection-over-union (IoU) of at least ``threshold`` (0.5 by
default, where a match is necessarily one-to-one).  From the matches come

- F1 = 2 TP / (2 TP + FP + FN),
- AP = TP / (TP + FP + FN) (the "average precision" at one IoU threshold used by the Data
  Science Bowl 2018 and Cellpose papers),
- the mean IoU of the matched objects (how well their outlines agree).

Two identical label images give 1.0 for all three, whatever their numbering.  The
segmentation is Cellpose where it is installed and a model is given
(:mod:`napari_inif.core.guidance.cellpose_net`), otherwise the classical
:func:`segment_classical` (Otsu threshold + distance-transform watershed); the method is part of
the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np

__all__ = [
    "Agreement",
    "Matches",
    "agreement",
    "estimate_diameter",
    "match_objects",
    "segment_classical",
    "segmentation_agreement",
]

#: ``segmenter(plane) -> labels`` for one 2D float plane.
Segmenter = Callable[[np.ndarray], np.ndarray]


class Matches(NamedTuple):
    """Object matching between a reference and a test label image."""

    n_reference: int
    n_test: int
    tp: int
    iou_sum: float  # sum of the IoU of the matched pairs


class Agreement(NamedTuple):
    """Segmentation agreement between an original and its decoded version."""

    f1: float
    ap: float
    mean_iou: float  # of matched objects (0 when none matched)
    n_original: int
    n_decoded: int
    method: str

    def as_dict(self) -> dict[str, float | int | str]:
        """Rounded values for headers and tables."""
        return {
            "f1": round(self.f1, 3),
            "ap": round(self.ap, 3),
            "mean_iou": round(self.mean_iou, 3),
            "n_original": self.n_original,
            "n_decoded": self.n_decoded,
            "method": self.method,
        }


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Consecutive labels ``0..n`` (0 stays background) and ``n``."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        raise ValueError(f"label images must be integer, got {labels.dtype}")
    values, inverse = np.unique(labels, return_inverse=True)
    if values[0] != 0:  # no background pixel: shift so that 0 means none
        inverse = inverse + 1
        n = len(values)
    else:
        n = len(values) - 1
    return inverse.reshape(labels.shape).astype(np.int64), n


def match_objects(reference: np.ndarray, test: np.ndarray, threshold: float = 0.5) -> Matches:
    """Match the objects of two label images (0 = background) by IoU.

    For ``threshold >= 0.5`` a pair above the threshold is unique on both sides, so the
    matching is exact without an assignment step; below 0.5 the pairs are assigned with
    the Hungarian algorithm to maximise the total IoU.
    """
    reference = np.asarray(reference)
    test = np.asarray(test)
    if reference.shape != test.shape:
        raise ValueError(f"label images differ in shape: {reference.shape} vs {test.shape}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    a, na = _relabel(reference)
    b, nb = _relabel(test)
    if na == 0 or nb == 0:
        return Matches(na, nb, 0, 0.0)
    area_a = np.bincount(a.ravel(), minlength=na + 1)
    area_b = np.bincount(b.ravel(), minlength=nb + 1)
    both = (a > 0) & (b > 0)
    pair = a[both] * (nb + 1) + b[both]
    keys, inter = np.unique(pair, return_counts=True)
    ia, ib = keys // (nb + 1), keys % (nb + 1)
    iou = inter / (area_a[ia] + area_b[ib] - inter)
    if threshold >= 0.5:
        good = iou >= threshold
        # IoU >= 0.5 with one object excludes IoU >= 0.5 with another, except at exactly
        # 0.5 on both sides; keep the first pair per object then.
        ia, ib, iou = ia[good], ib[good], iou[good]
        _, first_a = np.unique(ia, return_index=True)
        ia, ib, iou = ia[first_a], ib[first_a], iou[first_a]
        _, first_b = np.unique(ib, return_index=True)
        iou = iou[first_b]
        return Matches(na, nb, len(iou), float(iou.sum()))
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix

    dense = coo_matrix((iou, (ia - 1, ib - 1)), shape=(na, nb)).toarray()
    rows, cols = linear_sum_assignment(dense, maximize=True)
    chosen = dense[rows, cols]
    chosen = chosen[chosen >= threshold]
    return Matches(na, nb, len(chosen), float(chosen.sum()))


def _combine(matches: Iterable[Matches], method: str) -> Agreement:
    n_ref = n_test = tp = 0
    iou_sum = 0.0
    for m in matches:
        n_ref += m.n_reference
        n_test += m.n_test
        tp += m.tp
        iou_sum += m.iou_sum
    fp, fn = n_test - tp, n_ref - tp
    if n_ref == 0 and n_test == 0:  # nothing to find, nothing found
        return Agreement(1.0, 1.0, 1.0, 0, 0, method)
    return Agreement(
        2 * tp / (2 * tp + fp + fn),
        tp / (tp + fp + fn),
        iou_sum / tp if tp else 0.0,
        n_ref,
        n_test,
        method,
    )


def agreement(
    original: np.ndarray | list[np.ndarray],
    decoded: np.ndarray | list[np.ndarray],
    *,
    threshold: float = 0.5,
    method: str = "given",
) -> Agreement:
    """Agreement of two label images, or of two lists of label planes (counts are pooled)."""
    if isinstance(original, list) or isinstance(decoded, list):
        if len(original) != len(decoded):
            raise ValueError("original and decoded hold different numbers of planes")
        pairs = zip(original, decoded, strict=True)
    else:
        pairs = iter([(original, decoded)])
    return _combine((match_objects(a, b, threshold) for a, b in pairs), method)


def _estimate_diameter(foreground: np.ndarray) -> float:
    """Equivalent diameter of the area-weighted median object (robust to small debris)."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(foreground)
    if n == 0:
        return 0.0
    areas = np.sort(np.bincount(labels.ravel())[1:])
    cum = np.cumsum(areas)
    median = areas[np.searchsorted(cum, cum[-1] / 2)]
    return float(2 * np.sqrt(median / np.pi))


def estimate_diameter(image: np.ndarray) -> float:
    """Typical diameter (pixels) of the bright objects of a 2D image, from a smoothed Otsu
    threshold (at least 4)."""
    img = np.asarray(image, np.float32)
    if img.ndim != 2:
        raise ValueError(f"estimate_diameter takes a 2D image, got shape {img.shape}")
    if float(img.max() - img.min()) <= 0:
        return 4.0
    return max(_estimate_diameter(_foreground(img, 2.0)), 4.0)


def _foreground(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    smooth = ndi.gaussian_filter(img, sigma)
    fg = smooth > threshold_otsu(smooth)
    return ndi.binary_fill_holes(ndi.binary_opening(fg, iterations=1))


def segment_classical(image: np.ndarray, diameter: float | None = None) -> np.ndarray:
    """Label bright objects in a 2D image: Otsu threshold + distance-transform watershed.

    Parameters
    ----------
    image
        2D intensities (any dtype).
    diameter
        Typical object diameter in pixels; estimated from the thresholded objects when
        ``None``.  It sets the smoothing, the smallest kept object (a quarter of the
        typical area, at least 9 pixels) and the spacing of watershed seeds.

    Returns
    -------
    numpy.ndarray
        int32 labels, 0 for background.
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    img = np.asarray(image, np.float32)
    if img.ndim != 2:
        raise ValueError(f"segment_classical takes a 2D image, got shape {img.shape}")
    if float(img.max() - img.min()) <= 0:
        return np.zeros(img.shape, np.int32)
    lo, hi = np.percentile(img, (1, 99.8))
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    if diameter is None:
        diameter = estimate_diameter(img)
    fg = _foreground(img, max(1.0, diameter / 25))
    min_area = max(9.0, 0.25 * np.pi * (diameter / 2) ** 2)
    dist = ndi.distance_transform_edt(fg)
    dist = ndi.gaussian_filter(dist, max(1.0, diameter / 10))
    blobs, _ = ndi.label(fg)
    peaks = peak_local_max(
        dist, min_distance=max(2, int(diameter / 3)), labels=blobs, exclude_border=False
    )
    markers = np.zeros(img.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=fg)
    # Drop objects below the minimum area and renumber.
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    keep[0] = False
    lut = np.zeros(len(areas), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[labels]


def segmentation_agreement(
    original: np.ndarray,
    decoded: np.ndarray,
    segmenter: Segmenter | None = None,
    *,
    method: str | None = None,
    threshold: float = 0.5,
    diameter: float | None = None,
) -> Agreement:
    """Segment ``original`` and ``decoded`` with the same ``segmenter`` and compare.

    Both are 2D planes or stacks of 2D planes (``(..., Y, X)``; every plane is segmented on
    its own and the counts are pooled).  ``segmenter`` defaults to
    :func:`segment_classical` with one ``diameter`` for both images (estimated from the
    original's first plane when ``None``); ``method`` names the segmenter in the result.
    """
    original = np.asarray(original)
    decoded = np.asarray(decoded)
    if original.shape != decoded.shape or original.ndim < 2:
        raise ValueError(f"need equal shapes of at least 2D, got {original.shape}, {decoded.shape}")
    a = original.reshape(-1, *original.shape[-2:])
    b = decoded.reshape(-1, *decoded.shape[-2:])
    if segmenter is None:
        d = diameter if diameter is not None else estimate_diameter(a[0])
        segmenter = lambda plane: segment_classical(plane, d)  # noqa: E731
        method = method or "classical"
    masks_a = [segmenter(p) for p in a]
    masks_b = [segmenter(p) for p in b]
    return agreement(masks_a, masks_b, threshold=threshold, method=method or "custom")
