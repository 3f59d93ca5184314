"""npe2 sample data: a real microscopy time-lapse and the same stack compressed.

``sample_image()`` returns the stack as a :class:`~napari_inif.core.Image` for the CLI's
``inif demo``; the two ``make_*`` functions are the napari sample-data commands.  The
files and their provenance are in ``_data/`` (see ``_data/README.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["SAMPLE_INIF", "SAMPLE_TIFF", "make_sample_data", "make_sample_inif", "sample_image"]

_DATA = Path(__file__).resolve().parent / "_data"
SAMPLE_TIFF = _DATA / "cancer_cells_TYX.tif"
SAMPLE_INIF = _DATA / "cancer_cells_TYX.inif"
_NAME = "cancer cells"


def sample_image():  # -> core.io.Image
    """The sample stack (16 x 130 x 130 uint16, TYX) with its axes."""
    import tifffile

    from napari_inif.core.io.image import Image

    return Image(tifffile.imread(SAMPLE_TIFF), "TYX")


def make_sample_data() -> list[tuple[Any, dict[str, Any], str]]:
    """napari sample: the original time-lapse."""
    import tifffile

    meta = {"name": _NAME, "axis_labels": list("TYX")}
    return [(tifffile.imread(SAMPLE_TIFF), meta, "image")]


def make_sample_inif() -> list[tuple[Any, dict[str, Any], str]]:
    """napari sample: the time-lapse compressed 64x, decoded lazily."""
    from ._layers import decoded_layer_data
    from ._reader import _background_decoding
    from .core import load

    _background_decoding()
    encoded = load(SAMPLE_INIF)
    ratio = encoded.ratio
    return [
        decoded_layer_data(
            encoded, name=f"{_NAME} [INIF {ratio:.0f}x]", path=str(SAMPLE_INIF), source=_NAME
        )
    ]
