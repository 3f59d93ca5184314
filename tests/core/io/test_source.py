"""Array sources: Zarr, OME-Zarr (NGFF 0.4 and 0.5), TIFF through its Zarr store, .npy."""

import pickle

import numpy as np
import pytest
import tifffile
import zarr

from napari_inif.core.io.source import ArraySource, is_zarr, open_source


def _ome_group(path, data, version):
    fmt = 2 if version == "0.4" else 3
    g = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    g.create_array("0", data=data, chunks=(3, 16, 16))
    g.create_array("1", data=data[:, ::2, ::2], chunks=(3, 16, 16))
    ms = {
        "axes": [
            {"name": "z", "type": "space", "unit": "micrometer"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2, 0.5, 0.5]}]},
            {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [2, 1, 1]}]},
        ],
        "coordinateTransformations": [{"type": "scale", "scale": [1.5, 1, 1]}],
    }
    if version == "0.4":
        g.attrs["multiscales"] = [{"version": "0.4", **ms}]
    else:
        g.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_level0_axes_scale_unit(tmp_path, cells_tyx, version):
    path = _ome_group(tmp_path / "img.ome.zarr", cells_tyx, version)
    assert is_zarr(path)
    src = open_source(path)
    assert (src.kind, src.component, src.axes) == ("zarr", "0", "ZYX")
    assert src.shape == cells_tyx.shape and src.dtype == np.uint16
    assert src.scale == (3.0, 0.5, 0.5) and src.unit == "micrometer"
    box = (slice(1, 4), slice(5, 30), slice(7, 9))
    np.testing.assert_array_equal(src.read(box), cells_tyx[box])
    again = pickle.loads(pickle.dumps(src))  # a worker reopens the store by its path
    assert again._array is None
    np.testing.assert_array_equal(again.read(box), cells_tyx[box])


def test_plain_zarr_array_and_group(tmp_path, cells_tyx):
    arr = zarr.create_array(str(tmp_path / "a.zarr"), data=cells_tyx, chunks=(2, 16, 16))
    arr.attrs["_ARRAY_DIMENSIONS"] = ["t", "y", "x"]
    src = open_source(tmp_path / "a.zarr")
    assert src.axes == "TYX" and src.component == ""
    assert open_source(tmp_path / "a.zarr", axes="zyx").axes == "ZYX"

    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("raw", data=cells_tyx)
    assert open_source(tmp_path / "g.zarr").component == "raw"
    g.create_array("labels", data=cells_tyx)
    with pytest.raises(ValueError, match="name one"):
        open_source(tmp_path / "g.zarr")
    assert open_source(tmp_path / "g.zarr", component="labels").component == "labels"


def test_tiff_through_zarr_store(tmp_path, cells_tyx):
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, cells_tyx, metadata={"axes": "TYX"})
    with open_source(path) as src:
        assert (src.kind, src.axes, src.shape) == ("tiff", "TYX", cells_tyx.shape)
        np.testing.assert_array_equal(src.read((2, slice(3, 9), slice(None))), cells_tyx[2, 3:9])
        again = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(again.read((slice(None),) * 3), cells_tyx)
    again.close()


def test_npy_and_in_memory(tmp_path, cells_tyx):
    np.save(tmp_path / "a.npy", cells_tyx)
    src = open_source(tmp_path / "a.npy")
    assert isinstance(src.array, np.memmap) and src.axes == "ZYX"
    mem = ArraySource.from_array(cells_tyx, "tyx", scale=(1, 2, 2), unit="um")
    assert mem.layout.axes == "TYX" and mem.scale == (1, 2, 2)
    assert pickle.loads(pickle.dumps(mem)).read((0,)).shape == cells_tyx.shape[1:]


def test_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "nope.zarr")
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match=r"expected a \.zarr"):
        open_source(tmp_path / "x.png")
    zarr.create_array(str(tmp_path / "f.zarr"), shape=(4, 4), dtype="float64")
    with pytest.raises(ValueError, match="unsupported dtype"):
        open_source(tmp_path / "f.zarr")
