"""Segmentation agreement between an original image and its decoded version.

No trained segmentation model is available offline, so the benchmark uses a transparent
proxy: the foreground mask of a global Otsu threshold (computed on the original and
applied to both images), compared with the Dice coefficient.  It measures whether the
objects a simple threshold pipeline would find survive compression.
"""

from __future__ import annotations

import numpy as np

__all__ = ["foreground_dice"]


def foreground_dice(original: np.ndarray, decoded: np.ndarray) -> float:
    """Dice of ``original > t`` and ``decoded > t`` with ``t`` Otsu's threshold of ``original``.

    Returns 1.0 for two empty masks.
    """
    from skimage.filters import threshold_otsu

    a = np.asarray(original, np.float64)
    b = np.asarray(decoded, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.max() == a.min():
        return 1.0
    t = threshold_otsu(a)
    fa, fb = a > t, b > t
    total = int(fa.sum()) + int(fb.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(fa, fb).sum() / total)
