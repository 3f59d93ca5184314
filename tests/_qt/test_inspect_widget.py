"""The Inspect dock widget: metrics, difference, side by side, ROI decode."""

from __future__ import annotations

import numpy as np
import pytest

from napari_inif._layers import FIELD_KEY, background_decoder
from napari_inif._qt.inspect_widget import InspectWidget
from napari_inif.core.metrics import quality as metrics


@pytest.fixture
def pair(viewer, cells_tyx, cells_inif):
    """The original crop and its decoded layer (opened from the .inif), on the viewer."""
    original = viewer.add_image(cells_tyx, name="cells", scale=(1.0, 0.5, 0.5))
    [decoded] = viewer.open(str(cells_inif), plugin="napari-inif")
    decoded.name = "cells [INIF 16x]"
    return original, decoded


@pytest.fixture
def widget(viewer, pair) -> InspectWidget:
    _, widget = viewer.window.add_plugin_dock_widget("napari-inif", "Inspect")
    widget.original.select(pair[0])
    widget.decoded.select(pair[1])
    return widget


def test_metrics_match_core_metrics(viewer, qtbot, widget, cells_tyx, cells_encoded):
    decoded = cells_encoded.array()[...]
    viewer.dims.set_current_step(0, 3)
    widget.slice_metrics()
    qtbot.waitUntil(lambda: "slice" in widget.last_metrics, timeout=30_000)
    assert widget.last_metrics["slice"] == metrics.quality(cells_tyx[3], decoded[3])
    widget.stack_metrics()
    qtbot.waitUntil(lambda: "stack" in widget.last_metrics, timeout=30_000)
    expected = metrics.quality(cells_tyx, decoded)
    assert widget.last_metrics["stack"] == expected
    assert expected.psnr == pytest.approx(cells_encoded.header.fit["psnr"], abs=1e-3)
    assert f"{expected.psnr:.2f} dB" in widget.stack_label.text()


def test_difference_layer_is_lazy_and_exact(viewer, widget, cells_tyx, cells_encoded):
    diff = widget.add_difference()
    assert diff.multiscale and diff.dtype == np.float32
    plane = np.asarray(diff.data[0][2])
    expected = cells_tyx[2].astype(np.float32) - cells_encoded.array()[2].astype(np.float32)
    np.testing.assert_array_equal(plane, expected)


def test_side_by_side_and_back(viewer, widget, pair):
    other = viewer.add_image(np.zeros((48, 40)), name="other")
    grid = viewer.canvas.grid
    viewer.camera.zoom = 7.0
    widget.side_button.setChecked(True)
    assert grid.enabled and grid.shape == (1, 2)
    assert [layer.visible for layer in viewer.layers] == [True, True, False]
    widget.side_button.setChecked(False)
    assert not grid.enabled
    assert viewer.camera.zoom == 7.0
    assert all(layer.visible for layer in viewer.layers)
    assert other.visible


def test_roi_decode_from_a_rectangle(viewer, qtbot, widget, pair, cells_encoded):
    shapes = viewer.add_shapes(
        [np.array([[10.0, 5.0], [10.0, 25.0], [30.0, 25.0], [30.0, 5.0]])],
        shape_type="rectangle",
        scale=(0.5, 0.5),
        name="roi",
    )
    widget.shapes.select(shapes)
    widget.zoom.setValue(4)
    viewer.dims.set_current_step(0, 2)
    assert widget.roi_region() == (slice(2, 3), slice(10, 31), slice(5, 26))
    widget.decode_roi()
    qtbot.waitUntil(lambda: "cells [INIF 16x] [ROI 4x]" in viewer.layers, timeout=30_000)
    roi = viewer.layers["cells [INIF 16x] [ROI 4x]"]
    assert roi.data.shape == (1, 84, 84)
    np.testing.assert_allclose(roi.scale, [1.0, 0.125, 0.125])
    np.testing.assert_allclose(roi.translate, [2.0, 0.5 * (10 - 0.375), 0.5 * (5 - 0.375)])
    np.testing.assert_array_equal(roi.data, cells_encoded.array().zoom(4)[2:3, 40:124, 20:104])


def test_roi_decode_evaluates_only_the_blocks_it_touches(viewer, qtbot, cells_tyx, tmp_path):
    from napari_inif.core import CompressionConfig, compress

    config = CompressionConfig(ratio=8, steps=5, max_block_voxels=1024, device="cpu")
    enc = compress(cells_tyx, config, axes="TYX")
    grid = enc.header.grid
    assert grid.n_blocks == 4  # 2x2 in Y and X, so a corner ROI touches one block of four
    [decoded] = viewer.open(str(enc.save(tmp_path / "blocks.inif")), plugin="napari-inif")
    _, widget = viewer.window.add_plugin_dock_widget("napari-inif", "Inspect")
    widget.decoded.select(decoded)
    shapes = viewer.add_shapes(
        [np.array([[2.0, 2.0], [2.0, 12.0], [12.0, 12.0], [12.0, 2.0]])], shape_type="rectangle"
    )
    widget.shapes.select(shapes)
    widget.zoom.setValue(2)
    decoded.visible = False  # the canvas must not decode the plane while we count blocks
    background = background_decoder()
    assert background is None or background.idle()
    evaluated = decoded.metadata[FIELD_KEY].decoder.blocks_evaluated
    evaluated.clear()
    widget.decode_roi()
    qtbot.waitUntil(lambda: f"{decoded.name} [ROI 2x]" in viewer.layers, timeout=30_000)
    top_left = next(b for b in range(4) if all(lo == 0 for lo, _ in grid.bounds(b)))
    assert evaluated == {top_left}, evaluated


def test_roi_decode_all_planes_at_stored_resolution(viewer, qtbot, widget, cells_encoded):
    shapes = viewer.add_shapes(
        [np.array([[4.0, 4.0], [4.0, 8.0], [8.0, 8.0], [8.0, 4.0]])],
        shape_type="rectangle",
        scale=(0.5, 0.5),
    )
    widget.shapes.select(shapes)
    widget.zoom.setValue(1)
    widget.all_planes.setChecked(True)
    widget.decode_roi()
    qtbot.waitUntil(lambda: "cells [INIF 16x] [ROI 1x]" in viewer.layers, timeout=30_000)
    roi = viewer.layers["cells [INIF 16x] [ROI 1x]"]
    np.testing.assert_array_equal(roi.data, cells_encoded.array()[:, 4:9, 4:9])
    np.testing.assert_allclose(roi.translate, [0.0, 2.0, 2.0])


def test_choosing_a_decoded_layer_picks_its_source(viewer, widget, pair):
    original, decoded = pair
    viewer.add_image(np.zeros((6, 48, 40), np.uint16), name="decoy")
    decoded.metadata["inif"]["source_layer"] = "cells"
    widget.original.select(viewer.layers["decoy"])
    widget._match_original()
    assert widget.original.current() is original


def test_viewport_toggle_and_close_clean_up(viewer, qtbot, widget, pair):
    assert widget.viewport_box.isChecked()  # on by default for every decoded layer
    assert widget.sampler is not None and widget.sampler.layer is pair[1]
    sampler = widget.sampler
    widget.viewport_box.setChecked(False)
    assert widget.sampler is None and sampler._stopped
    widget.viewport_box.setChecked(True)
    assert widget.sampler is not None and widget.sampler is not sampler
    widget.side_button.setChecked(True)
    widget.close()
    qtbot.waitUntil(lambda: not widget.sampler.busy, timeout=30_000)
    assert not viewer.canvas.grid.enabled
    assert all(layer.visible for layer in viewer.layers)


def test_psnr_per_plane_is_plotted_along_t(viewer, qtbot, widget, cells_tyx, cells_encoded):
    widget.plane_metrics()
    qtbot.waitUntil(lambda: "planes" in widget.last_metrics, timeout=30_000)
    axis, values = widget.last_metrics["planes"]
    decoded = cells_encoded.array()[...]
    data_range = float(cells_tyx.max() - cells_tyx.min())
    assert axis == "T" and [i for i, _ in values] == list(range(6))
    for i, value in values:
        assert value == pytest.approx(metrics.psnr(cells_tyx[i], decoded[i], data_range))
    assert len(widget.planes_plot.points) == 6
    assert "worst" in widget.planes_label.text() and "T=" in widget.planes_label.text()
