"""Shared fixtures: real microscopy crops kept in the repository and small made-up arrays.

The real images are ``tests/data/`` (provenance and licences in its README) and the
package's own sample time-lapse; no test reads ``../shared/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from napari_inif._sample_data import SAMPLE_TIFF

# Tests share two cores with whatever else runs; one torch thread each keeps timings sane.
os.environ.setdefault("OMP_NUM_THREADS", "2")

TEST_DATA = Path(__file__).resolve().parent / "data"
# The benchmark's time-lapse file name; its first 16 frames are the packaged sample.
CELLS_FILE = "cancer_cell_migration_crop_TYX.tif"


def data_file(name: str) -> Path:
    """Path of a real test image: ``tests/data/<name>``, or the packaged sample for
    ``cancer_cell_migration_crop_TYX.tif`` (every crop the tests take is in its frames)."""
    path = SAMPLE_TIFF if name == CELLS_FILE else TEST_DATA / name
    if not path.exists():  # a broken checkout, not a reason to skip
        raise FileNotFoundError(f"test data {path} is missing (see tests/data/README.md)")
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A folder laid out like ``../shared/data`` for the benchmark and gpu_check: the
    files of ``tests/data/`` and the packaged sample under the benchmark's file name."""
    folder = tmp_path_factory.mktemp("data")
    for path in (*TEST_DATA.glob("*.tif"), data_file(CELLS_FILE)):
        name = CELLS_FILE if path == SAMPLE_TIFF else path.name
        shutil.copyfile(path, folder / name)
    return folder


def display_usable() -> bool:
    """A display Qt can use is there already: an X server whose socket exists (or a remote
    ``host:N`` display, trusted), a Wayland session, or a Qt platform the user chose."""
    if os.environ.get("QT_QPA_PLATFORM") or os.environ.get("WAYLAND_DISPLAY"):
        return True
    host, _, rest = os.environ.get("DISPLAY", "").rpartition(":")
    if not rest:
        return False
    if host not in ("", "unix"):  # host:N is TCP (ssh -X forwarding): trusted
        return True
    return Path(f"/tmp/.X11-unix/X{rest.split('.')[0]}").exists()


@pytest.hookimpl(optionalhook=True)  # only exists where pytest-xvfb is installed
def pytest_xvfb_disable(config) -> bool:
    """pytest-xvfb: use a display that exists as is; start Xvfb only when there is none."""
    return display_usable()


@cache
def qt_unavailable() -> str | None:
    """Why Qt cannot open a window here (one line), or None when it can.

    Creating a QApplication without a display aborts the whole process ("Fatal Python
    error: Aborted"), so it is tried once in a child process first.
    """
    how = (
        "to run them: `bash .ci/setup` as root (installs Xvfb with apt-get), or "
        "`apt-get install xvfb xauth libxcb-cursor0 libxkbcommon-x11-0 libgl1 libegl1`, "
        "or run under a desktop session"
    )
    if not display_usable():
        return f"Qt tests skipped: no display (DISPLAY unset) and no Xvfb on PATH; {how}"
    probe = "from qtpy.QtWidgets import QApplication, QWidget; app = QApplication([]); QWidget()"
    try:
        run = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return f"Qt tests skipped: starting a QApplication timed out; {how}"
    if run.returncode != 0:
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {run.returncode}"
        return f"Qt tests skipped: Qt cannot start on this display ({last}); {how}"
    return None


def pytest_collection_modifyitems(config, items) -> None:
    """Every test under ``tests/_qt/`` carries the ``qt`` marker (``-m "not qt"``); tests
    marked ``gpu`` are skipped where torch sees no CUDA device."""
    qt_dir = Path(__file__).resolve().parent / "_qt"
    no_cuda = None
    for item in items:
        if qt_dir in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.qt)
        if item.get_closest_marker("gpu"):
            if no_cuda is None:
                import torch

                no_cuda = not torch.cuda.is_available()
            if no_cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """napari's ``make_napari_viewer`` reads ``item.rep_call`` in its teardown; a test
    skipped or failed during setup (after the viewer fixture ran) has no call report,
    which turned a skip into an AttributeError. Give it the setup report instead."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "setup" and not report.passed:
        item.rep_call = report


@pytest.fixture
def nuclei_crop() -> np.ndarray:
    """A real 64x80 uint8 nuclei crop (BBBC038)."""
    import tifffile

    return tifffile.imread(data_file("bbbc038_0bf4b1_nuclei.tif"))[96:160, 80:160]


@pytest.fixture(scope="session")
def nuclei_128() -> np.ndarray:
    """A real 128x128 uint8 nuclei crop (BBBC038, 14 nuclei)."""
    import tifffile

    return tifffile.imread(data_file("bbbc038_0bf4b1_nuclei.tif"))[:128, :128]


@pytest.fixture
def cells_tyx() -> np.ndarray:
    """A real 6x48x40 uint16 time-lapse crop (cancer cell migration)."""
    import tifffile

    return tifffile.imread(data_file("cancer_cell_migration_crop_TYX.tif"))[:6, 40:88, 50:90]


@pytest.fixture(scope="session")
def cells_encoded():
    """The ``cells_tyx`` crop compressed 16x in 40 steps (seconds on a CPU), made once."""
    import tifffile

    from napari_inif.core import CompressionConfig, compress

    crop = tifffile.imread(data_file("cancer_cell_migration_crop_TYX.tif"))[:6, 40:88, 50:90]
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


@pytest.fixture(scope="session")
def grid_encoded():
    """The ``cells_tyx`` crop as a latent-grid field at 16x in 60 steps, made once."""
    import tifffile

    from napari_inif.core import CompressionConfig, compress

    crop = tifffile.imread(data_file("cancer_cell_migration_crop_TYX.tif"))[:6, 40:88, 50:90]
    return compress(
        crop,
        CompressionConfig(ratio=16, steps=60, architecture="grid"),
        axes="TYX",
        scale=(1.0, 0.5, 0.5),
        unit="um",
        metadata={"source": "cells"},
    )
