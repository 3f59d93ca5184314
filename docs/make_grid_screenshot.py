"""Screenshot of a latent-grid file of the cancer-cell time-lapse beside its original.

    inif compress ../shared/data/cancer_cell_migration_crop_TYX.tif --architecture grid \\
        --ratio 64 --time 120 -o /tmp/cells_grid_64x.inif
    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_grid_screenshot.py \\
        ../shared/data/cancer_cell_migration_crop_TYX.tif /tmp/cells_grid_64x.inif

Writes ``docs/images/grid_timelapse.png``: the original, the decoded file and 8x their
absolute difference, one frame, in napari's grid view (a real shown viewer; the decoded
layer is the lazy one napari gets from the reader).  A block or tile seam would show as
a straight line in the difference.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "images" / "grid_timelapse.png"


def main(original: str, inif: str, frame: int = 20) -> int:
    import napari
    import tifffile
    from qtpy.QtWidgets import QApplication

    from napari_inif.core import load

    data = np.squeeze(tifffile.imread(original))
    decoded = np.asarray(load(inif).array()[...])
    lo, hi = np.percentile(data, [0.5, 99.8])
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 800)
    viewer.add_image(data, name="original", contrast_limits=(lo, hi))
    viewer.add_image(decoded, name=f"grid file ({Path(inif).name})", contrast_limits=(lo, hi))
    diff = np.abs(decoded.astype(np.float32) - data.astype(np.float32))
    viewer.add_image(diff, name="|difference|", contrast_limits=(0, (hi - lo) / 8))
    viewer.grid.enabled = True
    viewer.dims.set_point(0, frame)
    viewer.reset_view()
    for _ in range(100):
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"wrote {OUT}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
