"""The in-process path of the engine for the latent-grid field: one field, whole image.

``fit_grid_array(data, config)`` drives :func:`~napari_inif.core.codec.grid.iter_fit_to_size`
(the whole image every step), yields :class:`~napari_inif.core.engine.progress.Progress`
(phases ``fit``, ``quantise``, ``done``) and returns a
:class:`~napari_inif.core.codec.gridfile.GridEncoded` (``StopIteration.value``).  Rate
control counts the whole file: the container and the JSON, sized with a fit record of
full length before fitting, and the prior section of hybrid mode are the stream's
``overhead``.  Cancelling is closing the generator.  Use it through
:func:`napari_inif.core.engine.fit`.

As on the SIREN path, hybrid mode codes the image with a classic-codec prior
(:func:`napari_inif.core.hybrid.prior.prepare`) and fits the grid to its residual, and
guidance adds its gradient after each step's backward pass, on windows rendered from the
grid being fitted (:class:`~napari_inif.core.codec.render.GridWindowRenderer`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_inif.core.codec.gridfile import GridEncoded, GridHeader
from napari_inif.core.config import CompressionConfig
from napari_inif.core.engine.progress import Progress
from napari_inif.core.engine.record import PLACEHOLDER_QUALITY, fit_record
from napari_inif.core.errors import BudgetError
from napari_inif.core.layout import Layout
from napari_inif.core.metrics.quality import Quality, quality

if TYPE_CHECKING:
    from napari_inif.core.codec.grid import GridField
    from napari_inif.core.codec.render import GridWindowRenderer
    from napari_inif.core.guidance.losses import Guidance
    from napari_inif.core.guidance.segmentation import Agreement

__all__ = ["MIN_STREAM_BYTES", "fit_grid_array", "grid_refusal"]

#: Smallest grid stream worth fitting (its header alone is ~40 bytes).
MIN_STREAM_BYTES = 64
#: Steps a fit may add to ``config.steps`` (the stream's fine-tuning rounds); sizes the
#: placeholder record.
_EXTRA_STEPS = 99
#: Deflated JSON bytes of a prior entry with the image's dtype and range, bound.
_PRIOR_JSON_BYTES = 120


#: Decimals the grid file keeps of the fit record's numbers (its bytes count against the
#: image's budget: a 517-byte tinc-zyx 512x file spent 145 on container and JSON).
RECORD_DECIMALS = {"psnr": 2, "psnr_dtype": 2, "ssim": 4, "seconds": 1, "max_error": 1}


def compact_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its numbers rounded to :data:`RECORD_DECIMALS` (what a user reads)."""
    out = dict(record)
    for key, decimals in RECORD_DECIMALS.items():
        value = out.get(key)
        if isinstance(value, float) and math.isfinite(value):
            out[key] = round(value, decimals)
    return out


def grid_refusal(config: CompressionConfig) -> str | None:
    """Why the grid field cannot honour ``config`` (one line), or ``None`` if it can."""
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
    whole file counted (in hybrid mode, the prior section too).  Raises ``ValueError``
    for what the grid field cannot do (:func:`grid_refusal`, unsupported input) and
    :class:`~napari_inif.core.errors.BudgetError` for a ratio that leaves too few bytes.
    """

    import torch

    from napari_inif.core.codec.fitter import normalise
    from napari_inif.core.codec.grid import channel_range, choose_spec, iter_fit_to_size
    from napari_inif.core.guidance.losses import make_guidance
    from napari_inif.core.hybrid import prior as _hybrid

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
    start = time.perf_counter()  # the clock includes coding the prior (hybrid mode)
    lo, hi = float(canon.min()), float(canon.max())
    header = GridHeader(
        layout, (lo,) * layout.channels, (hi,) * layout.channels, scale, unit, {}, metadata or {}
    )
    norm = None
    if config.mode == "hybrid" or config.guidance != "none":
        norm, lo_c, hi_c = normalise(canon)  # the [-1, 1] units of the prior and guidance
    guide = (
        make_guidance(config, norm, torch.device("cpu"), config.seed) if norm is not None else None
    )
    # Size the JSON with the fit record it will carry (placeholder numbers of full length).
    placeholder = compact_record(
        fit_record(
            config,
            steps=config.steps + _EXTRA_STEPS,
            seconds=99999.99,
            device="cpu",
            metrics=PLACEHOLDER_QUALITY,
            guidance=None if guide is None else guide.record(None, placeholder=True),
        )
    )
    header = replace(header, fit=placeholder)
    # Hybrid mode: a codec prior takes its share of the budget, the grid fits the residual.
    prior = None
    if config.mode == "hybrid":
        assert norm is not None
        floor = GridEncoded.overhead(header) + _PRIOR_JSON_BYTES + MIN_STREAM_BYTES
        prior = _hybrid.prepare(norm, layout, config, field_floor=floor)
        assert prior is not None
        header = replace(header, lo=lo_c, hi=hi_c, prior=prior.info)
        target = prior.residual(norm)
    else:
        target = canon
    values = target[..., 0] if layout.channels == 1 else target
    overhead = GridEncoded.overhead(header)  # container, JSON and prior section
    stream_budget = layout.raw_bytes / config.ratio - overhead
    if stream_budget < MIN_STREAM_BYTES:
        if prior is None:
            max_ratio = layout.raw_bytes / (overhead + MIN_STREAM_BYTES)
            besides, advice = "container and header", f"ask at most {max_ratio:.0f}x"
        else:  # the prior grows with the budget: no ratio to suggest
            max_ratio = math.nan
            besides, advice = "container, header and prior", "lower the prior fraction"
        raise BudgetError(
            f"{config.ratio:g}x leaves {stream_budget:.0f} bytes for the grid stream of this "
            f"{layout.raw_bytes}-byte image ({overhead} bytes of {besides}); {advice}",
            max_ratio,
        )
    options: dict[str, Any] = {"time_axis": layout.time_axis}
    if layout.channels > 1:  # the fit's own spec choice sees a channel axis as coordinates
        options["spec"] = choose_spec(
            layout.coord_shape, layout.channels, int(stream_budget), layout.time_axis
        )
    # the stream's intensity map, per channel (as the fit makes it)
    v_lo, v_hi = channel_range(values if layout.channels > 1 else values[..., None])
    if guide is not None:
        options["after_backward"] = _GuidanceHook(guide, *_to_norm(v_lo, v_hi, lo_c, hi_c))
    # The fit sizes the stream from its array's bytes: a float32 residual of a uint8
    # image is 4x as many, so ask the ratio that leaves the image's budget.
    fit_ratio = values.nbytes / (layout.raw_bytes / config.ratio)
    # PSNR of the image (data range) from the fit's PSNR of its array (its own range)
    # (with several channels, their mean width: the number is for progress reports)
    width = float(np.mean(v_hi - v_lo))
    shift = 0.0 if prior is None else -20 * math.log10(max(width, 1e-12) * prior.scale / 2)
    time_left = None  # the time limit counts coding the prior, as on the SIREN path
    if config.time_limit:
        time_left = max(0.0, config.time_limit - (time.perf_counter() - start))
    gen = iter_fit_to_size(
        values,
        fit_ratio,
        overhead=overhead,
        steps=config.steps,
        time_limit=time_left,
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
            psnr = p.psnr + shift
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
    encoded = GridEncoded(replace(header, fit={}), encoded_grid.data, _hybrid.section_of(prior))
    metrics, agreement = _quality(canon, encoded, layout, guide)
    seconds = time.perf_counter() - start
    record = compact_record(
        fit_record(
            config,
            steps=steps_done,
            seconds=seconds,
            device="cpu",
            metrics=metrics,
            guidance=None if guide is None else guide.record(agreement),
        )
    )
    encoded = encoded.with_header(replace(header, fit=record))
    yield Progress(steps_done, steps_done, loss, metrics.psnr, seconds, 0.0, "done")
    return encoded


def _to_norm(
    v_lo: np.ndarray, v_hi: np.ndarray, lo: tuple[float, ...], hi: tuple[float, ...]
) -> tuple[list[float], list[float]]:
    """``(gain, offset)`` per channel from the grid's output (``[0, 1]`` over the stream's
    range ``v_lo..v_hi`` of each channel) to the ``[-1, 1]`` units of
    :func:`~napari_inif.core.codec.fitter.normalise` (range ``lo..hi`` per channel)."""
    from napari_inif.core.codec.fitter import unit_span

    span = unit_span(lo, hi)
    width = np.maximum(v_hi - v_lo, 1e-12)  # the fit's own map
    gain = [float(2 * w / s) for w, s in zip(width, span, strict=True)]
    offset = [float(2 * (v - a) / s - 1) for v, a, s in zip(v_lo, lo, span, strict=True)]
    return gain, offset


class _GuidanceHook:
    """The fit's ``after_backward``: adds the guidance gradient to the grid's latents and
    synthesis weights (what a rendered window depends on).

    The rate control's fine-tuning rounds restart the step count; they run at the end
    of the fit, so the guidance keeps its full weight there (``frac`` 1).
    """

    def __init__(self, guide: Guidance, gain: list[float], offset: list[float]):
        self.guide = guide
        self.gain, self.offset = gain, offset
        self.render: GridWindowRenderer | None = None
        self.last_step = -1
        self.rounds = 0

    def __call__(self, field: GridField, step: int, frac: float) -> None:
        from napari_inif.core.codec.render import GridWindowRenderer

        if step <= self.last_step:
            self.rounds += 1
        self.last_step = step
        if self.render is None or self.render.field is not field:
            self.render = GridWindowRenderer(field, self.gain, self.offset)
        params = [*field.latents, *field.synthesis.parameters()]
        self.guide.add_gradient(self.render, params, step, 1.0 if self.rounds else frac)


def _quality(
    canon: np.ndarray, encoded: GridEncoded, layout: Layout, guide: Guidance | None
) -> tuple[Quality, Agreement | None]:
    """The decoded file's quality, and with guidance its segmentation agreement (on the
    whole decoded image, as the SIREN path measures it)."""
    from napari_inif.core.engine.local import measure_quality

    if guide is None:
        return measure_quality(canon, encoded.array(), layout), None
    canon_dec = layout.to_canonical(encoded.array()[...])
    metrics = quality(
        np.moveaxis(canon, -1, 0),
        np.moveaxis(canon_dec, -1, 0),
        plane_axes=3 if len(layout.coord_axes) >= 3 and "Z" in layout.axes else 2,
    )
    return metrics, guide.agreement(canon, canon_dec)
