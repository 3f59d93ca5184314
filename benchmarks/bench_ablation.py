"""Learnable frequencies (INIF) vs plain SIREN (fixed w0=30), same parameters, same steps.

    .venv/bin/python benchmarks/bench_ablation.py [--steps 600] [--threads 1]

Data: ../shared/data/cancer_cell_migration_crop_TYX.tif (48x130x130 uint16) and the three
BBBC034 channels stacked as CYX (3x1024x1024 uint16), at 64x and 256x.  Prints one row per
(file, ratio, architecture) and the PSNR gain of INIF over SIREN measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_inif.core import CompressionConfig, compress

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def datasets() -> dict[str, tuple[np.ndarray, str]]:
    cells = tifffile.imread(DATA / "cancer_cell_migration_crop_TYX.tif")
    bbbc034 = np.stack([tifffile.imread(DATA / f"bbbc034_AICS_12_134_C{c}.tif") for c in range(3)])
    return {"cancer_cells_TYX": (cells, "TYX"), "bbbc034_CYX": (bbbc034, "CYX")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--ratios", default="64,256")
    p.add_argument("--only", default=None, help="one data set name")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("data              ratio  arch   achieved  PSNR(dB)  SSIM    steps  seconds")
    for name, (data, axes) in datasets().items():
        if args.only and name != args.only:
            continue
        for ratio in (float(r) for r in args.ratios.split(",")):
            psnrs = {}
            for arch in ("siren", "inif"):
                t = time.perf_counter()
                enc = compress(
                    data,
                    CompressionConfig(ratio=ratio, steps=args.steps, architecture=arch),
                    axes=axes,
                )
                fit = enc.header.fit
                psnrs[arch] = fit["psnr"]
                print(
                    f"{name:17s} {ratio:5.0f}  {arch:5s}  {enc.ratio:7.1f}x  {fit['psnr']:8.2f}  "
                    f"{fit['ssim']:.4f}  {fit['steps']:5d}  {time.perf_counter() - t:7.1f}",
                    flush=True,
                )
            print(
                f"{'':17s} {ratio:5.0f}  INIF - SIREN: {psnrs['inif'] - psnrs['siren']:+.2f} dB",
                flush=True,
            )


if __name__ == "__main__":
    main()
