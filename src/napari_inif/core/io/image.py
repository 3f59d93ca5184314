"""Reading and writing plain image files (TIFF / OME-TIFF via tifffile)."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from napari_inif.core.codec.encoded import Encoded
    from napari_inif.core.codec.gridfile import GridEncoded
    from napari_inif.core.engine.progress import Progress

__all__ = ["Image", "read_image", "write_tiff"]


class Image(NamedTuple):
    """An array with the metadata the codec keeps."""

    data: np.ndarray
    axes: str
    scale: tuple[float, ...] | None = None
    unit: str | None = None

    def fit(
        self, config: Any, source: str, preview_every: float | None = None
    ) -> Generator[Progress, None, Encoded | GridEncoded]:
        """:func:`~napari_inif.core.engine.fit` of this image with its axes, scale and unit; the
        header
        records ``source`` (a file or layer name)."""
        from napari_inif.core.engine import fit

        return fit(
            self.data,
            config,
            axes=self.axes,
            scale=self.scale,
            unit=self.unit,
            metadata={"source": source},
            preview_every=preview_every,
        )


def read_image(path: str | os.PathLike[str]) -> Image:
    """Read the first series of a TIFF/OME-TIFF (or a ``.npy``) with its axes.

    Raises ``FileNotFoundError`` or ``ValueError`` with a readable message.
    """
    import tifffile

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix.lower() == ".npy":
        data = np.load(path, allow_pickle=False)
        from napari_inif.core.layout import guess_axes

        return Image(data, guess_axes(data.ndim))
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes
            scale, unit = _scale(tif, axes)
    except (tifffile.TiffFileError, ValueError, IndexError) as exc:
        raise ValueError(f"cannot read {path} as TIFF: {exc}") from None
    return Image(data, axes, scale, unit)


def _scale(tif: object, axes: str) -> tuple[tuple[float, ...] | None, str | None]:
    """Pixel size per axis from ImageJ or resolution tags, if present."""
    try:
        page = tif.pages[0]  # type: ignore[attr-defined]
        ij = tif.imagej_metadata or {}  # type: ignore[attr-defined]
        xres = page.tags.get("XResolution")
        yres = page.tags.get("YResolution")
        sx = xres.value[1] / xres.value[0] if xres and xres.value[0] else 1.0
        sy = yres.value[1] / yres.value[0] if yres and yres.value[0] else 1.0
        sz = float(ij.get("spacing", 1.0))
    except (AttributeError, TypeError, ZeroDivisionError, IndexError, KeyError):
        return None, None
    per_axis = {"X": sx, "Y": sy, "Z": sz}
    scale = tuple(float(per_axis.get(a, 1.0)) for a in axes)
    if all(s == 1.0 for s in scale):
        return None, None
    unit = ij.get("unit") if isinstance(ij.get("unit"), str) else None
    return scale, unit


def write_tiff(
    path: str | os.PathLike[str], data: np.ndarray, axes: str, *, overwrite: bool = True
) -> Path:
    """Write ``data`` as TIFF atomically (temporary file + rename).

    ``overwrite=False`` refuses (``FileExistsError``) to replace an existing file; an
    interrupted or failed write leaves no file behind and any existing one untouched.
    """
    import tifffile

    from napari_inif.core.codec.container import write_atomic

    def write(tmp: str) -> None:
        tifffile.imwrite(tmp, data, metadata={"axes": axes}, compression="zlib")

    return write_atomic(path, write, overwrite=overwrite)
