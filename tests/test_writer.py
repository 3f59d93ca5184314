"""The npe2 writer: image layer data -> .inif."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_inif._layers import ENCODED_KEY, decoded_layer_data
from napari_inif._writer import CONFIG_KEY, write_image
from napari_inif.core import load


def test_a_decoded_layer_is_written_without_fitting_again(cells_encoded, tmp_path, monkeypatch):
    monkeypatch.setattr("napari_inif.core.compress", lambda *a, **k: pytest.fail("refitted"))
    data, meta, _ = decoded_layer_data(cells_encoded, name="cells [INIF 16x]")
    [path] = write_image(str(tmp_path / "out"), data, meta)
    assert path.endswith("out.inif")
    assert load(path).to_bytes() == cells_encoded.to_bytes()


def test_a_plain_layer_is_fitted_with_the_recorded_settings(tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((96, 120)) * 200).astype(np.uint8)
    meta = {
        "name": "noise",
        "axis_labels": ["-2", "-1"],  # napari's default labels: axes are guessed (YX)
        "scale": [0.5, 0.5],
        "metadata": {CONFIG_KEY: {"ratio": 8.0, "steps": 5, "device": "cpu"}},
    }
    [path] = write_image(str(tmp_path / "noise.inif"), image, meta)
    encoded = load(path)
    assert encoded.header.layout.shape == (96, 120)
    assert encoded.header.layout.axes == "YX"
    assert encoded.header.scale == (0.5, 0.5)
    assert encoded.header.fit["steps"] == 5
    assert encoded.ratio == pytest.approx(8.0, rel=0.1)
    assert ENCODED_KEY not in meta["metadata"]


def test_an_appended_suffix_never_replaces_a_file_unasked(tmp_path, monkeypatch):
    # napari's dialog confirmed "out", not the "out.inif" the writer makes of it.
    import napari_inif._writer as writer

    encoded = load(Path(writer.__file__).parent / "_data" / "cancer_cells_TYX.inif")
    data, meta, _ = decoded_layer_data(encoded, name="cells")
    existing = tmp_path / "out.inif"
    existing.write_bytes(b"the user's file")
    monkeypatch.setattr(writer, "_confirm_replace", lambda path: False)
    with pytest.raises(writer.SaveCancelled):
        write_image(str(tmp_path / "out"), data, meta)
    assert existing.read_bytes() == b"the user's file"
    monkeypatch.setattr(writer, "_confirm_replace", lambda path: True)
    write_image(str(tmp_path / "out"), data, meta)
    assert load(existing).to_bytes() == encoded.to_bytes()


def test_an_unwritable_folder_fails_before_fitting(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "napari_inif.core.engine.local.fit_array", lambda *a, **k: pytest.fail("fit")
    )
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(OSError, match=r"out\.inif"):
        write_image(str(blocker / "out.inif"), np.zeros((32, 32), np.uint8), {})
