"""npe2 writer: an image layer saved as ``.inif``.

A layer decoded from an ``.inif`` (it carries its :class:`~napari_inif.core.Encoded` in
``metadata``) is written as it is, without fitting again.  Any other image layer is
fitted with the settings the Compress widget recorded in its metadata (``inif_config``)
or with the default :class:`~napari_inif.core.CompressionConfig`.  The file is written
atomically: a failed fit never leaves a partial file.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

__all__ = ["CONFIG_KEY", "write_image"]

#: ``layer.metadata`` key holding a dict of CompressionConfig values for this layer.
CONFIG_KEY = "inif_config"


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer to ``path`` (``.inif`` is appended if missing)."""
    from ._layers import ENCODED_KEY, layer_image
    from .core import CompressionConfig, compress

    if not path.lower().endswith(".inif"):
        path += ".inif"
    metadata = meta.get("metadata") or {}
    encoded = metadata.get(ENCODED_KEY)
    if encoded is None:
        multiscale = bool(meta.get("multiscale"))
        level0 = data[0] if multiscale else data
        rgb = bool(meta.get("rgb"))
        layer = SimpleNamespace(
            data=data,
            multiscale=multiscale,
            ndim=len(level0.shape) - (1 if rgb else 0),
            rgb=rgb,
            axis_labels=meta.get("axis_labels") or (),
            scale=meta.get("scale") if meta.get("scale") is not None else [1.0] * len(level0.shape),
            units=meta.get("units"),
        )
        image = layer_image(layer)
        config = CompressionConfig.from_dict(dict(metadata.get(CONFIG_KEY) or {}))
        encoded = compress(
            image.data,
            config,
            axes=image.axes,
            scale=image.scale,
            unit=image.unit,
            metadata={"source": str(meta.get("name") or os.path.basename(path))},
        )
    encoded.save(path)
    return [path]
