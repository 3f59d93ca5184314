"""Rebuild the packaged sample: a real TYX crop and its ``.inif`` (run from the repo root).

    python src/napari_inif/_data/make_sample.py [path/to/cancer_cell_migration_crop_TYX.tif]

The crop is frames 0-15 of the 48x130x130 uint16 time-lapse of migrating cancer cells
(Tinevez & Jacquemet, Zenodo 5206107, CC-BY-4.0), stored as a zlib TIFF.  The ``.inif``
is fitted on the CPU with a fixed seed and step count, so a rerun gives the same bytes
on the same torch build.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2].parent / "shared" / "data" / "cancer_cell_migration_crop_TYX.tif"
TIFF = HERE / "cancer_cells_TYX.tif"
INIF = HERE / "cancer_cells_TYX.inif"
FRAMES = 16
RATIO = 64.0
STEPS = 4000  # the library default


def main(argv: list[str]) -> int:
    """Write the crop and its compressed version next to this script."""
    import tifffile
    import torch

    from napari_inif.core import CompressionConfig, compress

    torch.set_num_threads(1)
    source = Path(argv[0]) if argv else SOURCE
    stack = tifffile.imread(source)[:FRAMES]
    tifffile.imwrite(
        TIFF,
        stack,
        compression="zlib",
        compressionargs={"level": 9},
        predictor=True,
        metadata={"axes": "TYX"},
    )
    start = time.perf_counter()
    encoded = compress(
        stack,
        CompressionConfig(ratio=RATIO, steps=STEPS, device="cpu", seed=0),
        axes="TYX",
        metadata={"source": "cancer_cell_migration_crop_TYX.tif frames 0-15 (Zenodo 5206107)"},
    )
    encoded.save(INIF)
    fit = encoded.header.fit
    print(
        f"{TIFF.name}: {stack.shape} {stack.dtype}, {TIFF.stat().st_size} bytes\n"
        f"{INIF.name}: {encoded.nbytes} bytes, ratio {encoded.ratio:.1f}x, "
        f"PSNR {fit['psnr']} dB, SSIM {fit['ssim']} ({time.perf_counter() - start:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
