"""How an N-D microscopy array maps onto a field: coordinate axes and channels.

A field takes the coordinates of up to four axes (of T, Z, Y, X) and returns one value
per channel.  :class:`Layout` records the original axes order and turns the array into the
canonical ``(*coordinate_axes, channels)`` form and back.  Axes of length one are kept in
the shape but are not field inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CHANNEL_AXES", "SUPPORTED_DTYPES", "Layout", "guess_axes"]

#: Axis letters treated as channels (tifffile writes ``S`` for RGB samples).
CHANNEL_AXES = "CS"
SUPPORTED_DTYPES = ("uint8", "uint16", "float32")


def guess_axes(ndim: int) -> str:
    """Default axes for an array without metadata: the last ones are ``YX``."""
    if not 1 <= ndim <= 5:
        raise ValueError(f"arrays of 1 to 5 dimensions are supported, got {ndim}")
    return "TCZYX"[5 - ndim :] if ndim != 3 else "ZYX"


@dataclass(frozen=True)
class Layout:
    """Shape, axes and dtype of the original array, and how the field sees it."""

    shape: tuple[int, ...]
    axes: str
    dtype: str

    def __post_init__(self) -> None:
        if len(self.shape) != len(self.axes):
            raise ValueError(f"axes {self.axes!r} do not match shape {self.shape}")
        named = [a for a in self.axes if a not in "QI"]  # tifffile's "unknown" axes may repeat
        if len(set(named)) != len(named):
            raise ValueError(f"repeated axes in {self.axes!r}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(
                f"unsupported dtype {self.dtype}; supported: {', '.join(SUPPORTED_DTYPES)}"
            )
        if any(n < 1 for n in self.shape):
            raise ValueError(f"empty array of shape {self.shape}")
        channels = [i for i, a in enumerate(self.axes) if a in CHANNEL_AXES and self.shape[i] > 1]
        if len(channels) > 1:
            raise ValueError(f"more than one channel axis in {self.axes!r}")
        if len(self.coord_axes) > 4:
            raise ValueError(
                f"at most 4 non-channel axes longer than 1 are supported (T, Z, Y, X); "
                f"got {len(self.coord_axes)} in {self.axes!r} {self.shape}"
            )

    @classmethod
    def of(cls, data: np.ndarray, axes: str | None = None) -> Layout:
        """Layout of ``data`` with ``axes`` (guessed from ``ndim`` when ``None``)."""
        axes = (axes or guess_axes(data.ndim)).upper()
        return cls(tuple(int(n) for n in data.shape), axes, np.dtype(data.dtype).name)

    @property
    def channel_axis(self) -> int | None:
        """Index of the channel axis in the original array, if it has more than one channel."""
        for i, a in enumerate(self.axes):
            if a in CHANNEL_AXES and self.shape[i] > 1:
                return i
        return None

    @property
    def coord_axes(self) -> tuple[int, ...]:
        """Indices of the original axes that are field inputs (non-channel, longer than one)."""
        return tuple(
            i
            for i, (a, n) in enumerate(zip(self.axes, self.shape, strict=True))
            if n > 1 and not (a in CHANNEL_AXES and i == self.channel_axis)
        )

    @property
    def coord_shape(self) -> tuple[int, ...]:
        """Lengths of the coordinate axes, in original order."""
        return tuple(self.shape[i] for i in self.coord_axes)

    @property
    def time_axis(self) -> int | None:
        """Position of ``T`` among the coordinate axes (``None``: no time axis)."""
        return next((k for k, i in enumerate(self.coord_axes) if self.axes[i] == "T"), None)

    @property
    def channels(self) -> int:
        """Number of channels (field outputs)."""
        c = self.channel_axis
        return 1 if c is None else self.shape[c]

    @property
    def raw_bytes(self) -> int:
        """Size of the uncompressed array."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def to_canonical(self, data: np.ndarray) -> np.ndarray:
        """``(*extent, channels)`` view of ``data`` (copy only where needed): the whole array,
        or a box of it cut along the coordinate axes (all channels kept)."""
        data = np.asarray(data)
        order = list(self.coord_axes)
        if self.channel_axis is not None:
            order.append(self.channel_axis)
        rest = [i for i in range(len(self.shape)) if i not in order]
        arr = np.transpose(data, order + rest)
        return arr.reshape((*[data.shape[i] for i in self.coord_axes], self.channels))

    def from_canonical(self, canon: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_canonical` for a full array."""
        order = list(self.coord_axes)
        if self.channel_axis is not None:
            order.append(self.channel_axis)
        rest = [i for i in range(len(self.shape)) if i not in order]
        perm_shape = [self.shape[i] for i in order + rest]
        arr = canon.reshape(perm_shape)
        return np.transpose(arr, np.argsort(order + rest))
