"""Lazy decoding: :class:`InifArray` evaluates the field only where it is indexed.

``InifArray`` behaves like a read-only numpy array of the original shape and dtype.
Indexing with ints and slices (steps included) evaluates only the blocks the selection
touches, only at the selected pixels.  :attr:`InifArray.levels` gives 2x-downsampled
views for napari's multiscale display, :meth:`InifArray.zoom` an upsampled view (the
field is continuous, so it can be sampled between pixels), and :meth:`InifArray.sample`
evaluates arbitrary float coordinates.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_inif.core.codec.header import FieldHeader
from napari_inif.core.errors import DecodeBudgetError, InifFormatError

if TYPE_CHECKING:
    from napari_inif.core.hybrid.prior import PriorDecoder
    from napari_inif.core.layout import Layout

__all__ = [
    "DEFAULT_DECODE_BUDGET",
    "FieldDecoder",
    "InifArray",
    "check_budget",
    "decode_budget",
    "prior_decoder",
]

_CHUNK = 1 << 14  # points per forward pass: bounds decoder memory
#: Bytes a decode may allocate unless ``INIF_DECODE_BUDGET`` or ``load(budget=)`` says.
DEFAULT_DECODE_BUDGET = 1 << 30
#: Bytes a decoded selection takes per output value at its peak: the float32 result,
#: denormalising (float64 temporaries), the dtype cast and the reordering to the original
#: axes (measured 20 bytes on 2D, 34 on a 4D stack; the network's
#: inputs are made in chunks), and the prior's float32 interpolation in hybrid files.
BYTES_PER_VALUE = 40
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def decode_budget(budget: int | str | None = None) -> int:
    """The decode memory budget in bytes: ``budget`` if given, else ``INIF_DECODE_BUDGET``
    (an integer with an optional ``K``/``M``/``G``/``T`` suffix, powers of 1024), else
    :data:`DEFAULT_DECODE_BUDGET`."""
    raw = os.environ.get("INIF_DECODE_BUDGET", "") if budget is None else budget
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        text = str(raw).strip().upper().removesuffix("B").removesuffix("I")
        if not text:
            return DEFAULT_DECODE_BUDGET
        unit = text[-1] if text[-1] in _UNITS else ""
        try:
            value = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
        except ValueError:
            raise ValueError(f"invalid decode budget {raw!r}; e.g. 1073741824 or 1G") from None
    if value <= 0:
        raise ValueError(f"the decode budget must be positive, got {raw!r}")
    return value


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_budget(n_values: int, budget: int, what: str = "this selection") -> None:
    """Refuse (:class:`DecodeBudgetError`) to decode ``n_values`` output values when they
    would take more than ``budget`` bytes; nothing is allocated before the check."""
    need = int(n_values) * BYTES_PER_VALUE
    if need > budget:
        raise DecodeBudgetError(
            f"decoding {what} ({n_values} values) would take about {_human(need)}, "
            f"over the decode budget of {_human(budget)}; decode a region "
            "instead (e.g. arr[0, :512, :512] or inif decompress --roi), or raise "
            "INIF_DECODE_BUDGET"
        )


def prior_decoder(
    layout: Layout, description: dict[str, Any] | None, prior: bytes | PriorDecoder | None
) -> PriorDecoder | None:
    """The hybrid prior's decoder of a file (``None`` without a prior): ``prior`` is the
    file's prior section or an already built decoder.  An unknown codec, or one not
    installed here, is an :class:`InifFormatError` that names it."""
    if description is None:
        return None
    from napari_inif.core.hybrid.prior import PriorDecoder

    if isinstance(prior, PriorDecoder):
        return prior
    try:
        return PriorDecoder(layout, description, prior or b"")
    except InifFormatError:
        raise
    except ValueError as exc:  # unknown codec or one not installed here
        raise InifFormatError(f"cannot decode the codec prior: {exc}") from None


class FieldDecoder:
    """Evaluates the block networks of one header + dequantised weights.

    Parameters
    ----------
    header
        The file header.
    weights
        Dequantised float32 tensors in payload order (:meth:`FieldHeader.tensor_shapes`).
    device
        Torch device for evaluation (CPU by default: decoding is cheap).
    prior
        Hybrid mode (``header.prior`` set): the codec prior section of the file, or an
        already built :class:`~.hybrid.PriorDecoder`.  The decoded prior of the requested
        region is added to the field, which then holds the residual.
    budget
        Decode memory budget in bytes (:func:`decode_budget` when ``None``): a selection
        whose decoded values would take more raises :class:`DecodeBudgetError` before
        anything is allocated.

    Raises
    ------
    InifFormatError
        Also when the prior's codec is unknown or not installed here.
    """

    def __init__(
        self,
        header: FieldHeader,
        weights: Sequence[np.ndarray],
        device: str = "cpu",
        prior: bytes | PriorDecoder | None = None,
        budget: int | None = None,
    ):
        self.header = header
        self.budget = decode_budget(budget)
        self.grid = header.grid
        self.device = device
        self._weights = list(weights)
        self._per_block = 2 * header.depth
        self._cache: dict[int, list[tuple[Any, Any]]] = {}
        self._lock = threading.Lock()
        self.blocks_evaluated: set[int] = set()  # which blocks were touched (for tests/stats)
        lo, hi = np.asarray(header.lo), np.asarray(header.hi)
        self._span = ((hi - lo) / 2.0).astype(np.float64)
        self._mid = ((hi + lo) / 2.0).astype(np.float64)
        self.prior = prior_decoder(header.layout, header.prior, prior)

    def check_budget(self, n_values: int, what: str = "this selection") -> None:
        """Refuse (:class:`DecodeBudgetError`) to decode ``n_values`` output values when
        they would take more than the budget; nothing is allocated before the check."""
        check_budget(n_values, self.budget, what)

    def _layers(self, block: int) -> list[tuple[Any, Any]]:
        import torch

        with self._lock:
            if block not in self._cache:
                ws = self._weights[block * self._per_block : (block + 1) * self._per_block]
                self._cache[block] = [
                    (
                        torch.from_numpy(np.ascontiguousarray(ws[i])).to(self.device),
                        torch.from_numpy(np.ascontiguousarray(ws[i + 1])).to(self.device),
                    )
                    for i in range(0, len(ws), 2)
                ]
            return self._cache[block]

    def evaluate(self, block: int, inputs: np.ndarray) -> np.ndarray:
        """Normalised field values ``(N, C)`` at normalised ``inputs`` ``(N, d)`` of ``block``."""
        import torch

        layers = self._layers(block)
        self.blocks_evaluated.add(block)
        out = np.empty((inputs.shape[0], self.header.layout.channels), np.float32)
        with torch.no_grad():
            for at in range(0, inputs.shape[0], _CHUNK):
                h = torch.from_numpy(inputs[at : at + _CHUNK].astype(np.float32)).to(self.device)
                for i, (w, b) in enumerate(layers):
                    h = torch.addmm(b, h, w)
                    if i < len(layers) - 1:
                        h = torch.sin(h)
                out[at : at + _CHUNK] = h.cpu().numpy()
        return out

    def denormalise(self, values: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """Intensities from normalised values, for the selected ``channels``."""
        return (values * self._span[channels] + self._mid[channels]).astype(np.float32)

    def region(self, positions: Sequence[np.ndarray], channels: np.ndarray) -> np.ndarray:
        """Intensities on the grid ``positions[0] x positions[1] x ...`` (pixel coordinates).

        Returns ``(*[len(p) for p in positions], len(channels))`` float32.
        """
        grid = self.grid
        shape = tuple(len(p) for p in positions)
        self.check_budget(math.prod(shape) * len(channels))
        out = np.empty((*shape, len(channels)), np.float32)
        if 0 in shape or len(channels) == 0:
            return out
        owners = [grid.block_of(p, a) for a, p in enumerate(positions)]
        for pos in itertools.product(*[np.unique(o).tolist() for o in owners]):
            block = int(np.ravel_multi_index(pos, grid.counts_effective))
            sel = [np.nonzero(o == p)[0] for o, p in zip(owners, pos, strict=True)]
            axes_in = [grid.normalise(block, a, positions[a][s]) for a, s in enumerate(sel)]
            lens = tuple(len(s) for s in sel)
            # Chunks of the block's points: the inputs never take more than _CHUNK rows.
            for start in range(0, math.prod(lens), _CHUNK):
                flat = np.arange(start, min(start + _CHUNK, math.prod(lens)))
                idx = np.unravel_index(flat, lens)
                inputs = np.stack([a_in[i] for a_in, i in zip(axes_in, idx, strict=True)], -1)
                values = self.evaluate(block, inputs)[:, channels]
                out[tuple(s[i] for s, i in zip(sel, idx, strict=True))] = values
        if self.prior is not None:
            out = self.prior.region(positions, channels) + np.float32(self.prior.scale) * out
        return self.denormalise(out, channels)

    def points(self, coords: np.ndarray) -> np.ndarray:
        """Intensities ``(N, C)`` at float pixel coordinates ``(N, d)`` of the coordinate axes."""
        grid = self.grid
        coords = np.asarray(coords, np.float64)
        self.check_budget(coords.shape[0] * max(coords.shape[1], self.header.layout.channels))
        owners = np.stack([grid.block_of(coords[:, a], a) for a in range(coords.shape[1])], -1)
        flat = np.ravel_multi_index(tuple(owners.T), grid.counts_effective)
        out = np.empty((coords.shape[0], self.header.layout.channels), np.float32)
        for block in np.unique(flat):
            rows = np.nonzero(flat == block)[0]
            inputs = np.stack(
                [grid.normalise(int(block), a, coords[rows, a]) for a in range(coords.shape[1])],
                -1,
            )
            out[rows] = self.evaluate(int(block), inputs)
        if self.prior is not None:
            out = self.prior.points(coords) + np.float32(self.prior.scale) * out
        return self.denormalise(out, np.arange(out.shape[1]))


class InifArray:
    """Lazy, read-only, numpy-like view of a decoded field.

    Parameters
    ----------
    decoder
        The :class:`FieldDecoder` that evaluates the field.
    factors
        Sampling step (in original pixels) on each coordinate axis: 1 for full
        resolution, 2**k for pyramid level k, 1/K for K-times finer sampling.
    """

    def __init__(self, decoder: FieldDecoder, factors: Sequence[float] | None = None):
        self.decoder = decoder
        layout = decoder.header.layout
        self.layout = layout
        n_coord = len(layout.coord_axes)
        self.factors = tuple(float(f) for f in (factors or [1.0] * n_coord))
        shape = list(layout.shape)
        for a, f in zip(layout.coord_axes, self.factors, strict=True):
            shape[a] = max(1, int(np.ceil(layout.shape[a] / f - 1e-9)))
        self._shape = tuple(shape)

    # numpy-like surface -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of this view."""
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """The original array's dtype."""
        return np.dtype(self.layout.dtype)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self._shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self._shape)

    @property
    def nbytes(self) -> int:
        """Bytes the decoded view would take."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        return f"InifArray(shape={self.shape}, dtype={self.dtype}, axes={self.layout.axes!r})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[tuple(slice(None) for _ in self._shape)]
        return out if dtype is None else out.astype(dtype)

    # views --------------------------------------------------------------------------
    def _view(self, factors: Sequence[float]) -> InifArray:
        return InifArray(self.decoder, factors)

    def _plane_axes(self) -> list[int]:
        """Coordinate-axis positions (within coord_axes) of the last two, i.e. Y and X."""
        n = len(self.layout.coord_axes)
        return list(range(max(0, n - 2), n))

    @property
    def levels(self) -> list[InifArray]:
        """Multiscale pyramid: full resolution, then 2x smaller in Y and X per level.

        Stops once the plane is at most 256 pixels on its longer side.
        """
        out = [self]
        plane = self._plane_axes()
        while True:
            last = out[-1]
            if max(last.shape[self.layout.coord_axes[a]] for a in plane) <= 256:
                return out
            factors = [f * 2 if a in plane else f for a, f in enumerate(last.factors)]
            out.append(self._view(factors))

    def zoom(self, k: float) -> InifArray:
        """A view sampled ``k`` times finer in Y and X (the field between pixels)."""
        if k <= 0:
            raise ValueError(f"zoom must be positive, got {k}")
        plane = self._plane_axes()
        return self._view([f / k if a in plane else f for a, f in enumerate(self.factors)])

    def sample(self, coords: np.ndarray) -> np.ndarray:
        """Intensities ``(N, C)`` (float32) at float pixel coordinates of the original array.

        ``coords`` is ``(N, d)`` with one column per non-channel axis of the original
        array (axes of length one are ignored); integers are pixel centres.
        """
        coords = np.atleast_2d(np.asarray(coords, np.float64))
        non_channel = [i for i in range(len(self.layout.shape)) if i != self.layout.channel_axis]
        if coords.shape[1] != len(non_channel):
            raise ValueError(
                f"coords need {len(non_channel)} columns (axes "
                f"{''.join(self.layout.axes[i] for i in non_channel)}), got {coords.shape[1]}"
            )
        cols = [non_channel.index(a) for a in self.layout.coord_axes]
        return self.decoder.points(coords[:, cols])

    # indexing -----------------------------------------------------------------------
    def __getitem__(self, key: Any) -> np.ndarray:
        index = self._normalise_key(key)
        layout = self.layout
        positions = []
        for n, a in enumerate(layout.coord_axes):
            f = self.factors[n]
            positions.append((index[a][0].astype(np.float64) + 0.5) * f - 0.5)
        c = layout.channel_axis
        channels = index[c][0] if c is not None else np.zeros(1, np.int64)
        values = self.decoder.region(positions, channels)
        values = self._to_dtype(values)
        order = list(layout.coord_axes) + ([c] if c is not None else [])
        rest = [i for i in range(len(layout.shape)) if i not in order]
        shaped = values.reshape([len(index[i][0]) for i in order + rest])
        arr = np.transpose(shaped, np.argsort(order + rest))
        dropped = tuple(i for i in range(len(layout.shape)) if index[i][1])
        return arr.reshape([n for i, n in enumerate(arr.shape) if i not in dropped])

    def _to_dtype(self, values: np.ndarray) -> np.ndarray:
        dtype = self.dtype
        if dtype.kind == "f":
            return values.astype(dtype)
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)

    def _normalise_key(self, key: Any) -> list[tuple[np.ndarray, bool]]:
        """Per axis: the selected indices and whether the axis is dropped (int index)."""
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is None for k in key):
            raise IndexError("InifArray does not support np.newaxis")
        ellipses = [i for i, k in enumerate(key) if k is Ellipsis]
        if len(ellipses) > 1:
            raise IndexError("an index can only have a single ellipsis")
        if ellipses:
            i = ellipses[0]
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for an array of {self.ndim} dimensions")
        key = key + (slice(None),) * (self.ndim - len(key))
        lengths = [
            len(range(*k.indices(n))) if isinstance(k, slice) else int(np.size(k))
            for k, n in zip(key, self._shape, strict=True)
        ]
        self.decoder.check_budget(math.prod(lengths))  # before any index array is made
        out = []
        for k, n in zip(key, self._shape, strict=True):
            if isinstance(k, slice):
                out.append((np.arange(*k.indices(n)), False))
            elif isinstance(k, int | np.integer):
                i = int(k)
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for an axis of length {n}")
                out.append((np.array([i % n]), True))
            else:
                arr = np.asarray(k)
                if arr.ndim != 1 or arr.dtype.kind not in "iu":
                    raise IndexError("InifArray supports ints, slices and 1-D integer arrays")
                if arr.size and (arr.min() < -n or arr.max() >= n):
                    raise IndexError(f"index out of bounds for an axis of length {n}")
                out.append((arr.astype(np.int64) % n, False))
        return out
