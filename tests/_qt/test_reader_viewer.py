"""Opening .inif files in a real viewer."""

from __future__ import annotations

import numpy as np


def test_viewer_open_gives_a_lazy_decoded_layer(viewer, cells_inif, cells_encoded):
    [layer] = viewer.open(str(cells_inif), plugin=None)  # chosen by the *.inif pattern
    assert layer.name == "cells"
    assert layer.multiscale
    assert layer.data.shapes[0] == (6, 48, 40)
    assert tuple(layer.axis_labels) == ("T", "Y", "X")
    np.testing.assert_allclose(layer.scale, [1.0, 0.5, 0.5])
    assert layer.metadata["inif"]["file"] == str(cells_inif)
    viewer.dims.set_current_step(0, 4)
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), cells_encoded.array()[4])


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
