"""Qt-free core of napari-inif: fit, store and lazily decode implicit neural image fields.

Typical use::

    from napari_inif.core import CompressionConfig, compress, load

    encoded = compress(stack, CompressionConfig(ratio=256), axes="ZYX")
    encoded.save("stack.inif")
    arr = load("stack.inif").array()   # lazy, numpy-like
    roi = arr[10, 100:200, 100:200]    # decodes only that region
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public names -> the module that defines them.  Loaded on first use (PEP 562), so that
# ``import napari_inif.core.config`` or listing the registries imports no torch.
_WHERE = {
    "ARCHITECTURES": "registry",
    "CODECS": "registry",
    "GUIDANCES": "registry",
    "OPTIMIZERS": "registry",
    "Agreement": "guidance.segmentation",
    "BudgetError": "errors",
    "Cancelled": "errors",
    "CompressionConfig": "config",
    "DecodeBudgetError": "errors",
    "Encoded": "codec.encoded",
    "FieldDecoder": "codec.decode",
    "GridEncoded": "codec.gridfile",
    "Image": "io.image",
    "InifArray": "codec.decode",
    "InifFormatError": "errors",
    "Layout": "layout",
    "Progress": "engine",
    "Quality": "metrics.quality",
    "compress": "engine",
    "decompress": "codec.encoded",
    "drive": "engine",
    "fit": "engine",
    "fit_source": "engine.distributed",
    "streamed_refusal": "engine",
    "guidance_names": "guidance.losses",
    "guidance_summary": "guidance.losses",
    "is_inif": "codec.container",
    "load": "codec.encoded",
    "loads": "codec.encoded",
    "max_ratio": "codec.plan",
    "open_source": "io.source",
    "pick_device": "codec.fitter",
    "plan": "codec.plan",
    "quality": "metrics.quality",
    "read_image": "io.image",
    "segmentation_agreement": "guidance.segmentation",
    "write_tiff": "io.image",
}

__all__ = [
    "ARCHITECTURES",
    "CODECS",
    "GUIDANCES",
    "OPTIMIZERS",
    "Agreement",
    "BudgetError",
    "Cancelled",
    "CompressionConfig",
    "DecodeBudgetError",
    "Encoded",
    "FieldDecoder",
    "GridEncoded",
    "Image",
    "InifArray",
    "InifFormatError",
    "Layout",
    "Progress",
    "Quality",
    "compress",
    "decompress",
    "drive",
    "fit",
    "fit_source",
    "guidance_names",
    "guidance_summary",
    "is_inif",
    "load",
    "loads",
    "max_ratio",
    "open_source",
    "pick_device",
    "plan",
    "quality",
    "read_image",
    "segmentation_agreement",
    "streamed_refusal",
    "write_tiff",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


if TYPE_CHECKING:
    from napari_inif.core.codec.container import is_inif
    from napari_inif.core.codec.decode import FieldDecoder, InifArray
    from napari_inif.core.codec.encoded import Encoded, decompress, load, loads
    from napari_inif.core.codec.fitter import pick_device
    from napari_inif.core.codec.gridfile import GridEncoded
    from napari_inif.core.codec.plan import max_ratio, plan
    from napari_inif.core.config import CompressionConfig
    from napari_inif.core.engine import Progress, compress, drive, fit, streamed_refusal
    from napari_inif.core.engine.distributed import fit_source
    from napari_inif.core.errors import BudgetError, Cancelled, DecodeBudgetError, InifFormatError
    from napari_inif.core.guidance.losses import guidance_names, guidance_summary
    from napari_inif.core.guidance.segmentation import Agreement, segmentation_agreement
    from napari_inif.core.io.image import Image, read_image, write_tiff
    from napari_inif.core.io.source import open_source
    from napari_inif.core.layout import Layout
    from napari_inif.core.metrics.quality import Quality, quality
    from napari_inif.core.registry import ARCHITECTURES, CODECS, GUIDANCES, OPTIMIZERS
