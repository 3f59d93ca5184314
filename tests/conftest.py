"""Shared fixtures: real microscopy crops from ../shared/data and small made-up arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Tests share two cores with whatever else runs; one torch thread each keeps timings sane.
os.environ.setdefault("OMP_NUM_THREADS", "2")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(name: str) -> Path:
    """Path of a file in ../shared/data, skipping the test when the folder is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real test data {name} not found in {SHARED_DATA}")
    return path


@pytest.fixture
def nuclei_crop() -> np.ndarray:
    """A real 64x80 uint8 nuclei crop (BBBC038)."""
    import tifffile

    return tifffile.imread(shared_file("bbbc038_0bf4b1_nuclei.tif"))[96:160, 80:160]


@pytest.fixture(scope="session")
def nuclei_128() -> np.ndarray:
    """A real 128x128 uint8 nuclei crop (BBBC038, 14 nuclei)."""
    import tifffile

    return tifffile.imread(shared_file("bbbc038_0bf4b1_nuclei.tif"))[:128, :128]


@pytest.fixture
def cells_tyx() -> np.ndarray:
    """A real 6x48x40 uint16 time-lapse crop (cancer cell migration)."""
    import tifffile

    return tifffile.imread(shared_file("cancer_cell_migration_crop_TYX.tif"))[:6, 40:88, 50:90]


@pytest.fixture(scope="session")
def cells_encoded():
    """The ``cells_tyx`` crop compressed 16x in 40 steps (seconds on a CPU), made once."""
    import tifffile

    from napari_inif.core import CompressionConfig, compress

    crop = tifffile.imread(shared_file("cancer_cell_migration_crop_TYX.tif"))[:6, 40:88, 50:90]
    return compress(
        crop,
        CompressionConfig(ratio=16, steps=40, device="cpu"),
        axes="TYX",
        scale=(1.0, 0.5, 0.5),
        unit="um",
    )


@pytest.fixture
def cells_inif(cells_encoded, tmp_path) -> Path:
    """``cells_encoded`` saved as ``cells.inif`` in a fresh folder."""
    return cells_encoded.save(tmp_path / "cells.inif")
