"""From an asked ratio to an architecture, with the whole file counted.

The budget is ``raw bytes / ratio``.  From it come, in order: the fixed container
overhead and the header (measured by building it), the payload left for the weights,
the number of blocks (about ``params_per_block`` parameters each), the depth, and one
width per block, shared out by block content.  Rate control in
:mod:`napari_inif.core.codec.quant` then picks the quantiser that makes the payload land on
its budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_inif.core.codec.blocks import BlockGrid, choose_grid
from napari_inif.core.codec.container import OVERHEAD_BYTES, header_bytes
from napari_inif.core.codec.header import FieldHeader
from napari_inif.core.codec.quant import payload_size_bound
from napari_inif.core.config import CompressionConfig
from napari_inif.core.errors import BudgetError
from napari_inif.core.layout import Layout

__all__ = ["BudgetError", "Plan", "plan", "solve_width"]

MIN_WIDTH = 8
MIN_DEPTH = 3
HEADER_SLACK = 48  # bytes kept free for fit metrics written after rate control
#: (depth, smallest width it is used with), deepest first.  Small budgets want depth more
#: than width.  Measured at equal parameter count, 1200 steps, seeds 0 and 1 (PSNR dB):
#: depth 6 instead of 4 on BBBC022 nuclei at 256x +3.7 / +3.7 (32.5 -> 36.2); depth 5
#: instead of 4 at 512x +1.0, on a 256x256 BBBC034 crop at 128x +0.3, on BBBC038 at 64x
#: +0.1; depth 4 instead of 3 on BBBC038 at 100x +1.1; depth 6 instead of 5 on the
#: cancer-cell stack at 512x +0.25 / +0.04.  Deeper still costs: on a BPAE actin crop at
#: 256x depth 6 (width 11) lost 1.4-1.8 dB and depth 5 (width 13) 0.2-0.4 dB to depth 4
#: (width 16), hence the width floors.  The previous ladder was
#: ((7, 32), (5, 24), (4, 16), (3, 8)).
_DEPTHS = ((7, 32), (6, 16), (5, 12), (4, MIN_WIDTH), (3, MIN_WIDTH))


@dataclass(frozen=True)
class Plan:
    """The architecture chosen for an image and ratio."""

    header: FieldHeader  # without fit results
    budget_bytes: int  # whole file
    payload_budget: int  # bytes left for the weights

    @property
    def grid(self) -> BlockGrid:
        """The block grid."""
        return self.header.grid


def solve_width(params: float, n_in: int, n_out: int, depth: int) -> int:
    """Largest hidden width whose network has at most ``params`` parameters."""
    a = depth - 2
    b = n_in + 1 + (depth - 2) + n_out
    c = n_out - params
    if a == 0:
        width = -c / b
    else:
        width = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return max(0, int(width))


def _choose_depth(params: float, n_in: int, n_out: int, forced: int | None) -> int:
    if forced is not None:
        return forced
    for depth, min_width in _DEPTHS:
        if solve_width(params, n_in, n_out, depth) >= min_width:
            return depth
    return MIN_DEPTH


def _snap(width: int, down: bool = False) -> int:
    """Round a width to a ladder of ~9% steps, so blocks share few widths and batch well."""
    if width <= MIN_WIDTH:
        return MIN_WIDTH
    step = (math.floor if down else round)(8 * math.log2(width / MIN_WIDTH))
    return min(4096, round(MIN_WIDTH * 2 ** (step / 8)))


def _block_weights(
    norm: np.ndarray | None,
    grid: BlockGrid,
    allocation: str,
    block_std: Sequence[float] | None = None,
) -> np.ndarray:
    """Share of the budget for each block: by standard deviation, floored at 30% of the mean.

    ``block_std`` gives the standard deviations directly (streamed from a large source).
    """
    if (norm is None and block_std is None) or allocation == "uniform":
        return np.full(grid.n_blocks, 1.0 / grid.n_blocks)
    if block_std is not None:
        stds = np.asarray(block_std, np.float64)
        if stds.shape != (grid.n_blocks,):
            raise ValueError(f"{stds.size} block deviations for {grid.n_blocks} blocks")
    else:
        stds = np.empty(grid.n_blocks)
        for block in range(grid.n_blocks):
            region = tuple(slice(a, b) for a, b in grid.bounds(block))
            stds[block] = float(np.std(norm[region]))
    # Four significant digits: the streamed (float64 moments) and in-memory (float32 image)
    # deviations differ in the last bits, which must not change a snapped width.
    stds = np.array([float(f"{v:.4g}") for v in stds])
    stds = np.maximum(stds, 0.3 * max(float(stds.mean()), 1e-6))
    return stds / stds.sum()


def _header(
    layout: Layout, grid: BlockGrid, depth: int, widths: list[int], **kw: object
) -> FieldHeader:
    c = layout.channels
    return FieldHeader(
        layout=layout,
        lo=kw.get("lo", (0.0,) * c),  # type: ignore[arg-type]
        hi=kw.get("hi", (1.0,) * c),  # type: ignore[arg-type]
        grid_counts=grid.counts_effective,
        depth=depth,
        widths=tuple(widths),
        half=32767,
        first_half=32767,
        bias_half=32767,
        margin=grid.margin,
        scale=kw.get("scale"),  # type: ignore[arg-type]
        unit=kw.get("unit"),  # type: ignore[arg-type]
        prior=kw.get("prior"),  # type: ignore[arg-type]
        metadata=kw.get("metadata") or {},  # type: ignore[arg-type]
        fit=kw.get("fit") or {},  # type: ignore[arg-type]
    )


def _file_overhead(header: FieldHeader) -> int:
    return OVERHEAD_BYTES + len(header_bytes(header.to_json())) + HEADER_SLACK


def max_ratio(layout: Layout, **header_fields: object) -> float:
    """Largest ratio this image can be stored at: one block, the smallest network.

    The header is measured as :func:`plan` measures it, with a three-digit placeholder
    width, so that every ratio up to this one gets a plan.
    """
    grid = BlockGrid(layout.coord_shape, (1,) * len(layout.coord_shape))
    header = _header(layout, grid, MIN_DEPTH, [MIN_WIDTH], **header_fields)
    measured = _header(layout, grid, MIN_DEPTH, [999], **header_fields)
    payload = payload_size_bound(header.n_params, len(header.tensor_shapes()), 8)
    return layout.raw_bytes / (_file_overhead(measured) + payload)


def plan(
    layout: Layout,
    config: CompressionConfig,
    norm: np.ndarray | None = None,
    prior_bytes: int = 0,
    *,
    block_std: Sequence[float] | None = None,
    **header_fields: object,
) -> Plan:
    """Choose the blocks and widths for ``layout`` at ``config.ratio``.

    ``norm`` is the canonical normalised image (for content allocation); ``prior_bytes``
    are taken by a codec prior; ``block_std`` replaces ``norm`` with each block's standard
    deviation of the normalised image (the grid does not depend on either, so a first call
    without them gives the grid to measure).  ``header_fields`` go into the header as they are
    (``lo``, ``hi``, ``scale``, ``unit``, ``prior``, ``metadata``, ``fit``).
    Raises :class:`BudgetError` naming the largest possible ratio if it cannot be met.
    """
    budget = int(layout.raw_bytes / config.ratio)
    n_in, n_out = len(layout.coord_axes), layout.channels
    if n_in == 0:
        raise BudgetError("the image has a single pixel; nothing to fit", 1.0)
    top = max_ratio(layout, **header_fields) if prior_bytes == 0 else float("nan")

    def refuse() -> BudgetError:
        extra = f" (with a {prior_bytes}-byte codec prior)" if prior_bytes else ""
        best = f"; the largest ratio possible for this image is {top:.0f}x" if top == top else ""
        return BudgetError(
            f"ratio {config.ratio:g}x leaves {budget} bytes for a {layout.raw_bytes}-byte "
            f"image{extra}, too few for the header and the smallest network{best}",
            top,
        )

    # Estimate the parameter budget with a one-block header, then fix the grid.
    params_est = max(0.0, (budget - prior_bytes - 400) * 8 / config.bits)
    n_target = max(
        math.ceil(int(np.prod(layout.coord_shape)) / config.max_block_voxels),
        round(params_est / config.params_per_block),
        1,
    )
    grid = choose_grid(layout.coord_shape, n_target, margin=config.block_margin)
    # The header lists one width per block: measure it with three-digit placeholders.
    depth = config.depth or 7
    header = _header(layout, grid, depth, [999] * grid.n_blocks, **header_fields)
    payload_budget = budget - prior_bytes - _file_overhead(header)
    n_tensors = 2 * depth * grid.n_blocks
    params_total = (payload_budget - 2 * n_tensors - 64) * 8 / config.bits
    if params_total <= 0:
        raise refuse()
    shares = _block_weights(norm, grid, config.allocation, block_std)
    depth = _choose_depth(params_total / grid.n_blocks, n_in, n_out, config.depth)
    widths = [_snap(solve_width(params_total * s, n_in, n_out, depth)) for s in shares]
    while True:
        header = _header(layout, grid, depth, widths, **header_fields)
        size = payload_size_bound(header.n_params, len(header.tensor_shapes()), config.bits)
        if size <= payload_budget:
            return Plan(header, budget, payload_budget)
        widest = int(np.argmax(widths))
        if widths[widest] <= MIN_WIDTH:
            raise refuse()
        widths[widest] = _snap(widths[widest] - 1, down=True)
