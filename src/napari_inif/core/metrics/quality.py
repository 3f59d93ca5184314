"""Quality metrics between an original array and its decoded version.

PSNR is reported against the original's data range (``max - min``), the honest
headline for microscopy, and also against the dtype range (what INIF's reference code
reports; it flatters 16-bit data that uses a fraction of the range).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Quality", "QualityAccumulator", "max_abs_error", "psnr", "quality", "ssim"]


class Quality(NamedTuple):
    """Metrics of one comparison."""

    psnr: float  # dB, against the original's max - min
    psnr_dtype: float  # dB, against the dtype's range (1.0 for float data)
    ssim: float
    max_error: float

    def as_dict(self) -> dict[str, float]:
        """Rounded values for headers and tables."""
        return {k: round(float(v), 4) for k, v in self._asdict().items()}


def _dtype_range(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max - np.iinfo(dtype).min) if dtype.kind in "iu" else 1.0


def psnr(original: np.ndarray, decoded: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for identical arrays)."""
    a = np.asarray(original, np.float64)
    b = np.asarray(decoded, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if data_range is None:
        data_range = float(a.max() - a.min()) or 1.0
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def max_abs_error(original: np.ndarray, decoded: np.ndarray) -> float:
    """Largest absolute difference."""
    return float(np.max(np.abs(np.asarray(original, np.float64) - np.asarray(decoded, np.float64))))


def ssim(
    original: np.ndarray,
    decoded: np.ndarray,
    *,
    plane_axes: int = 2,
    data_range: float | None = None,
) -> float:
    """Mean SSIM (Wang et al. 2004) over planes (``plane_axes=2``) or volumes (``3``).

    The array is treated as a stack of ``plane_axes``-D images over its last axes; axes of
    length one are dropped first.  Windows shrink for small images.
    """
    from skimage.metrics import structural_similarity

    a = np.squeeze(np.asarray(original, np.float64))
    b = np.squeeze(np.asarray(decoded, np.float64))
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if data_range is None:
        data_range = float(a.max() - a.min()) or 1.0
    k = min(plane_axes, a.ndim)
    a = a.reshape((-1, *a.shape[a.ndim - k :]))
    b = b.reshape((-1, *b.shape[b.ndim - k :]))
    win = min(7, *a.shape[1:])
    win -= 1 - win % 2  # odd
    if win < 3:
        return float(1.0 - np.mean((a - b) ** 2) / max(np.var(a), 1e-12))
    return float(
        np.mean(
            [
                structural_similarity(x, y, data_range=data_range, win_size=win)
                for x, y in zip(a, b, strict=True)
            ]
        )
    )


def quality(original: np.ndarray, decoded: np.ndarray, *, plane_axes: int = 2) -> Quality:
    """PSNR (data range and dtype range), SSIM and max error in one pass."""
    original = np.asarray(original)
    return Quality(
        psnr(original, decoded),
        psnr(original, decoded, _dtype_range(original.dtype)),
        ssim(original, decoded, plane_axes=plane_axes),
        max_abs_error(original, decoded),
    )


class QualityAccumulator:
    """The numbers of :func:`quality` (2D SSIM) gathered slab by slab, to bound memory.

    ``add(original, decoded)`` takes matching parts of the two arrays whose last two axes
    are the planes; the result equals :func:`quality` with ``plane_axes=2`` on the whole
    arrays (SSIM is a mean over planes, so it splits exactly).

    Parameters
    ----------
    data_range
        The whole original's ``max - min``.
    dtype
        The original's dtype (for the dtype-range PSNR).
    """

    def __init__(self, data_range: float, dtype: np.dtype):
        self.data_range = data_range or 1.0
        self.dtype_range = _dtype_range(np.dtype(dtype))
        self.sse = 0.0
        self.n = 0.0
        self.max_error = 0.0
        self.ssim_sum = 0.0
        self.ssim_weight = 0.0

    def add(self, original: np.ndarray, decoded: np.ndarray) -> None:
        """Fold in one slab (same shape, at least 2 axes); its SSIM counts per plane."""
        a = np.asarray(original, np.float64)
        b = np.asarray(decoded, np.float64)
        if a.shape != b.shape:
            raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
        diff = a - b
        planes = float(np.prod(a.shape[:-2]))
        self.merge(
            float(np.square(diff).sum()),
            diff.size,
            float(np.abs(diff).max()),
            ssim(a, b, data_range=self.data_range) * planes,
            planes,
        )

    def merge(
        self, sse: float, n: float, max_error: float, ssim_sum: float, ssim_weight: float
    ) -> None:
        """Fold in partial sums measured elsewhere (e.g. by a Dask task): squared error over
        ``n`` values, their largest error, and an SSIM sum with the weight it carries."""
        self.sse += sse
        self.n += n
        self.max_error = max(self.max_error, max_error)
        self.ssim_sum += ssim_sum
        self.ssim_weight += ssim_weight

    def result(self) -> Quality:
        """The metrics of everything added."""
        mse = self.sse / max(self.n, 1)

        def db(peak: float) -> float:
            return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))

        return Quality(
            db(self.data_range),
            db(self.dtype_range),
            self.ssim_sum / max(self.ssim_weight, 1),
            self.max_error,
        )
