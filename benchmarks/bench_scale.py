"""Scale (issue 8): a volume larger than this benchmark's memory bound, read from Zarr.

Volume: a uint16 ZYX Zarr made here by stacking a real 1024x1024 hiPSC field
(../shared/data/bbbc034_AICS_12_134_C0.tif, BBBC034) shifted by (2z, z) pixels per plane,
so the volume varies smoothly along Z, plus Gaussian noise of standard deviation
sqrt(mean intensity) (shot-noise-like, so planes are not exact copies and the Zarr chunks
do not compress to nothing).  Synthetic in Z; the content is real in Y/X.

    # everything (generate, compress, batching, cleanup), ~2.1 GB volume:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale.py all --gb 2.1 --steps 20

    # the parts:
    .venv/bin/python benchmarks/bench_scale.py generate --gb 2.1 --out /tmp/inif_scale/vol.zarr
    .venv/bin/python benchmarks/bench_scale.py compress /tmp/inif_scale/vol.zarr --steps 20 \
        [--workers 2] [--ratio 256]
    .venv/bin/python benchmarks/bench_scale.py batching /tmp/inif_scale/vol.zarr \
        [--blocks 32 --steps 10 --device cpu|cuda]

``compress`` runs :func:`napari_inif.core.engine.compress` with the quality
pass skipped (decoding ~1e9 voxels through the fields is hours on two CPU cores), prints
each phase's time, the PSNR measured on a few decoded sample blocks, and the peak RSS
(``ru_maxrss``) of this process and, with ``--workers``, of every worker.  ``batching``
fits the same blocks of the plan as one batched network and one block at a time
(:class:`napari_inif.core.codec.fitter.BlockFitter`) and prints block-steps per second of each.
``all`` runs each part in its own process (so each RSS is its own) and removes the volume.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PLANE = 1024 * 1024 * 2  # bytes of one uint16 1024x1024 plane


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(out: Path, gb: float) -> None:
    import tifffile
    import zarr

    base = tifffile.imread(DATA / "bbbc034_AICS_12_134_C0.tif")
    assert base.shape == (1024, 1024) and base.dtype == np.uint16
    depth = max(64, round(gb * 1e9 / PLANE / 64) * 64)
    t = time.perf_counter()
    arr = zarr.create_array(
        str(out), shape=(depth, 1024, 1024), chunks=(64, 256, 256), dtype="uint16", overwrite=True
    )
    arr.attrs["_ARRAY_DIMENSIONS"] = ["z", "y", "x"]
    sigma = float(np.sqrt(base.mean()))  # shot-noise level of the mean intensity
    noise = np.random.default_rng(0).normal(0, sigma, (64, 1024, 1024)).astype(np.int16)
    for z0 in range(0, depth, 64):
        slab = np.stack([np.roll(base, (2 * z, z), axis=(0, 1)) for z in range(z0, z0 + 64)])
        slab = slab.astype(np.int32) + np.roll(noise, 37 * z0 // 64, axis=1)
        arr[z0 : z0 + 64] = np.clip(slab, 0, 65535).astype(np.uint16)
    raw = depth * PLANE
    disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(
        json.dumps(
            {
                "part": "generate",
                "shape": [depth, 1024, 1024],
                "raw_GB": round(raw / 1e9, 3),
                "zarr_on_disk_GB": round(disk / 1e9, 3),
                "seconds": round(time.perf_counter() - t, 1),
                "peak_rss_MB": round(peak_rss_mb()),
            }
        ),
        flush=True,
    )


def compress(path: Path, ratio: float, steps: int, workers: int | None, out: Path) -> None:
    import torch

    from napari_inif.core import CompressionConfig
    from napari_inif.core.engine.distributed import block_box, cluster, fit_source
    from napari_inif.core.io.source import open_source

    if not workers:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    config = CompressionConfig(ratio=ratio, steps=steps, seed=0)
    source = open_source(path)
    phases: dict[str, float] = {}
    t0 = last = time.perf_counter()
    with cluster(workers=workers) as client:
        gen = fit_source(source, config, client=client, quality=False, torch_threads=1)
        phase = None
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                enc = stop.value
                break
            if p.phase != phase:
                now = time.perf_counter()
                if phase is not None:
                    phases[phase] = round(now - last, 1)
                phase, last = p.phase, now
        worker_rss = (
            client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            if client is not None
            else {}
        )
    total = time.perf_counter() - t0
    enc.save(out)
    h = enc.header
    # Quality on a few blocks (the full pass is skipped): decode them and compare.
    grid, layout = h.grid, h.layout
    arr = enc.array()
    sample = sorted({0, grid.n_blocks // 3, 2 * grid.n_blocks // 3, grid.n_blocks - 1})
    sse, n = 0.0, 0
    for b in sample:
        box = block_box(layout, grid, b)
        diff = source.read(box).astype(np.float64) - arr[box]
        sse += float(np.square(diff).sum())
        n += diff.size
    data_range = max(h.hi) - min(h.lo)
    print(
        json.dumps(
            {
                "part": "compress",
                "engine": h.fit["engine"],
                "workers": workers or 0,
                "shape": list(layout.shape),
                "raw_GB": round(layout.raw_bytes / 1e9, 3),
                "ratio_asked": ratio,
                "ratio": round(enc.ratio, 1),
                "file_MB": round(enc.nbytes / 1e6, 2),
                "blocks": grid.n_blocks,
                "block_edges": list(grid.edges),
                "depth": h.depth,
                "widths": [min(h.widths), max(h.widths)],
                "tasks": h.fit["tasks"],
                "steps_per_block": steps,
                "phase_seconds": phases,
                "total_seconds": round(total, 1),
                "psnr_on_sample_blocks": round(10 * math.log10(data_range**2 / (sse / n)), 2),
                "sample_blocks": sample,
                "peak_rss_MB": round(peak_rss_mb()),
                "worker_peak_rss_MB": {k: round(v) for k, v in worker_rss.items()},
            }
        ),
        flush=True,
    )


def batching(
    path: Path, ratio: float, n_blocks: int, steps: int, device_name: str, batch_size: int
) -> None:
    import torch

    from napari_inif.core import CompressionConfig
    from napari_inif.core.codec.fitter import BlockFitter, pick_device, to_unit
    from napari_inif.core.engine.distributed import _read_block
    from napari_inif.core.io.source import open_source

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    config = CompressionConfig(ratio=ratio, steps=steps, seed=0, batch_size=batch_size)
    source = open_source(path)
    layout = source.layout
    # The plan of the whole volume with uniform allocation: all blocks get one width, and
    # the statistics pass is not needed to time fitting (the range is the dtype's).
    uniform = CompressionConfig(**{**config.to_dict(), "allocation": "uniform"})
    sp_header = _uniform_header(layout, uniform)
    grid = sp_header.grid
    blocks = list(range(min(n_blocks, grid.n_blocks)))
    cache = {
        b: to_unit(_read_block(source, layout, grid, b), sp_header.lo, sp_header.hi) for b in blocks
    }
    device = pick_device(device_name)

    def run(group: list[int]) -> float:
        fitter = BlockFitter(sp_header, config, group, cache.__getitem__, device)
        fitter.step(0.0)  # warm-up (allocations, kernels)
        _sync(device)
        t = time.perf_counter()
        for s in range(1, steps + 1):
            fitter.step(s / steps)
        _sync(device)
        return time.perf_counter() - t

    batched = run(blocks)
    alone = sum(run([b]) for b in blocks)
    per_block = max(16, config.batch_size // grid.n_blocks)
    print(
        json.dumps(
            {
                "part": "batching",
                "device": str(device),
                "torch_threads": torch.get_num_threads(),
                "blocks": len(blocks),
                "width": sp_header.widths[0],
                "depth": sp_header.depth,
                "samples_per_block_per_step": per_block,
                "steps": steps,
                "batched_block_steps_per_s": round(len(blocks) * steps / batched, 1),
                "one_at_a_time_block_steps_per_s": round(len(blocks) * steps / alone, 1),
                "speedup": round(alone / batched, 1),
            }
        ),
        flush=True,
    )


def _uniform_header(layout, config):
    from napari_inif.core.codec.plan import plan

    return plan(layout, config, lo=(0.0,), hi=(65535.0,)).header


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--gb", type=float, default=2.1)
    g.add_argument("--out", type=Path, default=Path("/tmp/inif_scale/vol.zarr"))
    c = sub.add_parser("compress")
    c.add_argument("zarr", type=Path)
    c.add_argument("--ratio", type=float, default=256)
    c.add_argument("--steps", type=int, default=20)
    c.add_argument("--workers", type=int, default=None)
    c.add_argument("--out", type=Path, default=Path("/tmp/inif_scale/vol.inif"))
    b = sub.add_parser("batching")
    b.add_argument("zarr", type=Path)
    b.add_argument("--ratio", type=float, default=256)
    b.add_argument("--blocks", type=int, default=32)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--device", default="cpu")
    b.add_argument(
        "--batch-size", type=int, default=32768, help="coordinates per step over all blocks"
    )
    a = sub.add_parser("all")
    a.add_argument("--gb", type=float, default=2.1)
    a.add_argument("--ratio", type=float, default=256)
    a.add_argument("--steps", type=int, default=20)
    a.add_argument("--workers", type=int, default=None, help="also compress on a local cluster")
    a.add_argument("--dir", type=Path, default=Path("/tmp/inif_scale"))
    args = p.parse_args()

    if args.part == "generate":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        generate(args.out, args.gb)
    elif args.part == "compress":
        compress(args.zarr, args.ratio, args.steps, args.workers, args.out)
    elif args.part == "batching":
        batching(args.zarr, args.ratio, args.blocks, args.steps, args.device, args.batch_size)
    else:
        args.dir.mkdir(parents=True, exist_ok=True)
        vol = args.dir / "vol.zarr"
        me = [sys.executable, __file__]
        try:
            subprocess.run([*me, "generate", "--gb", str(args.gb), "--out", str(vol)], check=True)
            for batch in ("32768", "1048576"):  # the default, and 32x more samples per block
                subprocess.run(
                    [*me, "batching", str(vol), "--ratio", str(args.ratio), "--batch-size", batch],
                    check=True,
                )
            subprocess.run(
                [
                    *me,
                    "compress",
                    str(vol),
                    "--ratio",
                    str(args.ratio),
                    "--steps",
                    str(args.steps),
                    "--out",
                    str(args.dir / "vol.inif"),
                ],
                check=True,
            )
            if args.workers:
                subprocess.run(
                    [
                        *me,
                        "compress",
                        str(vol),
                        "--ratio",
                        str(args.ratio),
                        "--steps",
                        str(args.steps),
                        "--workers",
                        str(args.workers),
                        "--out",
                        str(args.dir / "vol_dask.inif"),
                    ],
                    check=True,
                )
        finally:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
