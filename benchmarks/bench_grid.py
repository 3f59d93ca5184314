"""Latent-grid field vs classic codecs at the grid file's exact size, per case and ratio.

For each case and ratio: compress with ``--architecture grid`` through the engine (the
whole ``.inif`` file: container, JSON, grid stream), decode it, and code the same image
with every classic codec available here (``core.classic``; HEVC as one video of the
planes, the image codecs plane by plane and, for stacks, as a mosaic) at the largest
setting that fits in the grid file's byte count.  Also: the default SIREN field's PSNR
at that ratio from ``docs/benchmarks/results.md``, the mean squared error on pixels next
to a level-0 tile border over the rest (seams; the same mask on HEVC's error says what
the content alone gives), and the time to decode a 512 x 512 view of one plane (cold:
tiles entropy-decoded; warm: cached).

    PYTHONPATH=src python benchmarks/bench_grid.py --cases cells-tyx tinc-zyx \\
        --ratios 64 128 256 512 --steps 400 600 --out /tmp/grid_bench.jsonl

``--steps`` (per case) fixes the work, so PSNR does not depend on the machine's load;
``--seconds`` (per case) limits the wall clock instead.  Rows are appended to ``--out``
as JSON lines as they finish (a long run can be read while it goes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from napari_inif.bench.cases import DEFAULT_CASES, QUICK_CASES, Case, find_data_dir
from napari_inif.core.classic import stack as classic_stack
from napari_inif.core.classic.codec import ClassicCodec, available_codecs, get_codec
from napari_inif.core.codec.grid.codec import GridDecoder
from napari_inif.core.codec.grid.coding import GridCode
from napari_inif.core.config import CompressionConfig
from napari_inif.core.engine import compress
from napari_inif.core.errors import BudgetError
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


def measure(
    case: Case,
    data: np.ndarray,
    ratio: float,
    steps: int,
    seconds: float | None,
    codecs: list[ClassicCodec],
) -> dict:
    """One row: the grid file, and every classic codec at its size."""
    config = CompressionConfig(architecture="grid", ratio=ratio, steps=steps, time_limit=seconds)
    history: list[tuple] = []
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    encoded = compress(
        data,
        config,
        axes=case.axes,
        on_progress=lambda p: history.append((p.step, p.phase, round(p.psnr, 2), p.elapsed)),
    )
    fit_s = time.perf_counter() - t0
    load1 = os.getloadavg()
    stack = data if data.ndim == 3 else data[None]
    decoded = encoded.array()[...].reshape(stack.shape)
    q = quality(stack, decoded)
    nbytes = encoded.nbytes
    code = GridCode(encoded.stream)
    classic: dict[str, tuple[int, float, float] | None] = {}
    hevc_decoded = None
    for codec in codecs:
        for layout in ("plane",) if codec.video or data.ndim == 2 else ("plane", "mosaic"):
            coded = classic_stack.match_size(codec, stack, nbytes, layout=layout)
            key = f"{codec.name}-{layout}"
            if coded is None:
                classic[key] = None
                continue
            cq = quality(stack, coded.decoded)
            classic[key] = (coded.nbytes, cq.psnr, cq.ssim)
            if codec.name == "hevc":
                hevc_decoded = coded.decoded
    coded_rows = {k: v for k, v in classic.items() if v is not None}
    best = max(coded_rows, key=lambda k: coded_rows[k][1]) if coded_rows else None
    hevc = classic.get("hevc-plane")
    cold, warm = view_times(encoded.stream)
    edge = code.edge[-1] << code.spec.finest  # pixels a tile spans in Y and X
    row = {
        "case": case.name,
        "ratio": ratio,
        "bytes": nbytes,
        "actual_ratio": data.nbytes / nbytes,
        "container_and_json_bytes": nbytes - len(encoded.stream),
        "stream_header_bytes": code.header_bytes,
        "spec": repr(code.spec),
        "grid_psnr": q.psnr,
        "grid_ssim": q.ssim,
        "classic": classic,
        "best_classic": best,
        "best_classic_psnr": coded_rows[best][1] if best else None,
        "best_classic_ssim": coded_rows[best][2] if best else None,
        "hevc_bytes": hevc[0] if hevc else None,
        "hevc_psnr": hevc[1] if hevc else None,
        "hevc_ssim": hevc[2] if hevc else None,
        "default_field_psnr": DEFAULT_FIELD_PSNR.get((case.name, int(ratio))),
        "steps": steps,
        "fit_s": fit_s,
        "fit_time_limit_s": seconds,
        "history": history[:: max(1, len(history) // 20)] + history[-1:],
        "seam_ratio": seam_ratio(stack, decoded, edge),
        "seam_ratio_hevc": (
            seam_ratio(stack, hevc_decoded, edge) if hevc_decoded is not None else None
        ),
        "view512_cold_s": cold,
        "view512_warm_s": warm,
        "load_before": load0,
        "load_after": load1,
    }
    print(
        f"{case.name} {ratio:g}x {nbytes} B grid {q.psnr:.2f} dB; best classic {best} "
        f"{row['best_classic_psnr']}; hevc {row['hevc_psnr']}; fit {fit_s:.0f}s "
        f"load {load0[0]:.1f}->{load1[0]:.1f}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["cells-tyx", "tinc-zyx"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[64, 128, 256, 512])
    parser.add_argument("--steps", nargs="+", type=int, default=[600], help="steps per case")
    parser.add_argument(
        "--seconds", nargs="+", type=float, default=None, help="fit time limit per case"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", default="grid_bench.jsonl")
    args = parser.parse_args(argv)
    # one thread: on the shared 2 cores, 2 OpenMP threads spin against other jobs and a
    # tinc-zyx step took 1.5-1.9 s instead of 0.1 s (measured side by side)
    torch.set_num_threads(args.threads)
    data_dir = find_data_dir(args.data)
    codecs = [get_codec(name) for name in available_codecs()]
    cases = {c.name: c for c in (*DEFAULT_CASES, *QUICK_CASES)}
    with open(args.out, "a") as out:
        meta = {
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "codecs": [c.name for c in codecs],
        }
        out.write(json.dumps(meta) + "\n")
        for i, name in enumerate(args.cases):
            case = cases[name]
            data = case.load(data_dir)
            steps = args.steps[min(i, len(args.steps) - 1)]
            seconds = args.seconds[min(i, len(args.seconds) - 1)] if args.seconds else None
            for ratio in args.ratios:
                try:
                    row = measure(case, data, ratio, steps, seconds, codecs)
                except BudgetError as exc:  # the image is too small for this ratio
                    print(f"{name} {ratio:g}x: {exc}", flush=True)
                    row = {"case": name, "ratio": ratio, "unreachable": str(exc)}
                out.write(json.dumps(row) + "\n")
                out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
