"""The in-process path of the engine: an image in memory, all blocks fitted together.

``fit_array(data, config)`` yields :class:`~napari_inif.core.engine.progress.Progress`
after every step and returns the :class:`~napari_inif.core.codec.encoded.Encoded` result
(``StopIteration.value``).  All blocks share one step loop, which is what ``time_limit``,
``target_psnr``, previews, guidance (decoded windows across blocks) and hybrid mode (a
prior coded over the whole image) need.  Use it through
:func:`napari_inif.core.engine.fit`, which picks this path or the block-streamed one.
Cancelling is closing the generator: nothing is written anywhere by fitting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from napari_inif.core.codec import plan as _budget
from napari_inif.core.codec.decode import FieldDecoder, InifArray
from napari_inif.core.codec.encoded import Encoded
from napari_inif.core.codec.fitter import BlockFitter, flat_weights, normalise, pick_device
from napari_inif.core.codec.quant import rate_control
from napari_inif.core.codec.render import WindowRenderer
from napari_inif.core.config import CompressionConfig
from napari_inif.core.engine.progress import Progress, finish_seconds
from napari_inif.core.engine.record import PLACEHOLDER_QUALITY, fit_record
from napari_inif.core.guidance.losses import make_guidance
from napari_inif.core.hybrid import prior as _hybrid
from napari_inif.core.layout import Layout
from napari_inif.core.metrics.quality import Quality, QualityAccumulator, quality

__all__ = ["fit_array", "measure_quality"]


def fit_array(
    data: np.ndarray,
    config: CompressionConfig | None = None,
    *,
    axes: str | None = None,
    scale: tuple[float, ...] | None = None,
    unit: str | None = None,
    metadata: dict[str, Any] | None = None,
    preview_every: float | None = None,
) -> Generator[Progress, None, Encoded]:
    """Fit ``data`` into a field; yields :class:`Progress`, returns :class:`Encoded`.

    Parameters
    ----------
    data
        Array of 1 to 5 dimensions, uint8, uint16 or float32.
    config
        How to compress (ratio, steps, device, ...).
    axes
        Axis letters such as ``"TZYX"`` or ``"CYX"`` (guessed from ``ndim`` if omitted).
    scale, unit
        Physical pixel size per axis, stored in the header for viewers.
    metadata
        Small JSON-serialisable dict stored in the header.
    preview_every
        Seconds between progress reports that carry a lazy preview of the field.

    Raises
    ------
    ValueError
        For unsupported input; :class:`~napari_inif.core.errors.BudgetError` for an unreachable
        ratio.
    """
    config = config or CompressionConfig()
    data = np.asarray(data)
    if data.dtype.kind not in "uif" or data.dtype.name not in ("uint8", "uint16", "float32"):
        raise ValueError(f"unsupported dtype {data.dtype}; supported: uint8, uint16, float32")
    layout = Layout.of(data, axes)
    canon = layout.to_canonical(data)
    norm, lo, hi = normalise(canon)  # a constant channel keeps hi == lo: decoded exactly
    start = time.perf_counter()  # the clock includes coding the prior (hybrid mode)
    # Hybrid mode: a codec prior takes its share of the budget, the field fits the residual.
    prior = _hybrid.prepare(norm, layout, config)
    target = norm if prior is None else prior.residual(norm)
    mse_scale = 1.0 if prior is None else prior.scale**2  # field units -> normalised image
    device = pick_device(config.device)
    guide = make_guidance(config, norm, device, config.seed)  # None without guidance
    # Size the header with the fit record it will carry (placeholder numbers of full length).
    placeholder = fit_record(
        config,
        steps=config.steps,
        seconds=99999.99,
        device=str(device),
        metrics=PLACEHOLDER_QUALITY,
        guidance=None if guide is None else guide.record(None, placeholder=True),
    )
    plan = _budget.plan(
        layout,
        config,
        target,
        lo=lo,
        hi=hi,
        scale=scale,
        unit=unit,
        metadata=metadata or {},
        fit=placeholder,
        **_hybrid.plan_fields(prior),
    )
    header = replace(plan.header, fit={})
    grid = header.grid
    fitter = BlockFitter(
        header,
        config,
        range(grid.n_blocks),
        lambda b: target[tuple(slice(lo_, hi_) for lo_, hi_ in grid.fit_bounds(b))],
        device,
    )
    if prior is not None:
        for group in fitter.groups:
            _hybrid.quiet_head(group.net)  # start from the prior alone, not prior + init noise
    render = WindowRenderer(grid, fitter.groups) if guide is not None else None
    steps = config.steps
    finish = finish_seconds(header.n_params, math.prod(layout.shape))  # after the last step
    ema = None
    last_preview = start
    step, mse, psnr = 0, float("nan"), float("nan")
    for step in range(1, steps + 1):
        frac = step / steps
        if config.time_limit:
            frac = max(frac, (time.perf_counter() - start) / config.time_limit)
        hook = None
        if guide is not None:  # adds the rescaled guidance gradient to p.grad

            def hook(params: list[torch.Tensor], step: int = step, frac: float = frac) -> None:
                guide.add_gradient(render, params, step, frac)

        mse = fitter.step(frac, after_backward=hook)
        psnr = 10 * math.log10(4.0 / max(mse * mse_scale, 1e-12))
        ema = psnr if ema is None else 0.9 * ema + 0.1 * psnr
        elapsed = time.perf_counter() - start
        remaining = (steps - step) * elapsed / step
        if config.time_limit:
            remaining = min(remaining, max(0.0, config.time_limit - elapsed))
        remaining += finish
        preview = None
        if preview_every is not None and time.perf_counter() - last_preview >= preview_every:
            last_preview = time.perf_counter()
            weights = flat_weights(fitter.weights(), grid.n_blocks)
            preview = InifArray(FieldDecoder(header, weights, prior=_hybrid.decoder_of(prior)))
        yield Progress(step, steps, mse, psnr, elapsed, remaining, "fit", preview)
        if config.time_limit and elapsed >= config.time_limit:
            break
        if config.target_psnr is not None and ema >= config.target_psnr:
            break

    yield Progress(step, steps, mse, psnr, time.perf_counter() - start, finish, "quantise")
    fitter.finish()
    weights = flat_weights(fitter.weights(), grid.n_blocks)
    q, payload = rate_control(
        weights, plan.payload_budget, header.tensor_kinds(), per_block=2 * header.depth
    )
    encoded = Encoded(header.with_halves(q.halves), q, payload, _hybrid.section_of(prior))
    if guide is None:
        metrics, canon_dec = measure_quality(canon, encoded.array(), layout), None
    else:
        canon_dec = layout.to_canonical(encoded.array()[...])
        metrics = quality(
            np.moveaxis(canon, -1, 0),
            np.moveaxis(canon_dec, -1, 0),
            plane_axes=3 if len(layout.coord_axes) >= 3 and "Z" in layout.axes else 2,
        )
    seconds = time.perf_counter() - start
    agreement = guide.agreement(canon, canon_dec) if guide is not None else None
    encoded = encoded.with_header(
        encoded.header.with_fit(
            **fit_record(
                config,
                steps=step,
                seconds=seconds,
                device=str(device),
                metrics=metrics,
                guidance=None if guide is None else guide.record(agreement),
            )
        )
    )
    yield Progress(step, steps, mse, metrics.psnr, seconds, 0.0, "done")
    return encoded


#: Voxels decoded at once to measure a fit's quality.  Decoding a whole 96x520x520 stack
#: for the metrics peaked at 3.9 GB RSS (plus ~2.7 GB for SSIM in float64); slabs bound it.
QUALITY_SLAB_VOXELS = 1 << 22


def _by_slabs(layout: Layout) -> bool:
    """Whether the quality can be measured slab by slab along the first coordinate axis:
    a stack of 2D-SSIM planes (3D SSIM, used when there is a Z axis, does not split)."""
    return len(layout.coord_axes) >= 3 and "Z" not in layout.axes


def measure_quality(canon: np.ndarray, array: InifArray, layout: Layout) -> Quality:
    """:func:`~napari_inif.core.metrics.quality.quality` of a decoded field against the
    canonical image: slab by slab along the first coordinate axis for a stack of 2D
    planes (bounded memory), whole for 2D images and Z stacks (3D SSIM)."""
    if not _by_slabs(layout):
        return quality(
            np.moveaxis(canon, -1, 0),
            np.moveaxis(layout.to_canonical(array[...]), -1, 0),
            plane_axes=3 if len(layout.coord_axes) >= 3 and "Z" in layout.axes else 2,
        )
    acc = QualityAccumulator(float(canon.max()) - float(canon.min()), np.dtype(layout.dtype))
    step = max(1, QUALITY_SLAB_VOXELS // canon[0].size)
    for s0 in range(0, canon.shape[0], step):
        key = [slice(None)] * len(layout.shape)
        key[layout.coord_axes[0]] = slice(s0, s0 + step)
        decoded = layout.to_canonical(array[tuple(key)])
        acc.add(np.moveaxis(canon[s0 : s0 + step], -1, 0), np.moveaxis(decoded, -1, 0))
    return acc.result()
