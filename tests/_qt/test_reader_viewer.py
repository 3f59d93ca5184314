"""Opening .inif files in a real viewer."""

from __future__ import annotations

import numpy as np


def test_viewer_open_gives_a_lazy_decoded_layer(viewer, qtbot, cells_inif, cells_encoded):
    [layer] = viewer.open(str(cells_inif), plugin=None)  # chosen by the *.inif pattern
    assert layer.name == "cells"
    assert layer.multiscale
    assert layer.data.shapes[0] == (6, 48, 40)
    assert tuple(layer.axis_labels) == ("T", "Y", "X")
    np.testing.assert_allclose(layer.scale, [1.0, 0.5, 0.5])
    assert layer.metadata["inif"]["file"] == str(cells_inif)
    viewer.dims.set_current_step(0, 4)
    expected = cells_encoded.array()[4]
    # Decoded in the background; the layer is refreshed when the tiles arrived.
    qtbot.waitUntil(
        lambda: np.array_equal(np.asarray(layer._slice.image.raw), expected), timeout=10_000
    )


def test_a_corrupted_file_gives_a_notification_and_no_layer(viewer, cells_inif, notifications):
    data = bytearray(cells_inif.read_bytes())
    cells_inif.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    assert viewer.open(str(cells_inif), plugin=None) == []
    assert len(viewer.layers) == 0
    assert any("cells.inif" in m for m in notifications), notifications


def test_save_layer_through_napari_writes_the_same_file(viewer, cells_inif, tmp_path):
    from napari_inif.core import load

    viewer.open(str(cells_inif), plugin="napari-inif")
    [path] = viewer.layers.save(str(tmp_path / "copy.inif"), selected=False, plugin="napari-inif")
    assert load(path).to_bytes() == cells_inif.read_bytes()


def test_file_open_and_drag_drop_choose_our_reader_by_the_pattern(viewer, cells_inif):
    """File > Open and drag-and-drop go through ``QtViewer._qt_open`` (``plugin=None``):
    npe2 picks napari-inif, the only reader whose pattern matches ``*.inif``."""
    from npe2 import PluginManager

    readers = [
        r.plugin_name for r in PluginManager.instance().iter_compatible_readers([str(cells_inif)])
    ]
    assert readers == ["napari-inif"]
    viewer.window._qt_viewer._qt_open([str(cells_inif)], stack=False)
    assert [layer.name for layer in viewer.layers] == ["cells"]


def test_viewer_open_without_plugin_names_our_reader(viewer, cells_inif):
    """napari 0.9's ``Viewer.open`` defaults to ``plugin="napari"`` (its built-in reader,
    which no plugin can extend); its error names napari-inif, and ``plugin=None`` works."""
    import pytest

    with pytest.raises(ValueError, match="napari-inif"):
        viewer.open(str(cells_inif))
    assert [layer.name for layer in viewer.open(str(cells_inif), plugin=None)] == ["cells"]
