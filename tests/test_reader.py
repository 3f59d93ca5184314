"""The npe2 reader: lazy multiscale layers from .inif, None for anything else, no torch to probe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from napari_inif._layers import ENCODED_KEY, INFO_KEY
from napari_inif._reader import napari_get_reader, read_inif, read_layers


@pytest.mark.parametrize(
    "path",
    [
        "image.tif",
        "image.inif.tif",
        "folder/",
        "",
        "x.INIF.zarr",
        42,
        None,
        b"x.inif",
        ["a.inif", "b.tif"],
        [],
    ],
)
def test_get_reader_refuses_anything_but_inif(path, tmp_path):
    assert napari_get_reader(path) is None


def test_get_reader_refuses_directories_named_inif(tmp_path):
    folder = tmp_path / "looks.inif"
    folder.mkdir()
    assert napari_get_reader(str(folder)) is None


def test_get_reader_accepts_inif_paths(tmp_path):
    assert napari_get_reader(str(tmp_path / "a.inif")) is read_layers
    assert napari_get_reader(tmp_path / "a.INIF") is read_layers
    assert napari_get_reader([str(tmp_path / "a.inif"), str(tmp_path / "b.inif")]) is read_layers


def test_probing_a_path_does_not_import_torch():
    code = (
        "import sys\n"
        "from napari_inif._reader import napari_get_reader\n"
        "assert napari_get_reader('cells.tif') is None\n"
        "assert napari_get_reader('cells.inif') is not None\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'napari_inif.core' not in sys.modules, 'the codec was imported'\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_read_gives_a_lazy_multiscale_layer_with_the_file_metadata(cells_inif, cells_encoded):
    [(levels, meta, kind)] = read_inif(cells_inif)
    assert kind == "image"
    assert meta["name"] == "cells"
    assert meta["multiscale"] is True
    assert all(isinstance(level, da.Array) for level in levels)
    assert levels[0].shape == (6, 48, 40)
    assert levels[0].dtype == np.uint16
    assert meta["axis_labels"] == ["T", "Y", "X"]
    assert meta["scale"] == [1.0, 0.5, 0.5]
    assert meta["units"] == ["pixel", "um", "um"]
    lo, hi = meta["contrast_limits"]
    assert lo < hi
    info = meta["metadata"][INFO_KEY]
    assert info["file"] == str(cells_inif)
    assert info["ratio"] == pytest.approx(cells_encoded.ratio, abs=0.01)
    assert info["psnr"] == cells_encoded.header.fit["psnr"]
    assert meta["metadata"][ENCODED_KEY].header == cells_encoded.header
    # decoding one plane through the lazy level equals the codec's own decoding
    expected = cells_encoded.array()[2, 10:20, :]
    np.testing.assert_array_equal(np.asarray(levels[0][:, 10:20][2]), expected)


def test_a_grid_file_opens_as_a_lazy_dask_layer(grid_encoded, tmp_path):
    path = grid_encoded.save(tmp_path / "grid.inif")
    [(levels, meta, kind)] = read_inif(path)
    assert kind == "image" and meta["name"] == "grid" and meta["multiscale"] is True
    assert all(isinstance(level, da.Array) for level in levels)
    assert levels[0].shape == (6, 48, 40) and levels[0].dtype == np.uint16
    assert meta["axis_labels"] == ["T", "Y", "X"] and meta["scale"] == [1.0, 0.5, 0.5]
    lo, hi = meta["contrast_limits"]
    assert lo < hi
    info = meta["metadata"][INFO_KEY]
    assert info["psnr"] == grid_encoded.header.fit["psnr"]
    assert info["ratio"] == pytest.approx(grid_encoded.ratio, abs=0.01)
    expected = grid_encoded.array()[2, 10:20, :]
    np.testing.assert_array_equal(np.asarray(levels[0][:, 10:20][2]), expected)


def test_a_damaged_file_is_a_notification_not_an_exception(cells_inif, monkeypatch):
    messages = []
    monkeypatch.setattr("napari_inif._reader._notify_error", messages.append)
    data = bytearray(cells_inif.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cells_inif.write_bytes(bytes(data))
    assert read_layers(str(cells_inif)) == [(None,)]
    assert len(messages) == 1
    assert "cells.inif" in messages[0]
    assert "checksum" in messages[0].lower() or "crc" in messages[0].lower()


def test_a_missing_or_truncated_file_is_reported(tmp_path, monkeypatch):
    messages = []
    monkeypatch.setattr("napari_inif._reader._notify_error", messages.append)
    (tmp_path / "short.inif").write_bytes(b"\x89INIF")
    assert read_layers([str(tmp_path / "short.inif"), str(tmp_path / "missing.inif")]) == [(None,)]
    assert len(messages) == 2


def test_napari_plugin_discovery_does_not_import_torch():
    code = (
        "import sys\n"
        "from npe2 import PluginManager\n"
        "pm = PluginManager.instance()\n"
        "pm.discover()\n"
        "readers = [r.plugin_name for r in pm.iter_compatible_readers(['cells.inif'])]\n"
        "assert 'napari-inif' in readers, readers\n"
        "names = [w.display_name for w in pm.iter_widgets() if w.plugin_name == 'napari-inif']\n"
        "assert names == ['Compress', 'Inspect'], names\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


class _BadPath:
    def __fspath__(self):
        raise ValueError("no path here")


@given(st.one_of(st.text(), st.binary(), st.integers(), st.lists(st.text(), max_size=3)))
def test_get_reader_never_raises(path):
    result = napari_get_reader(path)
    assert result is None or result is read_layers


def test_get_reader_survives_odd_path_objects():
    assert napari_get_reader(_BadPath()) is None
    assert napari_get_reader([_BadPath()]) is None
