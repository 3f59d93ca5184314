"""Fixtures of the engine tests."""

import pytest
import zarr


@pytest.fixture
def cells_zarr(tmp_path, cells_tyx):
    """``cells_tyx`` as a Zarr array with xarray-style axis names, in small chunks."""
    path = tmp_path / "cells.zarr"
    arr = zarr.create_array(str(path), data=cells_tyx, chunks=(2, 16, 16))
    arr.attrs["_ARRAY_DIMENSIONS"] = ["t", "y", "x"]
    return path
