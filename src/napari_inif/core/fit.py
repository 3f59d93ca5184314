"""Fitting an image into a field, as a generator that yields progress.

``fit(data, config)`` yields :class:`Progress` after every step and returns the
:class:`~.encoded.Encoded` result (``StopIteration.value``); :func:`compress` drives it
to the end.  Cancelling is closing the generator (or simply not iterating further):
nothing is written anywhere by fitting.  The CLI's progress bar, the napari widget's
``thread_worker`` and a Dask task all drive this same generator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from . import budget as _budget
from .config import CompressionConfig
from .decode import FieldDecoder, InifArray
from .encoded import Encoded
from .field import ARCHITECTURES, Architecture, BatchedSiren, fold_frequencies
from .header import FieldHeader
from .layout import Layout
from .losses import Guidance, make_guidance
from .metrics import Quality, quality
from .quant import rate_control
from .render import WindowRenderer

__all__ = [
    "OPTIMIZERS",
    "Progress",
    "compress",
    "drive",
    "fit",
    "pick_device",
    "register_optimizer",
]

#: Optimisers by name: ``factory(params, lr) -> torch.optim.Optimizer``.  A learned
#: optimiser (VeLO in the INIF paper) plugs in here.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "adamax": lambda params, lr: torch.optim.Adamax(params, lr=lr),
}


def register_optimizer(name: str, factory: Callable[..., torch.optim.Optimizer]) -> None:
    """Make an optimiser available to :class:`CompressionConfig` by ``name``."""
    OPTIMIZERS[name] = factory


@dataclass(frozen=True)
class Progress:
    """One report of a running fit.

    ``psnr`` is measured on the step's random coordinates, against the data range, in
    dB; ``preview`` is a lazy view of the current (unquantised) field when asked for.
    """

    step: int
    steps: int
    loss: float
    psnr: float
    elapsed: float
    eta: float
    phase: str  # "fit", "quantise", "done"
    preview: InifArray | None = None


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; other names are passed to torch."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def normalise(canon: np.ndarray) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """Map each channel of a canonical array to ``[-1, 1]``: ``(norm, lo, hi)``."""
    flat = canon.reshape(-1, canon.shape[-1]).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise ValueError("the image contains NaN or infinite values")
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    hi = np.where(hi > lo, hi, lo + 1.0)
    norm = (canon.astype(np.float32) - lo.astype(np.float32)) / (hi - lo).astype(np.float32)
    return norm * 2 - 1, tuple(float(v) for v in lo), tuple(float(v) for v in hi)


class _Group:
    """Blocks of one width, fitted as one batched network."""

    def __init__(self, blocks: list[int], arch: Architecture, net: BatchedSiren,
                 data: torch.Tensor, extents: torch.Tensor):
        self.blocks = blocks
        self.arch = arch
        self.net = net
        self.data = data  # (B, prod(edges), C) padded block pixels
        self.extents = extents  # (B, d) float block lengths

    def sample(self, n: int, edges: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Random pixel coordinates inside each block: ``(inputs, targets)``."""
        b, d = self.extents.shape
        u = torch.rand(b, n, d, generator=gen, device=self.data.device)
        idx = torch.floor(u * self.extents[:, None, :]).clamp_(min=0)
        inputs = 2 * (idx + 0.5) / self.extents[:, None, :] - 1
        strides = torch.ones(d, device=self.data.device)
        for a in range(d - 2, -1, -1):
            strides[a] = strides[a + 1] * edges[a + 1]
        flat = (idx * strides).sum(-1).long()
        targets = torch.gather(
            self.data, 1, flat[..., None].expand(-1, -1, self.data.shape[-1])
        )
        return inputs, targets


def _block_tensor(norm: np.ndarray, plan_header: FieldHeader, blocks: list[int]) -> np.ndarray:
    grid = plan_header.grid
    edges = grid.edges
    c = norm.shape[-1]
    out = np.empty((len(blocks), *edges, c), np.float32)
    for i, block in enumerate(blocks):
        region = norm[tuple(slice(a, b) for a, b in grid.bounds(block))]
        pad = [(0, e - n) for e, n in zip(edges, region.shape[:-1], strict=True)] + [(0, 0)]
        out[i] = np.pad(region, pad, mode="edge")
    return out.reshape(len(blocks), -1, c)


def _folded_weights(groups: list[_Group], n_blocks: int) -> list[np.ndarray]:
    """Flat float32 tensors in payload order (block, layer, W then b)."""
    per_block: list[list[np.ndarray]] = [[] for _ in range(n_blocks)]
    for g in groups:
        for w, b in fold_frequencies(g.net):
            w_np, b_np = w.cpu().numpy(), b.cpu().numpy()
            for j, block in enumerate(g.blocks):
                per_block[block] += [w_np[j], b_np[j, 0]]
    return [t for block in per_block for t in block]


def fit(
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
        For unsupported input; :class:`~.budget.BudgetError` for an unreachable ratio.
    """
    config = config or CompressionConfig()
    data = np.asarray(data)
    if data.dtype.kind not in "uif" or data.dtype.name not in ("uint8", "uint16", "float32"):
        raise ValueError(
            f"unsupported dtype {data.dtype}; supported: uint8, uint16, float32"
        )
    layout = Layout.of(data, axes)
    canon = layout.to_canonical(data)
    norm, lo, hi = normalise(canon)
    device = pick_device(config.device)
    guide = make_guidance(config, norm, device, config.seed)  # None without guidance
    # Size the header with the fit record it will carry (placeholder numbers of full length).
    placeholder = _fit_record(
        config, config.steps, 99999.99, device, Quality(99.9999, 99.9999, 0.9999, 65535.0), guide
    )
    plan = _budget.plan(
        layout, config, norm, lo=lo, hi=hi, scale=scale, unit=unit, metadata=metadata or {},
        fit=placeholder,
    )
    header = replace(plan.header, fit={})
    start = time.perf_counter()
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    sample_gen = torch.Generator(device=device).manual_seed(config.seed + 1)

    edges = torch.tensor(header.grid.edges, dtype=torch.float32, device=device)
    groups = []
    for width in sorted(set(header.widths)):
        blocks = [b for b, w in enumerate(header.widths) if w == width]
        arch = header.arch(blocks[0])
        net = ARCHITECTURES[config.architecture](
            arch, len(blocks), w0=config.w0, w0_first=config.w0_first, generator=gen
        ).to(device)
        block_data = torch.from_numpy(_block_tensor(norm, header, blocks)).to(device)
        extents = torch.tensor(
            [header.grid.extent(b) for b in blocks], dtype=torch.float32, device=device
        )
        groups.append(_Group(blocks, arch, net, block_data, extents))

    render = WindowRenderer(header.grid, groups) if guide is not None else None
    params = [p for g in groups for p in g.net.parameters() if p.requires_grad]
    freq_ids = {id(p) for g in groups for p in g.net.log_freqs}
    optimizer = OPTIMIZERS[config.optimizer](
        [
            {"params": [p for p in params if id(p) not in freq_ids], "scale": 1.0},
            {"params": [p for p in params if id(p) in freq_ids], "scale": config.freq_lr_scale},
        ],
        config.lr,
    )
    per_block = max(16, config.batch_size // header.grid.n_blocks)
    steps = config.steps
    ema = None
    last_preview = start
    step = 0
    for step in range(1, steps + 1):
        elapsed = time.perf_counter() - start
        frac = step / steps
        if config.time_limit:
            frac = max(frac, elapsed / config.time_limit)
        lr = config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for pg in optimizer.param_groups:
            pg["lr"] = lr * pg["scale"]
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for g in groups:
            inputs, targets = g.sample(per_block, edges, sample_gen)
            total = total + torch.nn.functional.mse_loss(
                g.net(inputs), targets, reduction="sum"
            ) / targets.shape[-1]
        loss = total / (per_block * header.grid.n_blocks)
        loss.backward()
        if guide is not None:  # adds the rescaled guidance gradient to p.grad
            guide.add_gradient(render, params, step, frac)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        mse = float(loss.detach())
        psnr = 10 * math.log10(4.0 / max(mse, 1e-12))
        ema = psnr if ema is None else 0.9 * ema + 0.1 * psnr
        elapsed = time.perf_counter() - start
        rate = elapsed / step
        remaining = (steps - step) * rate
        if config.time_limit:
            remaining = min(remaining, max(0.0, config.time_limit - elapsed))
        preview = None
        if preview_every is not None and time.perf_counter() - last_preview >= preview_every:
            last_preview = time.perf_counter()
            preview = InifArray(FieldDecoder(header, _folded_weights(groups, header.grid.n_blocks)))
        yield Progress(step, steps, mse, psnr, elapsed, remaining, "fit", preview)
        if config.time_limit and elapsed >= config.time_limit:
            break
        if config.target_psnr is not None and ema >= config.target_psnr:
            break

    yield Progress(step, steps, mse, psnr, time.perf_counter() - start, 0.0, "quantise")
    weights = _folded_weights(groups, header.grid.n_blocks)
    q, payload = rate_control(weights, plan.payload_budget)
    encoded = Encoded(_with_half(header, q.half), q, payload)
    decoded = encoded.array()[...]
    canon_dec = layout.to_canonical(decoded)
    metrics = quality(
        np.moveaxis(canon, -1, 0), np.moveaxis(canon_dec, -1, 0),
        plane_axes=3 if len(layout.coord_axes) >= 3 and "Z" in layout.axes else 2,
    )
    seconds = time.perf_counter() - start
    agreement = guide.agreement(canon, canon_dec) if guide is not None else None
    encoded = encoded.with_header(
        encoded.header.with_fit(
            **_fit_record(config, step, seconds, device, metrics, guide, agreement)
        )
    )
    yield Progress(step, steps, mse, metrics.psnr, seconds, 0.0, "done")
    return encoded


def _with_half(header: FieldHeader, half: int) -> FieldHeader:
    return replace(header, half=half)


def _fit_record(
    config: CompressionConfig, steps: int, seconds: float, device: torch.device, metrics: Quality,
    guide: Guidance | None = None, agreement: Any = None,
) -> dict[str, Any]:
    """What the header says about the fit (and the guidance, when there is one)."""
    extra = {} if guide is None else {
        "guidance": guide.record(agreement, placeholder=agreement is None)
    }
    return {
        "architecture": config.architecture,
        "steps": steps,
        "seconds": round(seconds, 2),
        "device": str(device),
        "seed": config.seed,
        "w0": config.w0,
        "w0_first": config.w0_first,
        **metrics.as_dict(),
        **extra,
    }


def drive(gen: Generator[Progress, None, Encoded],
          on_progress: Callable[[Progress], None] | None = None) -> Encoded:
    """Run a :func:`fit` generator to the end and return its result."""
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(p)


def compress(data: np.ndarray, config: CompressionConfig | None = None, **kw: Any) -> Encoded:
    """Fit ``data`` to the end (see :func:`fit` for the arguments)."""
    return drive(fit(data, config, **kw))
