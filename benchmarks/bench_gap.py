"""Where the gap to the best classic codec comes from, on the 3D stacks at 128x and above.

    .venv/bin/python benchmarks/bench_gap.py [--steps 1200 4000 16000]
        [--out docs/benchmarks/gap.md]

For each stack and ratio, napari-inif is fitted with more and more steps; each row says
how far the field is from HEVC/x265 (the best classic codec on these stacks, matched to
the same file size) and splits the rest of the story into

- *steps*: the PSNR the same network reaches with 4x and 16x more steps;
- *quantisation*: PSNR of the field before and after rounding its weights;
- *entropy coding*: bits per weight the LZMA2 payload spends against the order-0
  entropy of the quantised integers (what an ideal per-file adaptive coder of
  independent symbols would spend), and how many more weights that saving would buy;
- *header*: file bytes that are not weights.

Everything is measured in this run; the seed is fixed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from napari_inif.bench.cases import DEFAULT_CASES, find_data_dir
from napari_inif.bench.rd import _fit
from napari_inif.core import CompressionConfig
from napari_inif.core.classic import match_size
from napari_inif.core.metrics.quality import psnr
from napari_inif.core.registry import CODECS

STACKS = [c for c in DEFAULT_CASES if c.is_stack]


def order0_bits(values: list[np.ndarray]) -> float:
    """Order-0 entropy in bits per value of the quantised integers, tensor by tensor."""
    total = 0.0
    n = 0
    for v in values:
        _, counts = np.unique(v, return_counts=True)
        p = counts / counts.sum()
        total += float(-(counts * np.log2(p)).sum())
        n += v.size
    return total / max(n, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[1200, 4000, 16000])
    p.add_argument("--ratios", type=float, nargs="+", default=[128.0, 256.0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stacks", nargs="+", default=None, help="case names (default: all stacks)")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = find_data_dir()
    hevc = CODECS["hevc"]
    if hevc.unavailable():
        raise SystemExit(f"hevc: {hevc.unavailable()}")
    head = (
        "| stack | ratio | steps | file B | PSNR dB | unquantised dB | quantisation loss dB "
        "| bits/weight (LZMA2) | order-0 entropy | weights an ideal coder would add "
        "| header B | HEVC PSNR dB | inif - HEVC dB | fit s |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    print(head, flush=True)
    for case in STACKS:
        if args.stacks and case.name not in args.stacks:
            continue
        data = case.load(data_dir)
        for ratio in args.ratios:
            hevc_at: dict[int, float] = {}
            for steps in args.steps:
                start = time.perf_counter()
                config = CompressionConfig(ratio=ratio, steps=steps, seed=0, device="cpu")
                encoded, diag = _fit(case, data, config)
                seconds = time.perf_counter() - start
                decoded = encoded.array()[...].reshape(data.shape)
                q_psnr = psnr(data, decoded)
                bits = diag["bits_per_param"]
                ideal = order0_bits(encoded.weights.values)
                if encoded.nbytes not in hevc_at:
                    coded = match_size(hevc, data, encoded.nbytes, layout="plane")
                    hevc_at[encoded.nbytes] = (
                        float("nan")
                        if coded is None
                        else psnr(data, coded.decoded.reshape(data.shape))
                    )
                h = hevc_at[encoded.nbytes]
                line = (
                    f"| {case.name} | {ratio:g}x | {steps} | {encoded.nbytes} | {q_psnr:.2f} "
                    f"| {diag['psnr_float']:.2f} | {diag['psnr_float'] - q_psnr:.2f} "
                    f"| {bits:.2f} | {ideal:.2f} | {100 * (bits / ideal - 1):+.0f}% "
                    f"| {diag['overhead_bytes']} | {h:.2f} | {q_psnr - h:+.2f} | {seconds:.0f} |"
                )
                lines.append(line)
                print(line, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
