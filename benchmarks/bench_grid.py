"""Latent-grid field vs HEVC (x265) at the grid file's exact size, per case and ratio.

For each case and ratio: fit the grid field under a wall-clock limit, write its stream,
decode it, and code the same stack with HEVC (``core.classic``) at the largest setting
that fits in the grid file's byte count.  Also: the default SIREN field's PSNR at that
ratio from ``docs/benchmarks/results.md`` (same machine class, its own run), the mean
squared error on pixels next to a level-0 tile border over the rest (seams), and the time
to decode a 512 x 512 view of one plane (cold: tiles entropy-decoded; warm: cached).

    PYTHONPATH=src python benchmarks/bench_grid.py --cases cells-tyx tinc-zyx \\
        --ratios 64 128 256 512 --seconds 150 60 --out /tmp/grid_bench.jsonl

Rows are appended to ``--out`` as JSON lines as they finish (a long run can be read
while it goes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from napari_inif.bench.cases import DEFAULT_CASES, find_data_dir
from napari_inif.core.classic import stack as classic_stack
from napari_inif.core.classic.codec import get_codec
from napari_inif.core.codec.grid.codec import GridDecoder, fit_to_size
from napari_inif.core.codec.grid.coding import DEFAULT_EDGE
from napari_inif.core.metrics.quality import quality

#: The default field's PSNR (dB) from docs/benchmarks/results.md ("inif" rows).
DEFAULT_FIELD_PSNR = {
    ("cells-tyx", 64): 32.69,
    ("cells-tyx", 128): 31.04,
    ("cells-tyx", 256): 29.95,
    ("cells-tyx", 512): 27.87,
    ("tinc-zyx", 64): 30.93,
    ("tinc-zyx", 128): 31.39,
    ("tinc-zyx", 256): 29.01,
    ("tinc-zyx", 512): 21.39,
}


def seam_ratio(data: np.ndarray, decoded: np.ndarray, edge: int) -> float:
    """MSE on pixels within one of a level-0 tile border (last two axes) / MSE elsewhere."""
    err = (data.astype(np.float64) - decoded.astype(np.float64)) ** 2
    mask = np.zeros(data.shape[-2:], bool)
    for axis, n in enumerate(data.shape[-2:]):
        for b in range(edge, n, edge):
            sl = [slice(None), slice(None)]
            sl[axis] = slice(b - 1, b + 1)
            mask[tuple(sl)] = True
    if not mask.any():
        return float("nan")
    border = err[..., mask].mean()
    interior = err[..., ~mask].mean()
    return float(border / interior)


def view_times(stream: bytes) -> tuple[float, float]:
    """Seconds to decode a 512 x 512 view (zoomed as needed) of the middle plane."""
    dec = GridDecoder(stream)
    shape = dec.code.spec.shape
    coords = [np.array([shape[0] // 2], np.float64)] if len(shape) == 3 else []
    coords += [np.linspace(0, n - 1, 512) for n in shape[-2:]]
    t0 = time.perf_counter()
    dec.render(coords)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    dec.render(coords)
    return cold, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["cells-tyx", "tinc-zyx"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[64, 128, 256, 512])
    parser.add_argument(
        "--seconds", nargs="+", type=float, default=[150.0], help="fit time per case"
    )
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", default="grid_bench.jsonl")
    args = parser.parse_args(argv)
    # one thread: on the shared 2 cores, 2 OpenMP threads spin against other jobs and a
    # tinc-zyx step took 1.5-1.9 s instead of 0.1 s (measured side by side)
    torch.set_num_threads(args.threads)
    data_dir = find_data_dir(args.data)
    hevc = get_codec("hevc")
    cases = {c.name: c for c in DEFAULT_CASES}
    with open(args.out, "a") as out:
        out.write(
            json.dumps(
                {
                    "machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                }
            )
            + "\n"
        )
        for i, name in enumerate(args.cases):
            case = cases[name]
            data = case.load(data_dir)
            seconds = args.seconds[min(i, len(args.seconds) - 1)]
            for ratio in args.ratios:
                load0 = os.getloadavg()
                t0 = time.perf_counter()
                enc, fit = fit_to_size(data, ratio, steps=args.steps, time_limit=seconds)
                fit_s = time.perf_counter() - t0
                load1 = os.getloadavg()
                dec = GridDecoder(enc.data)
                decoded = dec.full()
                q = quality(data, decoded)
                nbytes = len(enc.data)
                stack = data if data.ndim == 3 else data[None]
                coded = classic_stack.match_size(hevc, stack, nbytes, layout="plane")
                hq = quality(stack, coded.decoded) if coded is not None else None
                cold, warm = view_times(enc.data)
                edge = DEFAULT_EDGE[data.ndim]
                row = {
                    "case": name,
                    "ratio": ratio,
                    "bytes": nbytes,
                    "actual_ratio": data.nbytes / nbytes,
                    "header_bytes": enc.header_bytes,
                    "weight_bytes": enc.weight_bytes,
                    "latent_bytes": enc.latent_bytes,
                    "spec": repr(fit.field.spec),
                    "grid_psnr": q.psnr,
                    "grid_ssim": q.ssim,
                    "hevc_bytes": coded.nbytes if coded is not None else None,
                    "hevc_psnr": hq.psnr if hq is not None else None,
                    "hevc_ssim": hq.ssim if hq is not None else None,
                    "default_field_psnr": DEFAULT_FIELD_PSNR.get((name, int(ratio))),
                    "fit_s": fit_s,
                    "fit_time_limit_s": seconds,
                    "history": [
                        (h.step, h.steps, round(h.psnr, 2), round(h.seconds, 1))
                        for h in fit.history
                    ],
                    "seam_ratio": seam_ratio(data, decoded, edge),
                    # the same mask on HEVC's error: what the content alone gives
                    "seam_ratio_hevc": (
                        seam_ratio(stack, coded.decoded, edge) if coded is not None else None
                    ),
                    "view512_cold_s": cold,
                    "view512_warm_s": warm,
                    "load_before": load0,
                    "load_after": load1,
                }
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(
                    f"{name} {ratio:g}x {nbytes} B grid {q.psnr:.2f} dB, hevc "
                    f"{row['hevc_psnr']} dB; fit {fit_s:.0f}s load {load0[0]:.1f}->{load1[0]:.1f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
