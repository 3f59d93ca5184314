"""ROI decode vs full decode, and block-border vs interior error (issue: core codec).

Volume: ../shared/data/tinc_test_ZYX.tif (8x128x128 uint16) tiled to 128x256x256 (a larger
test volume made by stacking/tiling a real one, as ../shared/data/README.md suggests).

    .venv/bin/python benchmarks/bench_roi.py [--steps 300] [--ratio 64]

Prints the time of a full decode, of a 64^3 ROI decode, their ratio (baseline measured
in the same run), the blocks each touched, and the mean absolute error within 2 pixels of
internal block borders vs the interior.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_inif.core import CompressionConfig, Encoded, compress

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiled_volume() -> np.ndarray:
    vol = tifffile.imread(DATA / "tinc_test_ZYX.tif")[..., 0]  # 8x128x128
    vol = np.concatenate([vol, vol[::-1]] * 8, axis=0)  # 128 planes, mirrored to stay smooth
    vol = np.concatenate([vol, vol[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([vol, vol[:, :, ::-1]], axis=2))  # 128x256x256


def border_mask(shape: tuple[int, ...], grid, width: int = 2) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for axis, (edge, n) in enumerate(zip(grid.edges, shape, strict=True)):
        for cut in range(edge, n, edge):
            sl = [slice(None)] * len(shape)
            sl[axis] = slice(max(cut - width, 0), cut + width)
            mask[tuple(sl)] = True
    return mask


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--ratio", type=float, default=64)
    args = p.parse_args()
    vol = tiled_volume()
    t = time.perf_counter()
    enc = compress(vol, CompressionConfig(ratio=args.ratio, steps=args.steps), axes="ZYX")
    fit_s = time.perf_counter() - t
    h = enc.header
    print(
        f"volume {vol.shape} {vol.dtype}; ratio {enc.ratio:.1f}x; {h.grid.n_blocks} blocks "
        f"{h.grid_counts}; PSNR {h.fit['psnr']:.2f} dB; fit {fit_s:.1f} s ({args.steps} steps)"
    )

    def fresh():
        return Encoded.from_bytes(enc.to_bytes()).array()

    full_arr, roi_arr = fresh(), fresh()
    full_arr[0, :2, :2]  # both timings start with the decoder built
    roi_arr[0, :2, :2]
    roi_arr.decoder.blocks_evaluated.clear()
    t_full = timed(lambda: full_arr[...], repeat=1)
    t_roi = timed(lambda: roi_arr[32:96, 100:164, 60:124])
    print(f"full decode   {t_full * 1e3:9.1f} ms  blocks {len(full_arr.decoder.blocks_evaluated)}")
    print(f"64^3 ROI      {t_roi * 1e3:9.1f} ms  blocks {len(roi_arr.decoder.blocks_evaluated)}")
    print(f"ROI speed-up  {t_full / t_roi:9.1f}x  (target >= 10x)")

    decoded = full_arr[...].astype(np.float64)
    err = np.abs(decoded - vol)
    coord_shape = h.layout.coord_shape
    mask = border_mask(coord_shape, h.grid)
    if mask.any() and (~mask).any():
        print(
            f"mean |error| within 2 px of block borders {err[mask].mean():.1f}, "
            f"interior {err[~mask].mean():.1f} (ratio {err[mask].mean() / err[~mask].mean():.2f})"
        )


if __name__ == "__main__":
    main()
