"""The Compress dock widget: fit in a worker, live preview, cancel, refusals, errors, save."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_inif._layers import field_of
from napari_inif._qt import compress_widget
from napari_inif._qt.compress_widget import PRESETS, CompressWidget
from napari_inif.core import Layout, load, max_ratio
from napari_inif.core.metrics import quality as metrics

QUICK = "Quick (1000 steps)"


@pytest.fixture
def widget(viewer) -> CompressWidget:
    """The widget docked the way `inif demo` does it (by its display name)."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-inif", "Compress")
    return widget


@pytest.fixture
def source(viewer, cells_tyx):
    return viewer.add_image(cells_tyx, name="cells", axis_labels=("t", "y", "x"))


def _wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget._run is None, timeout=timeout)


def test_compress_to_completion(viewer, qtbot, widget, source, cells_tyx, monkeypatch, tmp_path):
    monkeypatch.setitem(PRESETS, QUICK, 30)
    other = viewer.add_image(np.zeros((4, 4)), name="selected at the end")
    widget.layer_combo.select(source)
    widget.preset.setCurrentText(QUICK)
    widget.set_ratio(16)
    widget.form["device"].value = "cpu"
    viewer.layers.selection.active = other
    before = cells_tyx.copy()
    widget.start()
    assert widget.cancel_button.isEnabled() and not widget.start_button.isEnabled()
    _wait_idle(qtbot, widget)

    decoded = viewer.layers["cells [INIF 16x]"]
    names = [layer.name for layer in viewer.layers]
    assert names.index("cells [INIF 16x]") == names.index("cells") + 1  # tied to its source
    info = decoded.metadata["inif"]
    assert info["source_layer"] == "cells"
    assert info["ratio"] == pytest.approx(16, rel=0.1)
    full = np.asarray(field_of(decoded))  # exact; the layer's data streams (stand-ins first)
    assert full.shape == cells_tyx.shape and full.dtype == cells_tyx.dtype
    assert info["psnr"] == pytest.approx(metrics.psnr(cells_tyx, full), abs=1e-3)
    assert 15 < info["psnr"] < 60
    assert source.metadata["inif_config"]["steps"] == 30
    np.testing.assert_array_equal(source.data, before)  # the original is never modified
    assert widget.progress.format() == "done" and len(widget.plot.points) >= 20

    path = widget.save(str(tmp_path / "cells"))
    assert path.endswith("cells.inif")
    assert decoded.metadata["inif"]["file"] == path
    assert load(path).to_bytes() == widget.result[1].to_bytes()


def test_compress_with_the_grid_field(
    viewer, qtbot, widget, source, cells_tyx, tmp_path, monkeypatch
):
    """The architecture picked in the form reaches the file: a grid field's layer and
    .inif come back (no previews: the grid fit reports progress only)."""
    widget.layer_combo.select(source)
    widget.preset.setCurrentText(QUICK)
    widget.set_ratio(16)
    monkeypatch.setitem(PRESETS, QUICK, 40)
    widget.form["architecture"].value = "grid"
    widget.form["device"].value = "cpu"
    widget.start()
    _wait_idle(qtbot, widget)
    decoded = viewer.layers["cells [INIF 16x]"]
    full = np.asarray(field_of(decoded))
    assert full.shape == cells_tyx.shape and full.dtype == cells_tyx.dtype
    assert decoded.metadata["inif"]["psnr"] == pytest.approx(
        metrics.psnr(cells_tyx, full), abs=1e-2
    )
    assert decoded.metadata["inif"]["ratio"] == pytest.approx(16, rel=0.1)
    path = widget.save(str(tmp_path / "cells_grid"))
    assert load(path).header.fit["architecture"] == "grid"


def test_the_preview_layer_is_added_at_start_and_only_updated_during_the_fit(
    viewer, qtbot, widget, source, monkeypatch
):
    # Adding a napari layer holds the GUI thread 0.1-0.3 s: it happens when Start is
    # clicked (an empty, transparent layer); the previews and the result swap its data.
    monkeypatch.setitem(PRESETS, QUICK, 60)
    monkeypatch.setattr(compress_widget, "PREVIEW_EVERY", 0.2)
    widget.preset.setCurrentText(QUICK)
    widget.set_ratio(16)
    widget.form["device"].value = "cpu"
    widget.start()
    [preview] = [layer for layer in viewer.layers if layer.name.endswith("(fitting…)")]
    assert preview.opacity == 0.0 and preview.multiscale
    assert tuple(preview.data[0].shape) == source.data.shape
    inserted: list = []
    viewer.layers.events.inserted.connect(lambda event: inserted.append(event.value))
    qtbot.waitUntil(lambda: preview.opacity == 1.0, timeout=30_000)  # a preview, or the end
    _wait_idle(qtbot, widget)
    assert inserted == []
    assert viewer.layers["cells [INIF 16x]"] is preview and preview.opacity == 1.0
    assert "inif_preview" not in preview.metadata


def test_cancel_stops_the_worker_and_leaves_no_layer(viewer, qtbot, widget, source, monkeypatch):
    monkeypatch.setitem(PRESETS, QUICK, 100_000)
    monkeypatch.setattr(compress_widget, "PREVIEW_EVERY", 0.3)
    widget.preset.setCurrentText(QUICK)
    widget.set_ratio(16)
    widget.start()
    qtbot.waitUntil(lambda: len(viewer.layers) == 2, timeout=30_000)  # the live preview
    assert viewer.layers[1].name == "cells [INIF 16x] (fitting…)"
    worker = widget._run.worker
    start = time.perf_counter()
    widget.cancel()
    assert widget._run is None and not widget.start_button.isEnabled()  # until it stopped
    assert widget.progress.format() == "cancelling…"
    assert viewer.layers[-1].opacity == 0.0  # the preview goes from the screen at once
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    took = time.perf_counter() - start
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=5_000)  # and then removed
    assert not worker.is_running and worker.abort_requested
    assert took < 3.0, f"cancel took {took:.2f} s"
    assert [layer.name for layer in viewer.layers] == ["cells"]
    assert widget.progress.format() == "cancelled"
    assert widget.start_button.isEnabled() and widget.result is None


def test_removing_the_source_cancels(viewer, qtbot, widget, source, monkeypatch, notifications):
    monkeypatch.setitem(PRESETS, QUICK, 100_000)
    widget.preset.setCurrentText(QUICK)
    widget.set_ratio(16)
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.format().startswith("step"), timeout=30_000)
    worker = widget._run.worker
    viewer.layers.remove(source)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    # the preview goes when the worker's ``finished`` signal reaches the GUI thread,
    # which can be an event-loop turn after ``is_running`` turns false (CI saw it there)
    qtbot.waitUntil(lambda: len(viewer.layers) == 0, timeout=5_000)
    assert any("cancelled" in m for m in notifications)


def test_an_unreachable_ratio_is_refused_with_the_largest_possible(
    viewer, widget, source, notifications
):
    top = max_ratio(Layout(source.data.shape, "TYX", "uint16"))
    widget.set_ratio(1024)
    assert not widget.start_button.isEnabled()
    assert f"largest possible ratio is {top:.0f}x" in widget.ratio_label.text()
    widget.start()  # refused even if called directly
    assert widget._run is None
    assert any(f"{top:.0f}x" in m for m in notifications)
    widget.set_ratio(16)
    assert widget.start_button.isEnabled()


def test_a_failing_fit_becomes_a_notification(
    viewer, qtbot, widget, source, notifications, monkeypatch
):
    import torch

    # "cuda" on a machine torch sees no GPU on; on a CUDA machine too, by hiding the GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    widget.set_ratio(16)
    widget.form["device"].value = "cuda"
    widget.start()
    _wait_idle(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["cells"]
    assert any("failed" in m and "cuda" in m.lower() for m in notifications), notifications


def test_close_cleans_up(viewer, qtbot, widget, source, monkeypatch):
    monkeypatch.setitem(PRESETS, QUICK, 100_000)
    widget.preset.setCurrentText(QUICK)
    widget.set_ratio(16)
    widget.start()
    worker = widget._run.worker
    widget.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    # the preview (added at Start) goes when the worker's ``finished`` reaches the GUI
    qtbot.waitUntil(lambda: [layer.name for layer in viewer.layers] == ["cells"], timeout=5000)
    viewer.add_image(np.zeros((3, 3)), name="after close")  # no handler of the closed widget runs
    assert [layer.name for layer in viewer.layers] == ["cells", "after close"]


def test_removing_the_dock_cancels_the_fit(viewer, qtbot, widget, source, monkeypatch):
    monkeypatch.setitem(PRESETS, QUICK, 100_000)
    widget.preset.setCurrentText(QUICK)
    widget.set_ratio(16)
    widget.start()
    worker = widget._run.worker
    viewer.window.remove_dock_widget(widget)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    assert worker.abort_requested
    # the preview (added at Start) goes when the worker's ``finished`` reaches the GUI
    qtbot.waitUntil(lambda: [layer.name for layer in viewer.layers] == ["cells"], timeout=5000)
    widget.deleteLater()  # napari un-parents a removed dock's widget; it is ours to delete
    qtbot.wait(10)


def test_closing_the_viewer_during_a_fit_cancels_it(viewer, qtbot, widget, source, monkeypatch):
    monkeypatch.setitem(PRESETS, QUICK, 100_000)
    widget.preset.setCurrentText(QUICK)
    widget.set_ratio(16)
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.format().startswith("step"), timeout=30_000)
    worker = widget._run.worker
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    assert worker.abort_requested


def test_config_controls_come_from_the_config_and_the_registries(widget):
    from napari_inif.core.config import CompressionConfig, settings
    from napari_inif.core.registry import ARCHITECTURES, GUIDANCES

    form = widget.form
    own = set(compress_widget.OWN_CONTROLS)
    assert set(form.widgets) == {s.name for s in settings()} - own  # every other field
    assert "mps" in form["device"].choices
    assert list(form["architecture"].choices) == ARCHITECTURES.names()  # inif-all included
    assert list(form["guidance"].choices) == GUIDANCES.names()
    tips = form["architecture"].native
    assert tips.itemData(1, compress_widget.Qt.ItemDataRole.ToolTipRole) == (
        ARCHITECTURES.describe(tips.itemText(1))
    )
    assert form.sections["advanced"].isExpanded() is False
    assert form.sections["guidance"].isExpanded() and form.sections["hybrid"].isExpanded()

    # Guidance settings are disabled, and ignored, while guidance is "none".
    guided = ("guidance_model", "guidance_weight", "guidance_diameter", "guidance_every")
    assert not any(form[name].enabled for name in guided)
    form.set_value("guidance_weight", 3.0)
    assert widget.config().guidance_weight == 1.0
    form["guidance"].value = "ssim"
    assert all(form[name].enabled for name in guided)
    form.set_value("guidance_every", 2)
    config = widget.config()
    assert (config.guidance, config.guidance_weight, config.guidance_every) == ("ssim", 3.0, 2)
    assert config.guidance_diameter is None and config.guidance_model == "inif_nuclei_small"
    # ... and in hybrid mode, where the codec prior is enabled instead.
    assert not form["prior"].enabled
    form["mode"].value = "hybrid"
    assert form["prior"].enabled and not form["guidance"].enabled
    assert widget.config().guidance == "none"

    # Advanced fields reach the config, optional ones through their "auto" value.
    form["lr"].value = 5e-4
    form.set_value("depth", 4)
    config = widget.config()
    assert (config.lr, config.depth, config.mode) == (5e-4, 4, "hybrid")
    form.set_value("depth", None)
    assert form["depth"].native.text() == "auto"
    assert widget.config() == CompressionConfig(
        ratio=widget.ratio, steps=4000, mode="hybrid", lr=5e-4, device=config.device
    )


def test_a_registered_name_and_a_new_config_field_reach_the_widget(viewer):
    import dataclasses

    from napari_inif.core.config import CompressionConfig, Range, setting
    from napari_inif.core.registry import ARCHITECTURES

    extended = dataclasses.make_dataclass(
        "Extended",
        [("sparkle", float, setting(0.5, "how much sparkle", group="basic", range=Range(0, 1)))],
        bases=(CompressionConfig,),
        frozen=True,
    )
    ARCHITECTURES.register("throwaway", None, "a family registered by a test")
    try:
        widget = CompressWidget(viewer, config_cls=extended)
        viewer.window.add_dock_widget(widget)
        assert "throwaway" in widget.form["architecture"].choices
        control = widget.form["sparkle"]
        assert (control.value, control.min, control.max) == (0.5, 0.0, 1.0)
        assert control.tooltip.startswith("How much sparkle")
        control.value = 0.25
        config = widget.config()
        assert isinstance(config, extended) and config.sparkle == 0.25
    finally:
        ARCHITECTURES.unregister("throwaway")
    widget.form.reset_choices()  # a name gone from the registry leaves the combo box
    assert "throwaway" not in widget.form["architecture"].choices


def test_an_invalid_config_is_a_notification_not_a_crash(viewer, widget, source, notifications):
    widget.form["guidance"].value = "segmentation"
    widget.form["guidance_model"].value = ""
    widget.set_ratio(16)
    widget.start()
    assert widget._run is None
    assert any("needs a Cellpose model" in m for m in notifications), notifications


def test_a_time_lapse_is_compressed_with_the_axes_typed(
    viewer, qtbot, widget, cells_tyx, monkeypatch
):
    monkeypatch.setitem(PRESETS, QUICK, 30)
    layer = viewer.add_image(cells_tyx, name="movie")  # no axis labels: napari shows ZYX
    widget.layer_combo.select(layer)
    assert widget.axes_edit.text() == "ZYX"  # the guess, shown to be corrected
    widget.axes_edit.setText("TY")
    assert "cannot compress" in widget.ratio_label.text() and not widget.start_button.isEnabled()
    widget.axes_edit.setText("tyx")
    widget.preset.setCurrentText(QUICK)
    widget.set_ratio(16)
    assert widget.start_button.isEnabled()
    widget.result_label.setText("an older result")
    widget.start()
    assert widget.result_label.text() == ""  # not this fit's result
    _wait_idle(qtbot, widget)
    layer, encoded = widget.result
    assert encoded.header.layout.axes == "TYX"
    assert tuple(layer.axis_labels) == ("T", "Y", "X")
    assert widget.default_file_name() == "movie_16x.inif"
    labelled = viewer.add_image(cells_tyx, name="labelled", axis_labels=("t", "y", "x"))
    widget.layer_combo.select(labelled)
    assert widget.axes_edit.text() == "TYX"  # prefilled from the layer's axis labels


def test_an_rgb_image_comes_back_as_one_rgb_layer(viewer, qtbot, widget, nuclei_128, monkeypatch):
    monkeypatch.setitem(PRESETS, QUICK, 30)
    rgb = np.stack([nuclei_128, nuclei_128[::-1], nuclei_128[:, ::-1]], axis=-1)
    source = viewer.add_image(rgb, name="colour")
    assert source.rgb
    widget.layer_combo.select(source)
    assert widget.axes_edit.text() == "YX"
    widget.preset.setCurrentText(QUICK)
    widget.set_ratio(8)
    widget.start()
    _wait_idle(qtbot, widget)
    added = [layer for layer in viewer.layers if layer is not source]
    assert len(added) == 1  # one layer, not three grey ones
    [layer] = added
    assert layer.rgb and layer.data[0].shape == rgb.shape and layer.data[0].dtype == np.uint8
    assert widget.result[1].header.layout.axes == "YXS"
    decoded = np.asarray(field_of(layer))
    assert metrics.psnr(rgb, decoded) > 15


def test_a_labels_layer_is_listed_with_why_it_cannot_be_compressed(viewer, widget, source):
    labels = viewer.add_labels(np.zeros((6, 48, 40), np.uint16), name="masks")
    widget.layer_combo.select(labels)
    assert widget.layer_combo.current() is labels
    assert "labels are not supported" in widget.ratio_label.text()
    assert "lossless" in widget.ratio_label.text()
    assert not widget.start_button.isEnabled()
    widget.start()
    assert widget._run is None


def test_the_preview_layer_becomes_the_result(viewer, qtbot, widget, source, monkeypatch):
    """No layer added or removed at the end of a fit (each holds the GUI thread)."""
    from napari_inif._layers import FIELD_KEY, LAZY_KEY

    monkeypatch.setitem(PRESETS, QUICK, 400)
    monkeypatch.setattr(compress_widget, "PREVIEW_EVERY", 0.05)
    widget.preset.setCurrentText(QUICK)
    widget.set_ratio(16)
    widget.start()
    qtbot.waitUntil(lambda: len(viewer.layers) == 2, timeout=30_000)
    preview = viewer.layers[1]
    _wait_idle(qtbot, widget)
    layer, encoded = widget.result
    assert layer is preview and [lay.name for lay in viewer.layers] == ["cells", layer.name]
    assert layer.name == "cells [INIF 16x]" and tuple(layer.axis_labels) == ("T", "Y", "X")
    assert "inif_preview" not in layer.metadata
    assert layer.metadata[LAZY_KEY] is layer.metadata[FIELD_KEY]
    np.testing.assert_array_equal(np.asarray(field_of(layer)), encoded.array()[...])


def test_save_never_replaces_a_file_without_asking(
    viewer, widget, cells_encoded, tmp_path, monkeypatch, notifications
):
    """The dialog asks about ``foo``; ``foo.inif`` (the name written) is asked about here."""
    from types import SimpleNamespace

    from qtpy.QtWidgets import QFileDialog, QMessageBox

    layer = SimpleNamespace(metadata={"inif": {"source_layer": "cells"}}, name="cells")
    widget.result = (layer, cells_encoded)
    mine = tmp_path / "foo.inif"
    mine.write_bytes(b"the user's file")
    typed = str(tmp_path / "foo")
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (typed, ""))
    asked: list[str] = []
    answer = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(
        QMessageBox, "question", lambda _, __, text, *a: asked.append(text) or answer[0]
    )

    widget._save_dialog()  # "No": nothing written
    assert asked and "foo.inif" in asked[0]
    assert mine.read_bytes() == b"the user's file"

    assert widget.save(typed) == ""  # a script, without overwrite=True: refused, said why
    assert mine.read_bytes() == b"the user's file"
    assert any("already exists" in m for m in notifications)

    answer[0] = QMessageBox.StandardButton.Yes
    widget._save_dialog()  # "Yes": replaced
    assert load(mine).to_bytes() == cells_encoded.to_bytes()
    assert layer.metadata["inif"]["file"] == str(mine)

    typed = str(tmp_path / "new")  # a new name: no question
    asked.clear()
    widget._save_dialog()
    assert not asked and load(tmp_path / "new.inif").to_bytes() == cells_encoded.to_bytes()


def test_adding_a_layer_keeps_the_typed_axes(viewer, widget, source):
    # The layer list is rebuilt on every insertion (e.g. the preview added at Start): the
    # chosen layer stays, so the axes typed for it stay and nothing is recomputed.
    widget.axes_edit.setText("ZYX")
    viewer.add_image(np.zeros((4, 4)), name="another")
    assert widget.layer_combo.current() is source
    assert widget.axes_edit.text() == "ZYX"
