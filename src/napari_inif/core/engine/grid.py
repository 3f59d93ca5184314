"""The in-process path of the engine for the latent-grid field: one field, whole image.

``fit_grid_array(data, config)`` drives :func:`~napari_inif.core.codec.grid.iter_fit_to_size`
(the whole image every step), yields :class:`~napari_inif.core.engine.progress.Progress`
(phases ``fit``, ``quantise``, ``done``) and returns a
:class:`~napari_inif.core.codec.gridfile.GridEncoded` (``StopIteration.value``).  Rate
control counts the whole file: the container and the JSON, sized with a fit record of
full length before fitting, are the stream's ``overhead``.  Cancelling is closing the
generator.  Use it through :func:`napari_inif.core.engine.fit`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import numpy as np

from napari_inif.core.codec.gridfile import GridEncoded, GridHeader
from napari_inif.core.config import CompressionConfig
from napari_inif.core.engine.progress import Progress
from napari_inif.core.engine.record import PLACEHOLDER_QUALITY, fit_record
from napari_inif.core.errors import BudgetError
from napari_inif.core.layout import Layout

__all__ = ["MIN_STREAM_BYTES", "fit_grid_array", "grid_refusal"]

#: Smallest grid stream worth fitting (its header alone is ~40 bytes).
MIN_STREAM_BYTES = 64
#: Steps a fit may add to ``config.steps`` (the stream's fine-tuning rounds); sizes the
#: placeholder record.
_EXTRA_STEPS = 99


def grid_refusal(config: CompressionConfig) -> str | None:
    """Why the grid field cannot honour ``config`` (one line), or ``None`` if it can."""
    if config.mode != "field":
        return (
            f"mode {config.mode!r} is not available with the grid field yet; use mode "
            "'field' or a SIREN architecture (inif, siren)"
        )
    if config.guidance != "none":
        return (
            f"guidance {config.guidance!r} is not available with the grid field yet; use "
            "guidance 'none' or a SIREN architecture (inif, siren)"
        )
    if config.target_psnr is not None:
        return "the grid field fits to a size, not to a PSNR: drop target_psnr"
    if config.device not in ("auto", "cpu"):
        return f"the grid field fits on the CPU for now; device {config.device!r} is not used"
    return None


def fit_grid_array(
    data: np.ndarray,
    config: CompressionConfig,
    *,
    axes: str | None = None,
    scale: tuple[float, ...] | None = None,
    unit: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Generator[Progress, None, GridEncoded]:
    """Fit ``data`` into one latent-grid field; yields :class:`Progress`, returns
    :class:`GridEncoded`.

    ``config.steps`` and ``config.time_limit`` bound the fit; ``ratio`` is met with the
    whole file counted.  Raises ``ValueError`` for what the grid field cannot do
    (:func:`grid_refusal`, unsupported input) and
    :class:`~napari_inif.core.errors.BudgetError` for a ratio that leaves too few bytes.
    """

    from napari_inif.core.codec.grid import choose_spec, iter_fit_to_size
    from napari_inif.core.engine.local import measure_quality

    why = grid_refusal(config)
    if why is not None:
        raise ValueError(why)
    data = np.asarray(data)
    if data.dtype.name not in ("uint8", "uint16", "float32"):
        raise ValueError(f"unsupported dtype {data.dtype}; supported: uint8, uint16, float32")
    layout = Layout.of(data, axes)
    if not layout.coord_axes:
        raise ValueError(f"the grid field needs an axis longer than 1; got {layout.shape}")
    if layout.channels > 255:
        raise ValueError(f"the grid field codes at most 255 channels, got {layout.channels}")
    canon = layout.to_canonical(data)
    values = canon[..., 0] if layout.channels == 1 else canon
    lo, hi = float(canon.min()), float(canon.max())
    start = time.perf_counter()
    placeholder = fit_record(
        config,
        steps=config.steps + _EXTRA_STEPS,
        seconds=99999.99,
        device="cpu",
        metrics=PLACEHOLDER_QUALITY,
    )
    header = GridHeader(
        layout,
        (lo,) * layout.channels,
        (hi,) * layout.channels,
        scale,
        unit,
        placeholder,
        metadata or {},
    )
    overhead = GridEncoded.overhead(header)
    stream_budget = layout.raw_bytes / config.ratio - overhead
    if stream_budget < MIN_STREAM_BYTES:
        max_ratio = layout.raw_bytes / (overhead + MIN_STREAM_BYTES)
        raise BudgetError(
            f"{config.ratio:g}x leaves {stream_budget:.0f} bytes for the grid stream of this "
            f"{layout.raw_bytes}-byte image ({overhead} bytes of container and header); "
            f"ask at most {max_ratio:.0f}x",
            max_ratio,
        )
    options: dict[str, Any] = {}
    if layout.channels > 1:  # the fit's own spec choice sees a channel axis as coordinates
        options["spec"] = choose_spec(layout.coord_shape, layout.channels, int(stream_budget))
    gen = iter_fit_to_size(
        values,
        config.ratio,
        overhead=overhead,
        steps=config.steps,
        time_limit=config.time_limit,
        seed=config.seed,
        report_every=10,
        **options,
    )
    steps_done, runs, last_step, psnr, loss = 0, 0, -1, math.nan, math.nan
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                encoded_grid, _fit = stop.value
                break
            if p.step <= last_step:  # a fine-tuning round of the stream's rate control
                steps_done += last_step + 1
                runs += 1
            last_step = p.step
            psnr = p.psnr
            loss = 4.0 * 10 ** (-psnr / 10)  # MSE on [-1, 1], as the SIREN path reports
            elapsed = time.perf_counter() - start
            if runs == 0:
                remaining = (p.steps - p.step - 1) * p.seconds / (p.step + 1)
                if config.time_limit:
                    remaining = min(remaining, max(0.0, config.time_limit - elapsed))
                yield Progress(p.step + 1, p.steps, loss, psnr, elapsed, remaining, "fit")
            else:
                remaining = (p.steps - p.step - 1) * p.seconds / max(p.step + 1, 1)
                yield Progress(p.step + 1, p.steps, loss, psnr, elapsed, remaining, "quantise")
    finally:
        gen.close()
    steps_done += last_step + 1
    elapsed = time.perf_counter() - start
    yield Progress(steps_done, steps_done, loss, psnr, elapsed, 0.0, "quantise")
    encoded = GridEncoded(replace(header, fit={}), encoded_grid.data)
    metrics = measure_quality(canon, encoded.array(), layout)
    seconds = time.perf_counter() - start
    record = fit_record(config, steps=steps_done, seconds=seconds, device="cpu", metrics=metrics)
    encoded = encoded.with_header(replace(header, fit=record))
    yield Progress(steps_done, steps_done, loss, metrics.psnr, seconds, 0.0, "done")
    return encoded
