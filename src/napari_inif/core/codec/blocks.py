"""Split the coordinate space into a regular grid of blocks, each fitted by its own field.

Blocks bound the memory of fitting and decoding, make decoding of a region local (only
the blocks it touches are evaluated) and let many small networks be fitted as one batch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BlockGrid", "choose_grid"]


@dataclass(frozen=True)
class BlockGrid:
    """A regular grid over ``shape``: ``counts[a]`` blocks of ``edges[a]`` pixels on axis ``a``.

    The last block on an axis may be shorter.  Blocks are numbered in C order.
    """

    shape: tuple[int, ...]
    counts: tuple[int, ...]
    margin: int = 0

    def __post_init__(self) -> None:
        if len(self.shape) != len(self.counts):
            raise ValueError("shape and counts differ in length")
        if not 0 <= self.margin <= 64:
            raise ValueError(f"block margin must be 0..64, got {self.margin}")
        for n, k in zip(self.shape, self.counts, strict=True):
            if not 1 <= k <= n:
                raise ValueError(f"cannot split an axis of {n} into {k} blocks")

    @property
    def edges(self) -> tuple[int, ...]:
        """Nominal block length on each axis."""
        return tuple(math.ceil(n / k) for n, k in zip(self.shape, self.counts, strict=True))

    @property
    def counts_effective(self) -> tuple[int, ...]:
        """Blocks actually needed on each axis once edges are rounded up."""
        return tuple(math.ceil(n / e) for n, e in zip(self.shape, self.edges, strict=True))

    @property
    def n_blocks(self) -> int:
        """Total number of blocks."""
        return int(np.prod(self.counts_effective))

    def index(self, block: int) -> tuple[int, ...]:
        """Grid position of block number ``block``."""
        return tuple(int(i) for i in np.unravel_index(block, self.counts_effective))

    def bounds(self, block: int) -> tuple[tuple[int, int], ...]:
        """``(start, stop)`` pixel bounds of ``block`` on every axis."""
        return tuple(
            (i * e, min((i + 1) * e, n))
            for i, e, n in zip(self.index(block), self.edges, self.shape, strict=True)
        )

    def extent(self, block: int) -> tuple[int, ...]:
        """Length of ``block`` on every axis."""
        return tuple(b - a for a, b in self.bounds(block))

    def fit_bounds(self, block: int) -> tuple[tuple[int, int], ...]:
        """Bounds of the region ``block``'s field is fitted on: its tile plus ``margin``.

        Fitting a little beyond the tile keeps the field's own edge effects out of the
        pixels it decodes, so neighbouring blocks meet without visible seams.
        """
        m = self.margin
        return tuple(
            (max(a - m, 0), min(b + m, n))
            for (a, b), n in zip(self.bounds(block), self.shape, strict=True)
        )

    def fit_extent(self, block: int) -> tuple[int, ...]:
        """Length of ``block``'s fitted region on every axis."""
        return tuple(b - a for a, b in self.fit_bounds(block))

    @property
    def fit_edges(self) -> tuple[int, ...]:
        """Largest fitted-region length on every axis (tile edge plus both margins)."""
        return tuple(
            min(e + 2 * self.margin, n) for e, n in zip(self.edges, self.shape, strict=True)
        )

    def block_of(self, pixels: np.ndarray, axis: int) -> np.ndarray:
        """Block position along ``axis`` of (possibly fractional) pixel coordinates."""
        index = np.floor(np.asarray(pixels, np.float64) + 0.5).astype(np.int64)
        return np.clip(index // self.edges[axis], 0, self.counts_effective[axis] - 1)

    def normalise(self, block: int, axis: int, pixels: np.ndarray) -> np.ndarray:
        """Field input for pixel coordinates on ``axis`` of ``block``: centres span (-1, 1).

        Integer coordinates are pixel centres; fractional ones sample between them.
        """
        (start, stop) = self.fit_bounds(block)[axis]
        return 2.0 * (np.asarray(pixels, np.float64) - start + 0.5) / (stop - start) - 1.0

    def touching(self, ranges: tuple[tuple[int, int], ...]) -> list[int]:
        """Blocks that intersect the half-open pixel ``ranges`` (one ``(lo, hi)`` per axis)."""
        per_axis = []
        for (lo, hi), e, k in zip(ranges, self.edges, self.counts_effective, strict=True):
            if hi <= lo:
                return []
            per_axis.append(range(max(lo // e, 0), min((hi - 1) // e, k - 1) + 1))
        return [
            int(np.ravel_multi_index(pos, self.counts_effective))
            for pos in itertools.product(*per_axis)
        ]


def choose_grid(
    shape: tuple[int, ...], n_target: int, *, min_edge: int = 16, margin: int = 0
) -> BlockGrid:
    """A grid of about ``n_target`` blocks, splitting the longest axis first.

    No block edge goes below ``min_edge`` pixels (or the axis length, if shorter), so that
    each field keeps enough samples to be worth its parameters.
    """
    counts = [1] * len(shape)
    while int(np.prod(counts)) < n_target:
        # Split the axis whose blocks are currently longest, if it stays above min_edge.
        order = sorted(range(len(shape)), key=lambda a: -shape[a] / counts[a])
        for a in order:
            if math.ceil(shape[a] / (counts[a] * 2)) >= min_edge:
                counts[a] *= 2
                break
        else:
            break
    grid = BlockGrid(tuple(shape), tuple(counts))
    return BlockGrid(tuple(shape), grid.counts_effective, margin if grid.n_blocks > 1 else 0)
