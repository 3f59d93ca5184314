"""What the benchmark compresses: real files from ``../shared/data`` and the crops used.

A :class:`Case` names a file, the crop taken from it (after dropping axes of length one)
and its axes.  The default crops keep the whole run within about 30 minutes on two CPU
cores; :data:`QUICK_CASES` is one tiny crop for CI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_CASES", "QUICK_CASES", "Case", "case_for_file", "find_data_dir"]

_ALL = (slice(None),)


@dataclass(frozen=True)
class Case:
    """One image of the benchmark.

    Attributes
    ----------
    name
        Short name used in tables and plot file names.
    file
        File name in the data folder.
    crop
        Slices applied after squeezing axes of length one.
    axes
        Axes of the squeezed array, e.g. ``"TYX"``, ``"ZYX"``, ``"YX"``.
    """

    name: str
    file: str
    crop: tuple[slice, ...]
    axes: str

    @property
    def is_stack(self) -> bool:
        """Whether the case has a third (T or Z) axis, i.e. is a 3D volume or time-lapse."""
        return len(self.axes) == 3

    @property
    def crop_text(self) -> str:
        """The crop as it would be written in numpy, e.g. ``[:8, 32:96, 32:96]``."""
        parts = []
        for s in self.crop:
            start = "" if s.start is None else str(s.start)
            stop = "" if s.stop is None else str(s.stop)
            parts.append(f"{start}:{stop}")
        parts += [":"] * (len(self.axes) - len(parts))
        return "[" + ", ".join(parts) + "]"

    def load(self, data_dir: str | os.PathLike[str]) -> np.ndarray:
        """Read, squeeze and crop the file (a contiguous copy)."""
        import tifffile

        path = Path(data_dir) / self.file
        if not path.exists():
            raise FileNotFoundError(f"benchmark data {path} not found")
        data = np.squeeze(tifffile.imread(path))
        if data.ndim != len(self.axes):
            raise ValueError(
                f"{self.file}: {data.ndim} axes after squeezing, but the case says {self.axes!r}"
            )
        return np.ascontiguousarray(data[self.crop])


DEFAULT_CASES: tuple[Case, ...] = (
    Case("cells-tyx", "cancer_cell_migration_crop_TYX.tif", _ALL, "TYX"),
    Case("tinc-zyx", "tinc_test_ZYX.tif", _ALL, "ZYX"),
    Case("hipsc-2d", "bbbc034_AICS_12_134_C0.tif", (slice(384, 640), slice(384, 640)), "YX"),
    Case("nuclei-2d", "bbbc038_0bf4b1_nuclei.tif", _ALL, "YX"),
    Case("bpae-f32", "bpae_actin.tif", (slice(200, 456), slice(400, 656)), "YX"),
)

QUICK_CASES: tuple[Case, ...] = (
    Case(
        "cells-tyx-tiny",
        "cancer_cell_migration_crop_TYX.tif",
        (slice(0, 8), slice(32, 96), slice(32, 96)),
        "TYX",
    ),
)


def case_for_file(name: str, data_dir: str | os.PathLike[str]) -> Case:
    """The default case of a file, or the whole file (axes from its metadata)."""
    for case in (*DEFAULT_CASES, *QUICK_CASES):
        if name in (case.file, case.name):
            return case
    from napari_inif.core.io.image import read_image

    image = read_image(Path(data_dir) / name)
    axes = "".join(a for a, n in zip(image.axes, image.data.shape, strict=True) if n > 1)
    axes = axes.replace("Q", "T").replace("I", "T")
    if len(axes) not in (2, 3) or any(a in "CS" for a in axes):
        raise ValueError(
            f"{name}: the benchmark takes 2D images or 3D stacks of one channel, "
            f"got axes {image.axes} {image.data.shape}"
        )
    return Case(Path(name).stem, name, _ALL, axes)


def find_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: ``explicit``, ``$INIF_BENCH_DATA``, or ``../shared/data``.

    ``../shared/data`` is looked for from the working directory and from the source
    checkout this package lives in.
    """
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("INIF_BENCH_DATA"):
        candidates.append(Path(os.environ["INIF_BENCH_DATA"]))
    candidates += [
        Path.cwd().parent / "shared" / "data",
        Path(__file__).resolve().parents[3].parent / "shared" / "data",
    ]
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        "benchmark data not found; pass --data DIR or set INIF_BENCH_DATA "
        f"(looked in {', '.join(map(str, candidates))})"
    )
