"""Viewport sampling: finer samples of the visible region, debounced, stale results dropped."""

from __future__ import annotations

import numpy as np
import pytest

from napari_inif._qt.viewport import ViewportSampler


@pytest.fixture
def decoded(viewer, cells_inif):
    [layer] = viewer.open(str(cells_inif), plugin="napari-inif")
    return layer


def _zoom_in(layer, screen_px_per_pixel: float, corners) -> None:
    """What napari's canvas sets on draw (the test viewer is not shown, so nothing draws)."""
    layer.scale_factor = float(layer.scale[-1]) / screen_px_per_pixel
    layer.corner_pixels = np.array(corners)


def test_zoomed_in_view_is_sampled_finer(viewer, qtbot, decoded, cells_encoded):
    viewer.dims.set_current_step(0, 1)
    sampler = ViewportSampler(viewer, decoded, delay_ms=10)
    try:
        _zoom_in(decoded, 3.5, [[0, 10, 5], [0, 19, 14]])
        sampler.request()
        qtbot.waitUntil(lambda: sampler.applied == 1, timeout=30_000)
        overlay = sampler.overlay
        assert overlay.name == "cells [viewport]"
        assert overlay.data.shape == (1, 40, 40)  # 10 x 10 pixels, 4 samples each way
        np.testing.assert_allclose(overlay.scale, [1.0, 0.125, 0.125])
        np.testing.assert_allclose(overlay.translate, [1.0, 0.5 * (10 - 0.375), 0.5 * (5 - 0.375)])
        expected = cells_encoded.array().zoom(4)[1:2, 40:80, 20:60]
        np.testing.assert_array_equal(overlay.data, expected)
        assert viewer.layers.selection.active is not overlay
    finally:
        sampler.stop()
        qtbot.waitUntil(lambda: not sampler.busy, timeout=30_000)
    assert "cells [viewport]" not in viewer.layers


def test_stale_results_are_dropped_and_zoom_out_hides(viewer, qtbot, decoded):
    sampler = ViewportSampler(viewer, decoded, delay_ms=50)
    try:
        _zoom_in(decoded, 2.0, [[0, 0, 0], [0, 47, 39]])
        sampler.request()
        sampler.schedule()  # the view changed while the request ran: its result is stale
        qtbot.waitUntil(lambda: sampler.dropped == 1, timeout=30_000)
        qtbot.waitUntil(lambda: sampler.applied == 1, timeout=30_000)  # the debounced one
        assert sampler.overlay.data.shape == (1, 96, 80)
        _zoom_in(decoded, 0.8, [[0, 0, 0], [0, 47, 39]])
        sampler.request()
        assert not sampler.overlay.visible
    finally:
        sampler.stop()
        qtbot.waitUntil(lambda: not sampler.busy, timeout=30_000)


def test_removing_the_layer_stops_the_sampler(viewer, qtbot, decoded):
    sampler = ViewportSampler(viewer, decoded, delay_ms=10)
    _zoom_in(decoded, 2.0, [[0, 0, 0], [0, 9, 9]])
    sampler.request()
    qtbot.waitUntil(lambda: sampler.applied == 1, timeout=30_000)
    viewer.layers.remove(decoded)
    assert sampler.overlay is None and len(viewer.layers) == 0
    viewer.camera.zoom = 3.0  # no handler of the stopped sampler runs
    qtbot.waitUntil(lambda: not sampler.busy, timeout=30_000)
    assert len(viewer.layers) == 0
