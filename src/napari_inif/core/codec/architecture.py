"""The shape of one block's network (torch-free: the header and the plan use it)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

__all__ = ["Architecture"]


@dataclass(frozen=True)
class Architecture:
    """Shape of one block's network.

    Attributes
    ----------
    in_features, out_features
        Number of coordinate axes and of channels.
    width, depth
        Hidden width and number of linear layers (``depth - 1`` sine layers + linear head).
    """

    in_features: int
    out_features: int
    width: int
    depth: int

    def __post_init__(self) -> None:
        if not 1 <= self.in_features <= 4:
            raise ValueError(f"in_features must be 1..4, got {self.in_features}")
        if not 1 <= self.out_features <= 64:
            raise ValueError(f"out_features must be 1..64, got {self.out_features}")
        if not 1 <= self.width <= 4096 or not 2 <= self.depth <= 32:
            raise ValueError(f"unsupported width/depth {self.width}/{self.depth}")

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """``(fan_in, fan_out)`` of every linear layer."""
        dims = [self.in_features] + [self.width] * (self.depth - 1) + [self.out_features]
        return list(itertools.pairwise(dims))

    @property
    def n_params(self) -> int:
        """Parameters stored per block (weights and biases; frequencies are folded in)."""
        return sum(i * o + o for i, o in self.layer_shapes)

    @staticmethod
    def params_for(in_features: int, out_features: int, width: int, depth: int) -> int:
        """Parameter count of an architecture without validating it."""
        return (
            in_features * width
            + width
            + (depth - 2) * (width * width + width)
            + width * out_features
            + out_features
        )
