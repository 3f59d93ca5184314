"""Screenshots of the napari-inif widgets in action, for the README (docs/images/*.png).

Run on a (virtual) display large enough for the window, from the repository root::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py

It drives a real napari window: compresses the packaged sample with the Compress widget
(the "Quick" preset, axes TYX), then uses the Inspect widget (metrics, PSNR per plane,
side by side, viewport sampling when zoomed in - on by default -, ROI decode).  Nothing
here is mocked.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "images"


def _wait(condition, timeout: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    start = time.perf_counter()
    while not condition():
        QApplication.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - start > timeout:
            raise TimeoutError("timed out waiting for the viewer")
    for _ in range(20):  # let the canvas draw
        QApplication.processEvents()
        time.sleep(0.02)


def _shot(viewer, name: str) -> None:
    path = OUT / name
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")


def main() -> int:
    """Make the screenshots; returns the exit status."""
    import napari

    from napari_inif._sample_data import make_sample_data

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-inif")
    viewer.window.resize(1560, 960)
    [(data, meta, _)] = make_sample_data()
    original = viewer.add_image(data, **meta)
    original.contrast_limits = (1500, 26000)  # the results copy the source's display range
    viewer.dims.set_current_step(0, 8)

    # 1. Compress, while it runs (live preview + PSNR plot) and when done.
    _, compress = viewer.window.add_plugin_dock_widget("napari-inif", "Compress")
    compress.set_ratio(64)
    compress.preset.setCurrentText("Quick (1000 steps)")
    compress.form["device"].value = "cpu"
    assert compress.axes_edit.text() == "TYX"  # from the sample's axis labels
    compress.start()
    _wait(
        lambda: len(viewer.layers) == 2 and compress.plot.points and len(compress.plot.points) > 400
    )
    viewer.canvas.grid.enabled = True
    viewer.reset_view()
    _wait(lambda: True)
    _shot(viewer, "compress_running.png")
    _wait(lambda: compress._run is None)
    viewer.canvas.grid.enabled = False
    viewer.reset_view()
    decoded = viewer.layers["cancer cells [INIF 64x]"]
    _shot(viewer, "compress_done.png")

    # 2. Inspect: metrics for the stack, side by side with linked cameras.
    _, inspect = viewer.window.add_plugin_dock_widget("napari-inif", "Inspect")
    inspect.original.select(original)
    inspect.decoded.select(decoded)
    inspect.slice_metrics()
    inspect.stack_metrics()
    inspect.plane_metrics()
    _wait(lambda: {"slice", "stack", "planes"} <= set(inspect.last_metrics))
    inspect.side_button.setChecked(True)
    _wait(lambda: True)
    _shot(viewer, "inspect_side_by_side.png")
    inspect.side_button.setChecked(False)

    # 3. Zoomed in past the stored pixels: the field sampled at screen resolution.
    original.opacity = 0.0  # out of the way (not hidden: see _parts.remove_layer)
    assert inspect.viewport_box.isChecked()  # on by default
    camera = viewer.scene.camera
    camera.center = (0, 22, 68)
    camera.zoom = 16
    _wait(lambda: inspect.sampler is not None and inspect.sampler.applied >= 1, timeout=120)
    _wait(lambda: not inspect.sampler.busy, timeout=120)
    _shot(viewer, "viewport_zoom.png")
    inspect.viewport_box.setChecked(False)

    # 4. ROI decode: a rectangle decoded 4x finer into its own layer.
    viewer.reset_view()
    shapes = viewer.add_shapes(
        [np.array([[4.0, 46.0], [4.0, 88.0], [40.0, 88.0], [40.0, 46.0]])],
        shape_type="rectangle",
        edge_color="yellow",
        face_color="transparent",
        edge_width=1,
        name="ROI",
    )
    inspect.shapes.select(shapes)
    inspect.zoom.setValue(4)
    inspect.decode_roi()
    _wait(lambda: "cancer cells [INIF 64x] [ROI 4x]" in viewer.layers, timeout=120)
    viewer.layers.move(viewer.layers.index(shapes), len(viewer.layers))  # outline on top
    camera.center = (0, 24, 66)
    camera.zoom = 9
    _wait(lambda: True)
    _shot(viewer, "roi_decode.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
