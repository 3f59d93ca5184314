"""Viewport sampling: on by default, the visible region only, at screen resolution."""

from __future__ import annotations

import numpy as np
import pytest

from napari_inif._qt.viewport import _camera, sampler_of


@pytest.fixture
def decoded(viewer, cells_inif):
    [layer] = viewer.open(str(cells_inif), plugin="napari-inif")
    return layer


def _look(viewer, center_yx, zoom, canvas=(80, 60)) -> None:
    """Point the camera (world units; the layer's pixels are 0.5 wide) and size the canvas."""
    viewer.canvas.size = canvas
    camera = _camera(viewer)
    camera.center = tuple(center_yx)
    camera.zoom = zoom


def test_sampling_is_on_by_default_and_decodes_only_the_screen(
    viewer, qtbot, decoded, cells_encoded
):
    sampler = sampler_of(viewer, decoded)
    assert sampler is not None  # nobody asked: File > Open gives it
    viewer.dims.set_current_step(0, 1)
    _look(viewer, (10.0, 8.0), zoom=8.0)  # 4 screen pixels per stored pixel
    qtbot.waitUntil(lambda: sampler.applied >= 1 and not sampler.busy, timeout=30_000)
    overlay = sampler.overlay
    assert overlay.name == "cells [viewport]"
    # The 80x60 canvas shows 10 x 7.5 world units = 20 x 15 stored pixels around the
    # centre (rows 10..30, columns 9..23 once rounded out), each sampled 4x4.
    assert overlay.data.shape == (1, 21 * 4, 15 * 4)
    canvas_pixels = 80 * 60
    assert overlay.data.size <= 1.25 * canvas_pixels  # decoded: about the screen, no more
    expected = cells_encoded.array().zoom(4)[1:2, 40:124, 36:96]
    np.testing.assert_array_equal(overlay.data, expected)
    np.testing.assert_allclose(overlay.scale, [1.0, 0.125, 0.125])
    np.testing.assert_allclose(overlay.translate, [1.0, 0.5 * (10 - 0.375), 0.5 * (9 - 0.375)])
    assert viewer.layers.selection.active is not overlay


def test_zooming_out_hides_the_overlay_and_stale_results_are_dropped(viewer, qtbot, decoded):
    sampler = sampler_of(viewer, decoded)
    _look(viewer, (12.0, 10.0), zoom=4.0)
    qtbot.waitUntil(lambda: sampler.applied >= 1 and not sampler.busy, timeout=30_000)
    applied = sampler.applied
    sampler.request()
    sampler.schedule()  # the view changed while the request ran: its result is stale
    qtbot.waitUntil(lambda: sampler.dropped >= 1, timeout=30_000)
    qtbot.waitUntil(lambda: sampler.applied > applied and not sampler.busy, timeout=30_000)
    _look(viewer, (12.0, 10.0), zoom=1.5)  # under one screen pixel per stored pixel
    sampler.request()
    assert sampler.overlay.opacity == 0.0  # hidden without visible=False (napari crash)


def test_removing_the_layer_stops_its_sampler(viewer, qtbot, decoded):
    sampler = sampler_of(viewer, decoded)
    _look(viewer, (5.0, 5.0), zoom=6.0)
    qtbot.waitUntil(lambda: sampler.applied >= 1 and not sampler.busy, timeout=30_000)
    viewer.layers.remove(decoded)
    qtbot.waitUntil(lambda: len(viewer.layers) == 0, timeout=5_000)  # overlay gone too
    assert sampler_of(viewer, decoded) is None
    _camera(viewer).zoom = 3.0  # no handler of the stopped sampler runs
    qtbot.waitUntil(lambda: not sampler.busy, timeout=30_000)
    assert len(viewer.layers) == 0


def test_docked_widgets_share_the_viewers_samplers(viewer, qtbot, cells_inif):
    """Widgets get a PublicOnlyProxy of the viewer: still one sampler per layer."""
    viewer.window.add_plugin_dock_widget("napari-inif", "Compress")
    viewer.window.add_plugin_dock_widget("napari-inif", "Inspect")
    [layer] = viewer.open(str(cells_inif), plugin="napari-inif")
    _look(viewer, (10.0, 8.0), zoom=8.0)
    sampler = sampler_of(viewer, layer)
    qtbot.waitUntil(lambda: sampler.applied >= 1 and not sampler.busy, timeout=30_000)
    qtbot.wait(300)
    overlays = [lay.name for lay in viewer.layers if lay.name.endswith("[viewport]")]
    assert overlays == ["cells [viewport]"]
    assert not any("[viewport] [" in lay.name for lay in viewer.layers)


def test_quitting_stops_samplers_and_waits_for_requests(viewer, qtbot, decoded):
    from napari_inif._qt.viewport import stop_all_samplers

    sampler = sampler_of(viewer, decoded)
    _look(viewer, (10.0, 8.0), zoom=8.0)
    sampler.request()
    stop_all_samplers()  # what the application's aboutToQuit runs
    assert sampler._stopped
    assert sampler_of(viewer, decoded) is None
    from superqt.utils._qthreading import WorkerBase

    assert not any(w.is_running for w in WorkerBase._worker_set)  # waited for them


def test_the_layers_menu_turns_sampling_off_and_on_for_the_selected_layers(
    viewer, cells_inif, notifications
):
    from napari._app_model import get_app_model

    app = get_app_model()
    command = "napari-inif.toggle_viewport_sampling"
    items = app.menus.get_menu("napari/layers/visualize")
    assert any(getattr(getattr(i, "command", None), "id", None) == command for i in items)
    [layer] = viewer.open(str(cells_inif), plugin="napari-inif")
    plain = viewer.add_image(np.zeros((4, 4)), name="plain")
    viewer.layers.selection = {layer, plain}
    assert sampler_of(viewer, layer) is not None  # on by default
    app.commands.execute_command(command).result()
    assert sampler_of(viewer, layer) is None
    assert any("'cells' off" in m for m in notifications)
    app.commands.execute_command(command).result()
    assert sampler_of(viewer, layer) is not None
    viewer.layers.selection = {plain}
    app.commands.execute_command(command).result()  # no INIF layer selected: says so
    assert sampler_of(viewer, layer) is not None
    assert any("Select an INIF layer" in m for m in notifications)
