"""Qt-free core of napari-inif: fit, store and lazily decode implicit neural image fields.

Typical use::

    from napari_inif.core import CompressionConfig, compress, load

    encoded = compress(stack, CompressionConfig(ratio=256), axes="ZYX")
    encoded.save("stack.inif")
    arr = load("stack.inif").array()   # lazy, numpy-like
    roi = arr[10, 100:200, 100:200]    # decodes only that region
"""

from .budget import BudgetError, max_ratio, plan
from .config import CompressionConfig
from .container import InifFormatError, is_inif
from .decode import FieldDecoder, InifArray
from .distributed import compress_source, fit_source
from .encoded import Encoded, decompress, load
from .field import ARCHITECTURES
from .fit import OPTIMIZERS, Progress, compress, drive, fit, pick_device
from .io import Image, read_image, write_tiff
from .layout import Layout
from .losses import GUIDANCES, guidance_names, guidance_summary
from .metrics import Quality, quality
from .segmentation import Agreement, segmentation_agreement
from .source import open_source

__all__ = [
    "ARCHITECTURES",
    "GUIDANCES",
    "OPTIMIZERS",
    "Agreement",
    "BudgetError",
    "CompressionConfig",
    "Encoded",
    "FieldDecoder",
    "Image",
    "InifArray",
    "InifFormatError",
    "Layout",
    "Progress",
    "Quality",
    "compress",
    "compress_source",
    "decompress",
    "drive",
    "fit",
    "fit_source",
    "guidance_names",
    "guidance_summary",
    "is_inif",
    "load",
    "max_ratio",
    "open_source",
    "pick_device",
    "plan",
    "quality",
    "read_image",
    "segmentation_agreement",
    "write_tiff",
]
