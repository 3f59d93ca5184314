"""Fitting a latent-grid field on ``D + lambda * R`` with lambda steered to a byte budget.

Training follows the published recipe of the family (facts from Cool-chic and C3, the
code is ours): uniform noise on soft-rounded latents (temperature annealed) while most
steps run, then a short phase on hard-rounded latents so the fitted field is the one
the decoder sees (the last 5% of the steps).  In that phase the latents stay where the
noisy phase left them and only the synthesis (and the scales) train: moved through a
straight-through rounding, Adam's steps push latents across rounding boundaries with
no true gradient, and the longer the fit the more it lost (hipsc-2d 256x, 9600 steps:
35.36 dB before the phase, 34.28 after it, its bits 8% over; frozen: 35.47 dB).  The
whole image is evaluated every step (a handful of large kernels: gathers, weighted
sums, three matmuls).  ``lambda`` follows a multiplicative controller on the *ideal
code length of the rounded latents* plus the estimated size of the weights and header,
so the written file lands near the asked size.

The context coder (:class:`~.field.ContextModel`) is not trained through this loss: every
:data:`CONTEXT_EVERY` steps it is fitted on the rounded latents, and the controller
counts the per-level-Laplace bits times the fraction it saves, so the field spends the
bytes the coder frees.  Trained jointly through the noisy rate proxy it made the latents
predictable rather than informative (-0.3 dB on tinc-zyx 256x, -0.28 dB on cells-tyx
128x at equal steps); fitted beside, +0.96 dB on tinc-zyx 256x (300 steps).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from napari_inif.core.codec.grid.coding import DEFAULT_EDGE
from napari_inif.core.codec.grid.field import GridField, GridSpec, soft_round

__all__ = [
    "GridFit",
    "GridProgress",
    "channel_range",
    "choose_spec",
    "fit_grid",
    "iter_fit_grid",
    "normalised",
    "training_latents",
]

#: Bytes a grid file spends besides latents and weights (header, tile table), estimate.
HEADER_ESTIMATE = 48
#: Bits a quantised synthesis weight costs, estimate for planning (measured 5-8).
WEIGHT_BITS_ESTIMATE = 7.0
#: The largest share of the byte budget the synthesis weights may take (estimated).  A
#: hidden layer of 4 allowed 20% where 12% leaves ~230-byte budgets linear was tried:
#: hipsc-2d 512x 32.18 -> 32.82 dB and nuclei-2d 256x 26.01 -> 26.31 (2400 steps), and
#: on a held-out image (skimage's ``cell``, 660 x 550 uint8, 2048x) +1.47 dB at 2400
#: steps but -3.9 dB at 1200 (27.76 vs 31.68): not kept until many seeds say more.
SYNTHESIS_SHARE = 0.12
#: Context network width by byte budget (first whose least budget is met; else none).
#: Whole files at 2400 / 3200 steps with format 5.0's smaller headers: 2 wide from 250
#: bytes (was none below 700) hipsc-2d 256x 35.86 -> 36.22 dB, nuclei-2d 128x 29.39 ->
#: 29.45, tinc-zyx 512x 30.70 -> 30.78; 8 wide from 1500 (was 3000) tinc-zyx 128x
#: 33.10 -> 33.19, hipsc-2d 64x 38.10 both (with a (16, 16) synthesis; with (16,),
#: 33.17 -> 33.18 and 38.10 -> 38.14); 2 wide on skimage's ``cell`` at 1024x 36.40 ->
#: 36.43 (held out, 1200 steps).
CONTEXT_WIDTHS = ((8, 1500), (4, 700), (2, 250))
#: Bits per pixel under which the grid has no full-resolution level (fitted cells-tyx
#: at 128x, 0.125 bits a pixel, and tinc-zyx at 256x left theirs all zero; with or
#: without it cells-tyx 128x reached 31.56 / 31.61 dB in 200 steps, the latter faster).
FULL_LEVEL_BPP = 0.2
#: The context network is refitted on the rounded latents every ``CONTEXT_EVERY`` steps,
#: ``CONTEXT_ITERATIONS`` Adam steps at ``CONTEXT_LR`` each time.
CONTEXT_EVERY, CONTEXT_ITERATIONS, CONTEXT_LR = 50, 30, 1e-2
#: The fraction of bits the context coder is assumed to save before it is first fitted.
CONTEXT_SAVING = 0.75
#: Adam steps of the context network on the final latents.
CONTEXT_FINAL_ITERATIONS = 200
#: Latent features a level holds at most (a multi-channel image gets one a channel).
MAX_FEATURES = 8
#: Degree of the B-spline that upsamples the latents (:func:`~.field.axis_taps`).  Fits
#: of the rounded latents at about the same bits (no context on hipsc-2d; 2026-11-30):
#: hipsc-2d 256x, 1200 steps, linear 34.98 dB, quadratic 35.54, cubic 35.69 (at 64x /
#: 128x / 512x cubic +0.27 / +0.48 / +0.53); tinc-zyx 256x, 800 steps, 31.02 / 31.42 /
#: 31.39 (the B-splines 3-4% more bits); cells-tyx 128x, 300 steps, 31.92 / 32.07 /
#: 32.09 (+2% bits).  Catmull-Rom, which interpolates: 35.05 on hipsc-2d, 31.70 on
#: cells-tyx (an earlier session's run; linear 31.91 there).
UPSAMPLING_DEGREE = 3
#: The latents' learning rate over the network's (8e-2 at the default 1e-2).  Rounded-
#: latent PSNR of one fit with 4 -> 8 (scratch, 1 torch thread): hipsc-2d 64x / 128x /
#: 256x / 512x at 2400 steps 38.02 -> 38.12, 36.89 -> 37.41, 35.65 -> 36.02, 33.27 ->
#: 33.17 dB; tinc-zyx 64x / 256x at 3200 steps 33.84 -> 33.79, 31.83 -> 31.92; cells-tyx
#: 128x at 400 steps 33.78 -> 34.07 (and 6.5% under its budget -> on it).  Four seeds of
#: hipsc-2d 256x at 4 spread 35.65-35.88; 16 gave 34.79, 32 collapsed.
LATENT_LR = 8.0
#: Pixels from which ``torch.compile`` of the training step is the default.
COMPILE_MIN_PIXELS = 300_000


@dataclass
class GridProgress:
    """One progress report of a fit."""

    step: int
    steps: int
    psnr: float  # of the training-time (noisy / soft) field, dB over the data range
    bits: float  # ideal code length of the rounded latents
    target_bits: float
    lam: float
    seconds: float


@dataclass
class GridFit:
    """A fitted latent-grid field and what coding it needs."""

    field: GridField
    lo: np.ndarray  # per channel: the field's output 0..1 maps to lo..hi
    hi: np.ndarray
    lam: float
    target_bytes: int
    history: list[GridProgress] = field(default_factory=list)
    loss_fn: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = field(
        default=None, repr=False, compare=False
    )
    saving: float = 1.0  # the context coder's bits over the per-level Laplaces' bits
    #: the fit's Adam (a re-fit that continues with it moves the latents gently)
    optimiser: torch.optim.Optimizer | None = field(default=None, repr=False, compare=False)


def choose_spec(
    shape: tuple[int, ...], channels: int, budget_bytes: int, time_axis: int | None = None
) -> GridSpec:
    """Levels and synthesis widths for an image and a byte budget.

    Levels: down to about 4 latents along the longest axis, at most 7; under
    :data:`FULL_LEVEL_BPP` bits per pixel the finest level is 2x coarser than the pixels.
    The context coder is 8 wide from 1500 bytes, 4 from 700, 2 from 250
    (:data:`CONTEXT_WIDTHS`; on fixed fitted latents 8 and 4 wide spent 21% / 14% fewer
    bits than per-level Laplaces on tinc-zyx 256x, 27% / 26% on cells-tyx 128x).  The synthesis
    takes at most :data:`SYNTHESIS_SHARE` of the budget: ``(16, 16)``, ``(16,)``,
    ``(8,)``, ``(4,)``, linear.
    ``time_axis``: the coordinate axis that is time, if any (:meth:`.GridSpec.exponent`).

    A multi-channel image gets one latent feature per channel (at most
    :data:`MAX_FEATURES`), and the bits-per-pixel rule counts a feature's share.
    """
    longest = max(shape)
    features = min(channels, MAX_FEATURES)
    levels = max(2, min(7, int(math.log2(max(longest, 4) / 4)) + 1))
    bpp = 8 * budget_bytes / (math.prod(shape) * features)
    finest = 1 if bpp < FULL_LEVEL_BPP and levels > 2 else 0
    levels -= finest
    context = next((w for w, least in CONTEXT_WIDTHS if budget_bytes >= least), 0)
    for hidden in ((16, 16), (16,), (8,), (4,), ()):
        n = 0
        width = levels * features
        for h in hidden:
            n += width * h + h
            width = h
        n += width * channels + channels
        if n * WEIGHT_BITS_ESTIMATE / 8 <= SYNTHESIS_SHARE * budget_bytes:
            break  # else the last, a linear map
    return GridSpec(
        shape=tuple(shape),
        channels=channels,
        levels=levels,
        hidden=hidden,
        context=context,
        finest=finest,
        time_axis=time_axis,
        features=features,
        degree=UPSAMPLING_DEGREE,
    )


def training_latents(
    z: torch.Tensor, temp: torch.Tensor, hard: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stand-ins of latents ``z`` a training step prices (rate) and decodes
    (synthesis); ``noise`` is uniform on ``[-1/2, 1/2]``, ``hard`` 0 or 1.

    Soft (``hard`` 0): soft rounding + noise for both (C3 style).  Hard: the synthesis
    sees straight-through rounded latents, the rate still noisy ones: priced on rounded
    latents, the rate's gradient is 0 inside the dead zone (the mass of ``[-1/2, 1/2]``
    does not depend on where in it a latent sits), nothing held zeros at zero, and in
    the hard phase of a long fit the rate ran away whatever lambda did (hipsc-2d 64x,
    3000 steps: 14.7k -> 124k bits in 600 steps, 37.7 -> 35.1 dB).
    """
    soft = soft_round(z, temp) + noise
    rounded = z + (torch.round(z) - z).detach()
    for_rate = hard * (z + noise) + (1 - hard) * soft
    for_synthesis = hard * rounded + (1 - hard) * soft_round(soft, temp)
    return for_rate, for_synthesis


def iter_fit_grid(
    data: np.ndarray,
    ratio: float,
    *,
    steps: int = 1000,
    spec: GridSpec | None = None,
    lr: float = 1e-2,
    ste_fraction: float = 0.05,
    seed: int = 0,
    time_limit: float | None = None,
    report_every: int = 50,
    overhead_bytes: float | None = None,
    init: GridFit | None = None,
    compile: bool | None = None,
    gain: float = 0.03,
    latent_lr: float = LATENT_LR,
    control: str = "rounded",
    after_backward: Callable[[GridField, int, float], None] | None = None,
    time_axis: int | None = None,
    hard_latents: bool = False,
) -> Iterator[GridProgress | GridFit]:
    """Fit ``data`` (``(*shape)`` or ``(*shape, C)`` with ``spec.channels == C``).

    Yields :class:`GridProgress` every ``report_every`` steps and the :class:`GridFit`
    last.  ``time_limit`` (s) shortens the run: the schedule is rescaled to the steps the
    first ones' speed predicts (counted after the first step, which compiles).
    ``compile`` fuses the step with ``torch.compile`` (~1 min once, ~3x faster steps on
    CPU; default: from :data:`COMPILE_MIN_PIXELS` pixels).  ``init`` continues a fit
    (its field, lambda and compiled step); ``overhead_bytes`` is the measured size of
    everything but the latents (header, weights, tile table), estimated when not given.
    ``after_backward(field, step, fraction)`` runs after each step's backward pass and
    before the optimiser's step: a loss of its own can add to the parameters' gradients
    there (guidance does, on decoded windows).  ``time_axis`` (the coordinate axis that
    is time) shapes the levels when ``spec`` is chosen here (:func:`choose_spec`).
    ``hard_latents`` lets the latents move in the hard-rounded phase too (a rate-control
    round far under budget needs every latent moved by its step; by default they stay).
    """
    # tiny Laplace masses and shrinking latents reach subnormal floats, 5-20x slower on
    # CPU (steps went from 0.04 to 0.2-0.8 s on tinc-zyx); flush them to zero while
    # fitting (torch's default, off, is restored after: numpy warns under it)
    torch.set_flush_denormal(True)
    try:
        yield from _fit_steps(
            data,
            ratio,
            steps=steps,
            spec=spec,
            lr=lr,
            ste_fraction=ste_fraction,
            seed=seed,
            time_limit=time_limit,
            report_every=report_every,
            overhead_bytes=overhead_bytes,
            init=init,
            compile=compile,
            gain=gain,
            latent_lr=latent_lr,
            control=control,
            after_backward=after_backward,
            time_axis=time_axis,
            hard_latents=hard_latents,
        )
    finally:
        torch.set_flush_denormal(False)


def _fit_steps(
    data: np.ndarray,
    ratio: float,
    *,
    steps: int,
    spec: GridSpec | None,
    lr: float,
    ste_fraction: float,
    seed: int,
    time_limit: float | None,
    report_every: int,
    overhead_bytes: float | None,
    init: GridFit | None,
    compile: bool | None,
    gain: float,
    latent_lr: float,
    control: str,
    after_backward: Callable[[GridField, int, float], None] | None,
    time_axis: int | None,
    hard_latents: bool,
) -> Iterator[GridProgress | GridFit]:
    torch.manual_seed(seed)
    arr = np.asarray(data)
    raw_bytes = arr.nbytes
    target_bytes = max(1, int(raw_bytes / ratio))
    if spec is None:
        shape = arr.shape
        spec = choose_spec(tuple(shape), 1, target_bytes, time_axis)
    if arr.ndim == len(spec.shape):
        arr = arr[..., None]
    lo, hi = channel_range(arr)
    target = torch.from_numpy(normalised(arr, lo, hi))
    n_pix = int(np.prod(spec.shape))

    fld = GridField(spec) if init is None else init.field
    if init is None:
        with torch.no_grad():
            last = fld.synthesis[-1]
            assert isinstance(last, torch.nn.Linear)
            last.bias.copy_(target.reshape(-1, spec.channels).mean(0))
            fld.log_scale.fill_(math.log(0.3))
    # the entropy model's scales track the latents' spread: a faster learning rate
    groups: list[tuple[list[torch.nn.Parameter], float]] = [
        (list(fld.latents), latent_lr),
        ([fld.log_scale], 5.0),
        (list(fld.synthesis.parameters()), 1.0),
    ]
    if init is not None and init.optimiser is not None:
        opt = init.optimiser
    else:
        opt = torch.optim.Adam([{"params": g} for g, _ in groups], lr=lr)
    # The context network is an entropy coder fitted beside the field on the rounded
    # latents (what is coded); the field trains on the per-level Laplaces, and the
    # controller counts the latents' bits times what the context saves (``saving``).
    # Trained jointly through the noisy rate proxy, the context made the latents
    # predictable rather than informative: -0.3 dB (tinc-zyx 256x) and -0.28 dB
    # (cells-tyx 128x) at equal steps, and lambda ran away when its inputs were detached.
    ctx_opt = (
        torch.optim.Adam(fld.context_tensors(), lr=CONTEXT_LR) if fld.context is not None else None
    )
    # what the coder is expected to save until it is first fitted (measured 0.66-0.84
    # on the benchmark stacks): starting from 1 left lambda too high for too long
    saving = init.saving if init is not None else (CONTEXT_SAVING if ctx_opt else 1.0)
    n_weights = sum(p.numel() for p in [*fld.weight_tensors(), *fld.context_tensors()])
    edge = DEFAULT_EDGE[len(spec.shape)]

    def overhead_bits() -> float:
        if overhead_bytes is not None:
            return 8.0 * overhead_bytes
        return n_weights * WEIGHT_BITS_ESTIMATE + 8 * HEADER_ESTIMATE

    def step_loss(
        latents: list[torch.Tensor],
        scales: torch.Tensor,
        temp: torch.Tensor,
        hard: torch.Tensor,
        lam: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        syn, y_rate = [], []
        for z in latents:
            for_rate, for_synthesis = training_latents(z, temp, hard, torch.rand_like(z) - 0.5)
            y_rate.append(for_rate)
            syn.append(for_synthesis)
        rate = fld.rate(y_rate, scales, edge, plain=True)
        out = fld.synthesize(fld.features_dense(syn))
        mse = torch.mean((out - target) ** 2)
        return mse + lam * rate, mse.detach(), rate.detach()

    if init is not None and init.loss_fn is not None:
        loss_fn = init.loss_fn
    else:
        if compile is None:  # compiling (~30-70 s once) pays on large images only
            compile = n_pix >= COMPILE_MIN_PIXELS
        loss_fn = torch.compile(step_loss, dynamic=False) if compile else step_loss
    target_bits = max(8.0, 8.0 * target_bytes - overhead_bits())
    # lambda in units of MSE per (bit / pixel); start near the slope of D ~ R^-1/4 at
    # ~30 dB (2-3 dB per doubled rate at these rates)
    log_lam = math.log(0.25 * 1e-3 / (target_bits / n_pix) if init is None else init.lam)
    bits_ema = 0.0
    start = time.perf_counter()
    total = steps
    bits_now = float("nan")
    history: list[GridProgress] = [] if init is None else list(init.history)
    for step in range(steps):
        if step >= total:
            break
        frac = step / total
        hard = frac >= 1.0 - ste_fraction
        for g, (params, factor) in zip(opt.param_groups, groups, strict=True):
            g["lr"] = factor * lr * (0.5 * (1 + math.cos(math.pi * frac)) * 0.95 + 0.05)
            if hard and not hard_latents and params is groups[0][0]:
                g["lr"] = 0.0  # the latents stay (see the module's docstring)
        temp = 0.3 - 0.2 * min(1.0, frac / max(1.0 - ste_fraction, 1e-9))
        loss, mse, noisy_bits = loss_fn(
            list(fld.latents),
            fld.scales(),
            torch.tensor(temp),
            torch.tensor(1.0 if hard else 0.0),
            torch.tensor(math.exp(log_lam) / n_pix),
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:  # e.g. guidance adds its gradient (step, fraction)
            after_backward(fld, step, frac)
        opt.step()
        if ctx_opt is not None and step % CONTEXT_EVERY == CONTEXT_EVERY - 1:
            # the loss prices plain bits: a plain bit now costs ``new`` of a coded bit
            # where it cost ``saving``, so lambda follows (else the fit lands 20-40%
            # under budget: the controller alone moved too slowly, measured on cells-tyx)
            new = _fit_context(fld, ctx_opt, edge, CONTEXT_ITERATIONS)
            log_lam += math.log(new / saving)
            saving = new

        with torch.no_grad():
            rounded = [torch.round(z) for z in fld.latents]
            bits_now = saving * float(fld.rate(rounded, fld.scales(), edge, plain=True))
            if step % 50 == 0:
                target_bits = max(8.0, 8.0 * target_bytes - overhead_bits())
        # multiplicative controller on the smoothed rounded rate: more lambda when over
        signal = float(noisy_bits) if control == "noisy" and not hard else bits_now
        bits_ema = signal if step == 0 else 0.8 * bits_ema + 0.2 * signal
        err = math.log(max(bits_ema, 1.0) / target_bits)
        log_lam += (gain if not hard else gain / 2) * max(-1.0, min(1.0, err))
        if step == 0:
            mark = (0, time.perf_counter())
            per_step = float("nan")
        if time_limit is not None and step > 0:
            now = time.perf_counter()
            left = time_limit - (now - start)
            if step % 10 == 0:
                # re-plan on the smoothed recent speed (the machine is shared; the first
                # steps are slow): the schedule may shorten or lengthen, never past ``steps``
                recent = (now - mark[1]) / (step - mark[0])
                per_step = recent if step == 10 else 0.7 * per_step + 0.3 * recent
                mark = (step, now)
                if step >= 30 or left < 0:
                    total = max(step + 2, min(steps, step + 1 + int(left / per_step)))
            elif left < 0 and total > step + 2:  # slow steps (a large image): stop soon
                total = step + 2
        if step % report_every == 0 or step == total - 1:
            history.append(
                GridProgress(
                    step,
                    total,
                    -10 * math.log10(max(float(mse.detach()), 1e-20)),
                    bits_now,
                    target_bits,
                    math.exp(log_lam),
                    time.perf_counter() - start,
                )
            )
            yield history[-1]
    if ctx_opt is not None:  # the coder the file will use: fitted on the final latents
        saving = _fit_context(fld, ctx_opt, edge, CONTEXT_FINAL_ITERATIONS)
    yield GridFit(
        fld,
        lo,
        hi,
        math.exp(log_lam),
        target_bytes,
        history,
        loss_fn=loss_fn,
        saving=saving,
        optimiser=opt,
    )


def _fit_context(
    fld: GridField, opt: torch.optim.Optimizer, edge: Sequence[int], iterations: int
) -> float:
    """Optimiser steps of the context network on the current rounded latents; returns
    their bits under it over their bits under the per-level Laplaces (at most 1)."""
    latents = [torch.round(z.detach()) for z in fld.latents]
    scales = fld.scales().detach()
    for _ in range(iterations):
        bits = fld.rate(latents, scales, edge)
        opt.zero_grad(set_to_none=True)
        bits.backward()
        opt.step()
    with torch.no_grad():
        plain = float(fld.rate(latents, scales, edge, plain=True))
        coded = float(fld.rate(latents, scales, edge))
    return min(1.0, coded / plain) if plain > 0 else 1.0


def channel_range(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (the last axis) ``(min, max)``, float64.

    The field fits every channel on its own 0..1 range: under one range for all, a dim
    channel's errors weighed less (BBBC034 at 128x, 2 minutes: C1, half of C0's range,
    7.8 dB below C0, C2, a fifth, 2.7 dB below; each on its own range: C1 2.6 dB below,
    C2 2.4 dB above, with a latent grid per channel).
    """
    flat = arr.reshape(-1, arr.shape[-1])
    return flat.min(0).astype(np.float64), flat.max(0).astype(np.float64)


def normalised(arr: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``arr`` (channels last) on each channel's 0..1 range, float32."""
    return ((arr.astype(np.float64) - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)


def fit_grid(data: np.ndarray, ratio: float, **kwargs) -> GridFit:
    """Run :func:`iter_fit_grid` to the end and return the fit."""
    *_, last = iter_fit_grid(data, ratio, **kwargs)
    assert isinstance(last, GridFit)
    return last
