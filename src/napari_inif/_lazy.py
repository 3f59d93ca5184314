"""Lazy, composable array views for napari layers (no Qt, no torch at import).

napari slices a multiscale level in two steps: first the visible rectangle of the
displayed axes with every other axis left whole (``data[:, y0:y1, x0:x1]``), then the
current slice (``np.asarray(tile[t])``).  Evaluated eagerly, the first step would decode
the visible rectangle of *every* slice.  :class:`LazyArray` composes indexing without
evaluating anything and reads its source once, in ``__array__``, with the final
selection: only the visible region of the current slice is decoded.

:class:`Difference` is a lazy ``a - b`` of two same-shaped arrays (float32), used for
the Inspect widget's difference layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Difference", "LazyArray"]

_Index = np.ndarray | int


def _as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """A slice equivalent to the increasing or decreasing progression ``idx`` (else ``idx``)."""
    if idx.size == 0:
        return slice(0, 0)
    if idx.size == 1:
        return slice(int(idx[0]), int(idx[0]) + 1)
    steps = np.diff(idx)
    step = int(steps[0])
    if step == 0 or not np.all(steps == step):
        return idx
    start, last = int(idx[0]), int(idx[-1])
    stop = last + step
    return slice(start, None if stop < 0 else stop, step)


class LazyArray:
    """Read-only view of ``source`` whose indexing is deferred until ``np.asarray``.

    Parameters
    ----------
    source
        Anything with ``shape``, ``dtype`` and ``__getitem__`` accepting ints and slices
        (an :class:`~napari_inif.core.InifArray`, a numpy or dask array, ...).
    index
        Per source axis: an integer array of kept positions or an int (axis dropped).
    """

    def __init__(self, source: Any, index: tuple[_Index, ...] | None = None):
        self.source = source
        if index is None:
            index = tuple(np.arange(n) for n in source.shape)
        self._index = index
        self._shape = tuple(len(i) for i in index if isinstance(i, np.ndarray))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the view."""
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the source."""
        return np.dtype(self.source.dtype)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self._shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self._shape))

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype}, source={self.source!r})"

    def __getitem__(self, key: Any) -> LazyArray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is None for k in key):
            raise IndexError("LazyArray does not support np.newaxis")
        ellipses = [i for i, k in enumerate(key) if k is Ellipsis]
        if len(ellipses) > 1:
            raise IndexError("an index can only have a single ellipsis")
        if ellipses:
            i = ellipses[0]
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for an array of {self.ndim} dimensions")
        key = key + (slice(None),) * (self.ndim - len(key))
        kept = iter(key)
        out: list[_Index] = []
        for idx in self._index:
            if not isinstance(idx, np.ndarray):
                out.append(idx)
                continue
            k = next(kept)
            if isinstance(k, slice):
                out.append(idx[k])
            elif isinstance(k, int | np.integer):
                n = len(idx)
                if not -n <= int(k) < n:
                    raise IndexError(f"index {int(k)} is out of bounds for an axis of length {n}")
                out.append(int(idx[int(k)]))
            else:
                arr = np.asarray(k)
                if arr.ndim != 1 or arr.dtype.kind not in "iu":
                    raise IndexError("LazyArray supports ints, slices and 1-D integer arrays")
                out.append(idx[arr])
        return LazyArray(self.source, tuple(out))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        key = [_as_slice(i) if isinstance(i, np.ndarray) else i for i in self._index]
        fancy = [a for a, k in enumerate(key) if isinstance(k, np.ndarray)]
        if fancy:  # not a progression: read the bounding box, then pick
            for a in fancy:
                idx = np.asarray(self._index[a])
                key[a] = slice(int(idx.min()), int(idx.max()) + 1)
        out = np.asarray(self.source[tuple(key)])
        if fancy:
            dropped = [a for a, k in enumerate(self._index) if not isinstance(k, np.ndarray)]
            for a in fancy:
                pos = a - sum(1 for d in dropped if d < a)
                idx = np.asarray(self._index[a])
                out = np.take(out, idx - int(idx.min()), axis=pos)
        return out if dtype is None else out.astype(dtype)


class Difference:
    """Lazy ``a - b`` (float32) of two arrays of one shape; index it through :class:`LazyArray`."""

    def __init__(self, a: Any, b: Any):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        self.a, self.b = a, b
        self.shape = tuple(a.shape)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        a = np.asarray(self.a[key], np.float32)
        b = np.asarray(self.b[key], np.float32)
        return a - b

    def __repr__(self) -> str:
        return f"Difference(shape={self.shape})"
