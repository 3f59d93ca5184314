"""Compress sources larger than memory, block by block, in one process or on a Dask cluster.

:func:`fit_source` is the streaming counterpart of :func:`~napari_inif.core.engine.fit`; it
produces the same file (same plan, same seeded per-block fits) from an
:class:`~napari_inif.core.io.source.ArraySource` that is never loaded whole:

1. *read*: one pass over the blocks gathers per-channel min/max (the intensity range) and
   per-block moments, from which each block's standard deviation of the normalised image
   follows (the content allocation of :func:`~napari_inif.core.codec.plan.plan`);
2. *fit*: the blocks are grouped by width into tasks of at most ``task_voxels`` padded
   values; each task reads only its own blocks from the store and fits them as one batched
   network with :class:`~napari_inif.core.codec.fitter.BlockFitter` for ``config.steps`` steps.
   A task returns its blocks' **float32** folded weights (a few KB to MB), not quantised ones:
   the quantiser is global (one ``half`` per kind of tensor for the whole file, chosen by rate
   control), so quantisation happens once all weights are gathered;
3. *quantise*: :func:`~napari_inif.core.codec.quant.rate_control` lands the payload on its byte
   budget (above :data:`~napari_inif.core.codec.quant.SAMPLED_RATE_CONTROL` weights its binary
   search runs on a sample of the blocks and only the last few candidates are coded in full:
   each full LZMA pass of a multi-megabyte payload takes seconds);
4. *quality* (optional): PSNR, max error and SSIM are streamed block by block, the
   decoded block against the source block.  SSIM is the voxel-weighted mean of per-block
   SSIMs (windows do not cross block borders), so it differs slightly from the SSIM of the
   whole image that :func:`~napari_inif.core.engine.fit` reports; PSNR and max error are exact.

With a ``distributed.Client`` the read, fit and quality tasks run on the cluster
(``retries`` on failure; a lost worker's tasks are rerun by the scheduler); without one
they run one after the other in this process.  Peak memory is a few tasks' blocks either
way.  Each block's result depends only on its pixels, the seed and the steps, so any
grouping and any cluster give the same weights up to float rounding.  ``time_limit`` and
``target_psnr`` are not used here: a fixed step budget keeps that property.

Cancelling is closing the generator (or :class:`Cancelled` from the ``cancel`` callback of
:func:`napari_inif.core.engine.compress`): pending tasks are cancelled, nothing is written.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_inif.core.codec import plan as _budget
from napari_inif.core.codec.blocks import BlockGrid
from napari_inif.core.codec.decode import FieldDecoder, InifArray
from napari_inif.core.codec.encoded import Encoded
from napari_inif.core.codec.fitter import (
    BlockFitter,
    flat_weights,
    intensity_range,
    pick_device,
    to_unit,
    unit_span,
)
from napari_inif.core.codec.header import FieldHeader
from napari_inif.core.codec.quant import dequantise, rate_control
from napari_inif.core.config import CompressionConfig
from napari_inif.core.engine import streamed_refusal
from napari_inif.core.engine.progress import Progress
from napari_inif.core.engine.record import PLACEHOLDER_QUALITY, fit_record
from napari_inif.core.io.source import ArraySource
from napari_inif.core.layout import Layout
from napari_inif.core.metrics.quality import Quality, QualityAccumulator, ssim

__all__ = [
    "BlockFit",
    "BlockStats",
    "FittedBlocks",
    "SourcePlan",
    "block_box",
    "cluster",
    "fit_source",
    "fit_weights",
    "group_blocks",
    "scan_source",
]

TASK_VOXELS = 1 << 24  # padded block values (voxels x channels) per task: ~64 MB as float32
RETRIES = 2
_POLL = 0.5  # seconds between progress reports while cluster tasks run


@dataclass(frozen=True)
class BlockStats:
    """What one pass over the blocks learns about the source.

    ``lo``/``hi`` are the per-channel normalisation range (``hi > lo``), ``data_min`` /
    ``data_max`` the true extremes over all channels, ``block_std`` each block's standard
    deviation of the normalised image (all its channels together).
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    data_min: float
    data_max: float
    block_std: np.ndarray


@dataclass
class BlockFit:
    """What one task returns: its blocks' float32 folded weights and how the fit went."""

    weights: dict[int, list[np.ndarray]]
    mse: float
    device: str
    seconds: float


@dataclass
class FittedBlocks:
    """All blocks' weights (:func:`fit_weights`), the devices used and the task count."""

    weights: dict[int, list[np.ndarray]]
    devices: list[str]
    tasks: int


@dataclass(frozen=True)
class SourcePlan:
    """A source's plan: the header to fit (without fit results) and its statistics."""

    plan: _budget.Plan
    stats: BlockStats

    @property
    def header(self) -> FieldHeader:
        """The header the blocks are fitted against."""
        return replace(self.plan.header, fit={})


def _phase(config: CompressionConfig, start: float, phase: str) -> Progress:
    """A progress report of a phase after the fit (no step loss to report)."""
    nan = float("nan")
    return Progress(config.steps, config.steps, nan, nan, time.perf_counter() - start, 0.0, phase)


# --- block geometry ------------------------------------------------------------------


def block_box(
    layout: Layout, grid: BlockGrid, block: int, *, fitted: bool = False
) -> tuple[slice, ...]:
    """Slices of ``block`` (its fitted region if ``fitted``) in the original array's axes."""
    box = grid.fit_bounds(block) if fitted else grid.bounds(block)
    bounds = dict(zip(layout.coord_axes, box, strict=True))
    return tuple(
        slice(*bounds[i]) if i in bounds else slice(None) for i in range(len(layout.shape))
    )


def _read_block(
    source: ArraySource, layout: Layout, grid: BlockGrid, block: int, *, fitted: bool = False
) -> np.ndarray:
    return layout.to_canonical(source.read(block_box(layout, grid, block, fitted=fitted)))


def group_blocks(header: FieldHeader, task_voxels: int = TASK_VOXELS) -> list[list[int]]:
    """Blocks in tasks: one width per task, at most ``task_voxels`` padded values each."""
    grid = header.grid
    per_block = math.prod(grid.fit_edges) * header.layout.channels
    cap = max(1, task_voxels // per_block)
    groups: list[list[int]] = []
    for width in sorted(set(header.widths)):
        members = [b for b in range(grid.n_blocks) if header.widths[b] == width]
        groups += [members[i : i + cap] for i in range(0, len(members), cap)]
    return groups


# --- task functions (module level: they run on Dask workers) -------------------------


def _moments_task(
    source: ArraySource, layout: Layout, grid: BlockGrid, blocks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per block and channel: count, mean, centred sum of squares, min and max."""
    c = layout.channels
    out = {k: np.empty((len(blocks), c)) for k in ("mean", "m2", "min", "max")} | {
        "n": np.empty(len(blocks))
    }
    for i, block in enumerate(blocks):
        flat = _read_block(source, layout, grid, block).reshape(-1, c).astype(np.float64)
        if not np.all(np.isfinite(flat)):
            raise ValueError("the image contains NaN or infinite values")
        mean = flat.mean(axis=0)
        out["n"][i] = flat.shape[0]
        out["mean"][i] = mean
        out["m2"][i] = np.square(flat - mean).sum(axis=0)
        out["min"][i] = flat.min(axis=0)
        out["max"][i] = flat.max(axis=0)
    return out


def _combine_moments(parts: list[dict[str, np.ndarray]], n_blocks: int) -> BlockStats:
    keys = ("n", "mean", "m2", "min", "max")
    m = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    assert m["n"].shape[0] == n_blocks
    lo, hi = intensity_range(m["min"].min(axis=0), m["max"].max(axis=0))
    data_min, data_max = float(m["min"].min()), float(m["max"].max())
    lo64, span = np.asarray(lo), unit_span(lo, hi)
    a = 2.0 / span  # normalised = a * x + b, per channel
    b = -2.0 * lo64 / span - 1.0
    means = a * m["mean"] + b  # (blocks, C)
    var = (a**2 * m["m2"] / m["n"][:, None]).mean(axis=1) + means.var(axis=1)
    return BlockStats(lo, hi, data_min, data_max, np.sqrt(np.maximum(var, 0.0)))


def _fit_steps(
    source: ArraySource,
    header: FieldHeader,
    config: CompressionConfig,
    blocks: Sequence[int],
) -> Generator[float, None, BlockFit]:
    """Fit ``blocks`` reading only their pixels; yields the MSE after every step."""
    layout, grid = header.layout, header.grid
    device = pick_device(config.device)
    start = time.perf_counter()

    def pixels(block: int) -> np.ndarray:
        region = _read_block(source, layout, grid, block, fitted=True)
        return to_unit(region, header.lo, header.hi)

    fitter = BlockFitter(header, config, blocks, pixels, device)
    mse = float("nan")
    for step in range(1, config.steps + 1):
        mse = fitter.step(step / config.steps)
        yield mse
    fitter.finish()
    return BlockFit(fitter.weights(), mse, device.type, time.perf_counter() - start)


def _fit_task(
    source: ArraySource,
    header: FieldHeader,
    config: CompressionConfig,
    blocks: Sequence[int],
    torch_threads: int | None = None,
) -> BlockFit:
    """One Dask task: fit ``blocks`` to the end; float32 weights per block and stats."""
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    gen = _fit_steps(source, header, config, blocks)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _quality_task(
    source: ArraySource,
    header: FieldHeader,
    weights: dict[int, list[np.ndarray]],
    data_range: float,
    plane_axes: int,
) -> QualityAccumulator:
    """Squared error, max error and voxel-weighted SSIM of the decoded ``weights`` blocks."""
    layout, grid = header.layout, header.grid
    per = 2 * header.depth
    flat: list[Any] = [None] * (grid.n_blocks * per)
    for block, tensors in weights.items():
        flat[block * per : (block + 1) * per] = tensors
    decoded = InifArray(FieldDecoder(header, flat))
    out = QualityAccumulator(data_range, np.dtype(layout.dtype))
    for block in weights:
        box = block_box(layout, grid, block)
        a = layout.to_canonical(source.read(box)).astype(np.float64)
        b = layout.to_canonical(decoded[box]).astype(np.float64)
        diff = a - b
        s = ssim(
            np.moveaxis(a, -1, 0),
            np.moveaxis(b, -1, 0),
            plane_axes=plane_axes,
            data_range=data_range,
        )
        # the SSIM sum is voxel-weighted: a block's weight is its number of values
        out.merge(
            float(np.square(diff).sum()),
            diff.size,
            float(np.abs(diff).max()),
            s * diff.size,
            diff.size,
        )
    return out


# --- running tasks here or on a cluster ----------------------------------------------


def _run_tasks(
    client: Any,
    fn: Callable[..., Any],
    arglist: list[tuple[Any, ...]],
    label: str,
) -> Generator[tuple[int, Any] | None, None, None]:
    """Run ``fn(*args)`` for every args; yields ``(index, result)`` as they finish.

    On a client it also yields ``None`` every :data:`_POLL` seconds while waiting (so the
    caller can report progress and be closed); closing, an error or an interrupt cancels
    every task still pending.
    """
    if client is None:
        for i, args in enumerate(arglist):
            yield i, fn(*args)
        return
    import uuid

    from distributed import wait

    token = uuid.uuid4().hex[:8]
    futures = [
        client.submit(fn, *args, key=f"inif-{label}-{i}-{token}", retries=RETRIES, pure=False)
        for i, args in enumerate(arglist)
    ]
    index = {f.key: i for i, f in enumerate(futures)}
    pending = set(futures)
    try:
        while pending:
            try:
                done, pending = wait(list(pending), timeout=_POLL, return_when="FIRST_COMPLETED")
            except TimeoutError:
                yield None
                continue
            pending = set(pending)
            for f in done:
                result = f.result()  # raises the task's error once its retries are spent
                f.release()
                yield index[f.key], result
    finally:
        if pending:
            client.cancel(list(pending), force=True)


def _shared(client: Any, source: ArraySource) -> Any:
    """The source as tasks receive it: in-memory data is scattered once to every worker."""
    if client is not None and source.kind in ("numpy", "array"):
        return client.scatter(source, broadcast=True, hash=False)
    return source


# --- the pipeline --------------------------------------------------------------------


def scan_source(
    source: ArraySource,
    config: CompressionConfig,
    *,
    client: Any = None,
    task_voxels: int = TASK_VOXELS,
    header_fields: dict[str, Any] | None = None,
    _shared_source: Any = None,
) -> Generator[Progress, None, SourcePlan]:
    """One pass over the blocks, then the plan; yields ``"read"`` progress.

    ``header_fields`` go to :func:`~napari_inif.core.codec.plan.plan` (``scale``, ``unit``,
    ``metadata``, ``fit``); the intensity range and the block deviations come from the pass.
    Raises :class:`~napari_inif.core.errors.BudgetError` before reading anything if the ratio is
    unreachable.
    """
    layout = source.layout
    grid = _budget.plan(layout, config).grid  # the grid does not depend on content
    per_block = math.prod(grid.fit_edges) * layout.channels
    cap = max(1, task_voxels // per_block)
    chunks = [list(range(i, min(i + cap, grid.n_blocks))) for i in range(0, grid.n_blocks, cap)]
    shared = _shared(client, source) if _shared_source is None else _shared_source
    start = time.perf_counter()
    parts: list[Any] = [None] * len(chunks)
    done = 0
    for item in _run_tasks(
        client, _moments_task, [(shared, layout, grid, c) for c in chunks], "read"
    ):
        if item is not None:
            parts[item[0]] = item[1]
            done += len(chunks[item[0]])
        elapsed = time.perf_counter() - start
        eta = elapsed * (grid.n_blocks - done) / max(done, 1)
        yield Progress(0, config.steps, float("nan"), float("nan"), elapsed, eta, "read")
    stats = _combine_moments(parts, grid.n_blocks)
    fields = dict(header_fields or {})
    plan = _budget.plan(
        layout, config, block_std=stats.block_std, lo=stats.lo, hi=stats.hi, **fields
    )
    if plan.grid != grid:  # pragma: no cover - guarded by budget.plan's construction
        raise RuntimeError("the block grid changed between the two plans")
    return SourcePlan(plan, stats)


def fit_weights(
    source: ArraySource,
    header: FieldHeader,
    config: CompressionConfig,
    *,
    client: Any = None,
    task_voxels: int = TASK_VOXELS,
    torch_threads: int | None = None,
    _shared_source: Any = None,
) -> Generator[Progress, None, FittedBlocks]:
    """Fit every block of ``header``; yields ``"fit"`` progress.

    Returns the :class:`FittedBlocks`.
    ``Progress.step`` counts steps as if all blocks were fitted together.
    """
    n_blocks = header.grid.n_blocks
    groups = group_blocks(header, task_voxels)
    steps = config.steps
    weights: dict[int, list[np.ndarray]] = {}
    devices: set[str] = set()
    sq_err = 0.0  # sum over finished blocks of their last MSE
    start = time.perf_counter()
    block_steps = 0  # steps done, summed over blocks

    def report(running_mse: float | None = None) -> Progress:
        mse = sq_err / len(weights) if weights else (running_mse or float("nan"))
        psnr = 10 * math.log10(4.0 / max(mse, 1e-12)) if mse == mse else float("nan")
        elapsed = time.perf_counter() - start
        eta = elapsed * (n_blocks * steps - block_steps) / max(block_steps, 1)
        return Progress(block_steps // n_blocks, steps, mse, psnr, elapsed, eta, "fit")

    if client is None:
        for blocks in groups:
            gen = _fit_steps(source, header, config, blocks)
            while True:
                try:
                    mse = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                block_steps += len(blocks)
                yield report(mse)
            weights.update(result.weights)
            devices.add(result.device)
            sq_err += result.mse * len(blocks)
    else:
        shared = _shared(client, source) if _shared_source is None else _shared_source
        args = [(shared, header, config, blocks, torch_threads) for blocks in groups]
        for item in _run_tasks(client, _fit_task, args, "fit"):
            if item is not None:
                i, result = item
                weights.update(result.weights)
                devices.add(result.device)
                sq_err += result.mse * len(groups[i])
                block_steps += len(groups[i]) * steps
            yield report()
    return FittedBlocks(weights, sorted(devices), len(groups))


def fit_source(
    source: ArraySource,
    config: CompressionConfig | None = None,
    *,
    client: Any = None,
    quality: bool = True,
    task_voxels: int | None = None,
    torch_threads: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> Generator[Progress, None, Encoded]:
    """Fit a source block by block; yields :class:`~napari_inif.core.engine.progress.Progress`,
    returns :class:`Encoded`.

    Parameters
    ----------
    source
        The image (:func:`~napari_inif.core.io.source.open_source` or
        :meth:`ArraySource.from_array`).
    config
        How to compress; ``steps`` is the per-block step budget (``time_limit`` and
        ``target_psnr`` are refused: see the module docstring).
    client
        A ``distributed.Client`` to run the tasks on, or ``None`` for this process.
    quality
        Stream PSNR / SSIM / max error into ``header.fit`` (decodes every block once);
        ``False`` skips it for huge volumes (``header.fit["quality"] == "skipped"``).
    task_voxels
        Padded block values (voxels x channels) per task: bounds a task's memory (about
        8 bytes each while it runs).  Default :data:`TASK_VOXELS`, 8x that when fitting
        here on a CUDA GPU, where larger batches keep the GPU busy.
    torch_threads
        ``torch.set_num_threads`` in each cluster task (e.g. cores per worker).
    metadata
        Small JSON-serialisable dict stored in the header.

    Phases reported: ``"read"`` (statistics pass), ``"fit"``, ``"quantise"``,
    ``"quality"``, ``"done"``.
    """
    config = config or CompressionConfig()
    why = streamed_refusal(config)
    if why is not None:  # one clear line, never a silently different file
        raise ValueError(why)
    start = time.perf_counter()
    layout = source.layout
    plane_axes = 3 if len(layout.coord_axes) >= 3 and "Z" in layout.axes else 2
    engine = "local" if client is None else "dask"
    _budget.plan(layout, config)  # BudgetError now, before anything is read or sent
    if task_voxels is None:
        local_gpu = client is None and pick_device(config.device).type == "cuda"
        task_voxels = TASK_VOXELS * (8 if local_gpu else 1)
    placeholder = fit_record(
        config,
        steps=config.steps,
        seconds=99999.99,
        device="cpu+cuda",
        metrics=PLACEHOLDER_QUALITY if quality else None,
        engine=engine,
        tasks=99999,
    )
    shared = _shared(client, source)
    try:
        source_plan = yield from scan_source(
            source,
            config,
            client=client,
            task_voxels=task_voxels,
            header_fields={
                "scale": source.scale,
                "unit": source.unit,
                "metadata": {"source": source.name, **(metadata or {})},
                "fit": placeholder,
            },
            _shared_source=shared,
        )
        header = source_plan.header
        fitted = yield from fit_weights(
            source,
            header,
            config,
            client=client,
            task_voxels=task_voxels,
            torch_threads=torch_threads,
            _shared_source=shared,
        )
        n_blocks = header.grid.n_blocks
        yield _phase(config, start, "quantise")
        flat = flat_weights(fitted.weights, n_blocks)
        fitted.weights = {}  # the flat list holds them now
        q, payload = rate_control(
            flat, source_plan.plan.payload_budget, header.tensor_kinds(), per_block=2 * header.depth
        )
        del flat
        encoded = Encoded(header.with_halves(q.halves), q, payload)
        metrics = None
        if quality:
            metrics = yield from _stream_quality(
                shared, encoded, source_plan.stats, plane_axes, client, task_voxels, config
            )
    finally:
        if client is not None and shared is not source:
            with contextlib.suppress(Exception):
                client.cancel([shared])
    devices = fitted.devices
    device = devices[0] if len(devices) == 1 else "+".join(devices)
    seconds = time.perf_counter() - start
    record = fit_record(
        config,
        steps=config.steps,
        seconds=seconds,
        device=device,
        metrics=metrics,
        engine=engine,
        tasks=fitted.tasks,
    )
    encoded = encoded.with_header(encoded.header.with_fit(**record))
    psnr = metrics.psnr if metrics else float("nan")
    yield Progress(config.steps, config.steps, float("nan"), psnr, seconds, 0.0, "done")
    return encoded


def _stream_quality(
    source: Any,
    encoded: Encoded,
    stats: BlockStats,
    plane_axes: int,
    client: Any,
    task_voxels: int,
    config: CompressionConfig,
) -> Generator[Progress, None, Quality]:
    header = encoded.header
    per = 2 * header.depth
    deq = dequantise(encoded.weights)
    data_range = (stats.data_max - stats.data_min) or 1.0
    args = []
    for blocks in group_blocks(header, task_voxels):
        w = {b: deq[b * per : (b + 1) * per] for b in blocks}
        args.append((source, header, w, data_range, plane_axes))
    del deq
    start = time.perf_counter()
    total = QualityAccumulator(data_range, np.dtype(header.layout.dtype))
    for item in _run_tasks(client, _quality_task, args, "quality"):
        if item is not None:
            part = item[1]
            total.merge(part.sse, part.n, part.max_error, part.ssim_sum, part.ssim_weight)
        yield _phase(config, start, "quality")
    return total.result()


@contextlib.contextmanager
def cluster(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler``, or on a local cluster of ``workers``
    processes (one thread each), or ``None`` when neither is given."""
    if scheduler is None and not workers:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as local,
        Client(local) as client,
    ):
        yield client
