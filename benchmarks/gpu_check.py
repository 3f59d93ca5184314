"""The GPU checks and benchmarks, as one script for a lent GPU machine with little time.

    python benchmarks/gpu_check.py --data DIR --out DIR [--budget 420] [--workers 6]

Sections, in order, each result written to ``--out`` as soon as it exists (so a run cut
short still leaves what it measured):

1. ``cuda``: the CUDA code path on a real crop: a fit on the GPU decodes to the same
   values with the CPU and the CUDA decoder (within one grey level, the float32 GEMM
   row dependence), its file round trip is exact, and its PSNR is close to a CPU fit's.
2. ``profile``: milliseconds per optimisation step and the top operators by host time;
   ``speed``: :func:`napari_inif.bench.speed.run_speed` (compress / decode timings on the
   CPU and the GPU); both while nothing else runs.
3. ``jobs``: a queue of fits spread over ``--workers`` processes sharing the GPU, started
   in order until ``--budget`` seconds have passed since the script began:
   guided vs unguided pairs (``benchmarks/guidance/compare.py``'s images, full-strength
   GPU preset) and the rate-distortion fits of the bench cases at 16000 steps.  Their
   seconds are not timings (the processes share the GPU); their PSNR/F1 are the results.

``--smoke`` runs every section on the CPU with a few steps (checks the script itself).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "guidance"))

#: (image name as in compare.IMAGES, ratio): unguided F1 0.98 / 0.88 / 0.95 at 1200 CPU steps.
GUIDED = (
    ("BBBC022 nuclei (395x695 u16)", 256),
    ("BBBC022 nuclei (395x695 u16)", 512),
    ("BBBC034 nuclei (1024x1024 u16)", 1024),
)
RD_RATIOS = (16, 64, 128, 256, 512)


def _device(smoke: bool) -> str:
    return "cpu" if smoke else "cuda"


def check_cuda(data: Path, smoke: bool) -> dict:
    """Section 1 (see the module docstring)."""
    import tifffile
    import torch

    from napari_inif.core import CompressionConfig, Encoded, compress, quality
    from napari_inif.core.codec.decode import FieldDecoder, InifArray
    from napari_inif.core.codec.quant import dequantise

    image = tifffile.imread(data / "bbbc038_0bf4b1_nuclei.tif")
    steps = 20 if smoke else 1200
    out: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    fits = {}
    for device in ("cpu", _device(smoke)):
        start = time.perf_counter()
        enc = compress(image, CompressionConfig(ratio=16, steps=steps, seed=0, device=device))
        fits[device] = (enc, time.perf_counter() - start)
    enc = fits[_device(smoke)][0]
    on_cpu = InifArray(FieldDecoder(enc.header, dequantise(enc.weights), "cpu"))[...]
    on_dev = InifArray(FieldDecoder(enc.header, dequantise(enc.weights), _device(smoke)))[...]
    back = Encoded.from_bytes(enc.to_bytes()).array()[...]
    out.update(
        steps=steps,
        psnr_cpu_fit=quality(image, fits["cpu"][0].array()[...]).psnr,
        psnr_gpu_fit=quality(image, on_cpu).psnr,
        seconds_cpu_fit=fits["cpu"][1],
        seconds_gpu_fit=fits[_device(smoke)][1],
        decoder_devices=["cpu", _device(smoke)],  # what the next line compares
        max_abs_diff_cpu_vs_gpu_decoder=int(np.abs(on_cpu.astype(int) - on_dev.astype(int)).max()),
        file_round_trip_exact=bool(np.array_equal(back, on_cpu)),
    )
    out["ok"] = (
        out["max_abs_diff_cpu_vs_gpu_decoder"] <= 1
        and out["file_round_trip_exact"]
        and abs(out["psnr_gpu_fit"] - out["psnr_cpu_fit"]) < 1.5
    )
    return out


def run_speed_section(data: Path, smoke: bool) -> list[dict]:
    """Section 2: the bench's speed rows (CPU and, where present, CUDA)."""
    from dataclasses import asdict

    from napari_inif.bench.cases import DEFAULT_CASES
    from napari_inif.bench.speed import run_speed

    case = DEFAULT_CASES[0]  # cells-tyx, the bench's speed case
    rows = run_speed(
        case.load(data),
        case.axes,
        name=case.name,
        tiled_shape=(16, 128, 128) if smoke else (96, 520, 520),
        steps=10 if smoke else 1200,
        tile_steps=2 if smoke else 20,
    )
    return [asdict(r) for r in rows]


def profile_steps(data: Path, smoke: bool) -> dict:
    """Where one optimisation step's time goes on the device: cells-tyx at 64x (the speed
    row's fit), milliseconds per step and the top operators by host time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from napari_inif.bench.cases import DEFAULT_CASES
    from napari_inif.core import CompressionConfig
    from napari_inif.core.codec.fitter import BlockFitter, normalise
    from napari_inif.core.codec.plan import plan
    from napari_inif.core.layout import Layout

    case = DEFAULT_CASES[0]
    image = case.load(data)
    device = torch.device(_device(smoke))
    config = CompressionConfig(ratio=64, steps=4000, seed=0)
    layout = Layout.of(image, case.axes)
    norm, lo, hi = normalise(layout.to_canonical(image))
    header = plan(layout, config, norm, lo=lo, hi=hi).header
    grid = header.grid

    def pixels(b):
        return norm[tuple(slice(a, z) for a, z in grid.fit_bounds(b))]

    fitter = BlockFitter(header, config, range(grid.n_blocks), pixels, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(20):
        fitter.step(i / 4000)
    sync()
    n = 20 if smoke else 200
    start = time.perf_counter()
    for i in range(n):
        fitter.step(i / 4000)
    sync()
    ms = 1000 * (time.perf_counter() - start) / n
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(10 if smoke else 50):
            fitter.step(i / 4000)
        sync()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    print(table, flush=True)
    return {
        "ms_per_step": ms,
        "blocks": grid.n_blocks,
        "groups": len(fitter.groups),
        "widths": sorted(set(header.widths)),
        "depth": header.depth,
        "device": str(device),
    }


def _init_worker() -> None:
    import torch

    torch.set_num_threads(2)


def guided_job(
    data: str, image_name: str, ratio: int, seed: int, guidance: str, steps: int, device: str
) -> dict:
    """One fit of compare.py's protocol (bundled network, weight 1) on ``device``'s preset."""
    import compare

    from napari_inif.core.guidance.cellpose_net import BUNDLED_MODEL, load_cellpose

    image, diameter = compare.load_image(image_name, Path(data))
    net = load_cellpose(BUNDLED_MODEL, device=device)
    row = compare.fit_row(
        image_name, image, diameter, ratio, seed, guidance,
        steps=steps, model=BUNDLED_MODEL, weight=1.0, device=device, net=net,
    )  # fmt: skip
    if row is None:  # compare.fit_row printed why
        reached = {"image": image_name, "asked_ratio": ratio, "guidance": guidance}
        return {"kind": "unreachable", **reached, "seed": seed}
    return {"kind": "guided", **row}


def rd_job(data: str, case_name: str, ratio: int, steps: int, device: str) -> dict:
    """One napari-inif rate-distortion fit of a bench case (seed 0, as ``inif bench``)."""
    from napari_inif.bench.cases import DEFAULT_CASES
    from napari_inif.bench.rd import _measures
    from napari_inif.core import BudgetError, CompressionConfig, compress

    case = next(c for c in DEFAULT_CASES if c.name == case_name)
    image = case.load(data)
    row = {"kind": "rd", "case": case_name, "ratio": ratio, "steps": steps, "device": device}
    start = time.perf_counter()
    try:
        encoded = compress(
            image,
            CompressionConfig(ratio=ratio, steps=steps, seed=0, device=device),
            axes=case.axes,
        )
    except BudgetError as exc:
        return {**row, "status": f"unreachable: {exc}"}
    row["seconds"] = time.perf_counter() - start
    row.update(_measures(case, image, encoded.array()[...], encoded.nbytes))
    return {**row, "status": "ok"}


def job_list(args: argparse.Namespace) -> list[tuple]:
    """Fits in the order they are started: guided pairs first (the open question), then
    the stacks, more guided seeds, and the 2D cases."""
    device = _device(args.smoke)
    g_steps, rd_steps = (10, 10) if args.smoke else (args.guided_steps, args.rd_steps)
    seeds = [int(s) for s in args.seeds.split(",")]

    def pairs(some: list[int]) -> list[tuple]:
        return [
            (guided_job, args.data, name, ratio, seed, g, g_steps, device)
            for seed in some
            for name, ratio in GUIDED
            for g in ("none", "segmentation")
        ]

    def rd(cases: tuple[str, ...]) -> list[tuple]:
        return [(rd_job, args.data, c, r, rd_steps, device) for c in cases for r in RD_RATIOS]

    stacks = tuple(c for c in args.rd_cases.split(",") if c in ("cells-tyx", "tinc-zyx"))
    flat = tuple(c for c in args.rd_cases.split(",") if c and c not in stacks)
    return pairs(seeds[:2]) + rd(stacks) + pairs(seeds[2:]) + rd(flat)


def run_jobs(args: argparse.Namespace, start: float, sink) -> None:
    """Section 3: start jobs in order on the pool until the budget is spent."""
    queue = job_list(args)
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_init_worker) as pool:
        running = {}
        while queue or running:
            while queue and len(running) < args.workers and time.time() - start < args.budget:
                fn, *job_args = queue.pop(0)
                running[pool.submit(fn, *job_args)] = (fn.__name__, job_args)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                name, job_args = running.pop(fut)
                try:
                    sink("jobs", fut.result())
                except Exception as exc:  # report and go on: one failure must not stop the rest
                    sink(
                        "jobs",
                        {"kind": "error", "job": name, "args": job_args[1:], "error": repr(exc)},
                    )
        skipped = [(fn.__name__, a[1:]) for fn, *a in queue]
    sink("skipped", {"n": len(skipped), "jobs": skipped})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--budget", type=float, default=420.0, help="seconds after which no new job is started"
    )
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--guided-steps", type=int, default=4000)
    p.add_argument("--rd-steps", type=int, default=16000)
    p.add_argument("--seeds", default="2,3,4,5,6", help="seeds of the guided pairs")
    p.add_argument(
        "--rd-cases",
        default="cells-tyx,tinc-zyx,nuclei-2d,hipsc-2d,bpae-f32",
        help="bench cases of the 16000-step rate-distortion fits ('' for none)",
    )
    p.add_argument("--skip", default="", help="comma-separated sections to skip")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    args.data = args.data.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    log = args.out / "gpu_results.jsonl"

    def sink(section: str, value: object) -> None:
        line = json.dumps(
            {"section": section, "t": round(time.time() - start, 1), "value": value}, default=str
        )
        with log.open("a") as f:
            f.write(line + "\n")
        print(line, flush=True)

    skip = set(args.skip.split(","))
    if "cuda" not in skip:
        sink("cuda", check_cuda(args.data, args.smoke))
    if "profile" not in skip:
        sink("profile", profile_steps(args.data, args.smoke))
    if "speed" not in skip:
        for row in run_speed_section(args.data, args.smoke):
            sink("speed", row)
    if "jobs" not in skip:
        run_jobs(args, start, sink)
    print(f"total {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
