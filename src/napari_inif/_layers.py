"""Glue between napari layers and :mod:`napari_inif.core` (no Qt; torch only when used).

* :func:`decoded_layer_data` turns an :class:`~napari_inif.core.Encoded` into napari
  layer data: a lazy multiscale image with the file's scale, axis names, contrast limits
  and metadata.  The reader, the sample data and the Compress widget all use it.
* :func:`layer_image` turns a napari image layer into a :class:`~napari_inif.core.Image`
  (array, axes, scale) for fitting.
* :func:`finer_region` decodes a region of a decoded layer ``k`` times finer than its
  pixels (the field is continuous) and says where to place it (ROI decode, viewport).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._lazy import LazyArray

if TYPE_CHECKING:
    from .core import Encoded, Image, InifArray

__all__ = [
    "ENCODED_KEY",
    "INFO_KEY",
    "Placed",
    "ViewRequest",
    "codec_dtype",
    "compare",
    "current_index",
    "decoded_layer_data",
    "decoded_name",
    "difference_levels",
    "field_of",
    "finer_region",
    "fit_layer",
    "inif_info",
    "layer_axes",
    "layer_displayed",
    "layer_image",
    "layer_layout",
    "layer_shape",
    "plane_dims",
    "viewport_request",
]

#: ``layer.metadata`` keys of a decoded layer: a JSON-able summary and the Encoded itself.
INFO_KEY = "inif"
ENCODED_KEY = "inif_encoded"

_AXIS_LETTERS = "TCZYXSQ"


def decoded_name(source: str, ratio: float) -> str:
    """Layer name of a decoded result, e.g. ``cells [INIF 256x]``."""
    return f"{source} [INIF {ratio:.0f}x]"


def inif_info(
    encoded: Encoded, *, path: str | os.PathLike[str] | None = None, source: str | None = None
) -> dict[str, Any]:
    """The JSON-able summary stored in a decoded layer's metadata."""
    fit = encoded.header.fit
    return {
        "ratio": round(float(encoded.ratio), 2),
        "nbytes": int(encoded.nbytes),
        "psnr": fit.get("psnr"),
        "psnr_dtype": fit.get("psnr_dtype"),
        "ssim": fit.get("ssim"),
        "max_error": fit.get("max_error"),
        "axes": encoded.header.layout.axes,
        "file": None if path is None else os.fspath(path),
        "source_layer": source,
        "fit": dict(fit),
    }


def _units(unit: str | None, axes: str) -> list[str] | None:
    """napari units per axis when ``unit`` is a length pint understands, else ``None``."""
    if not unit:
        return None
    try:
        import pint

        quantity = pint.get_application_registry()(unit.replace("µ", "u").replace("μ", "u"))
        if not quantity.check("[length]"):
            return None
    except Exception:  # pint raises many types for unparseable strings
        return None
    return [unit if a in "ZYX" else "pixel" for a in axes]


def decoded_layer_data(
    encoded: Encoded,
    *,
    name: str,
    path: str | os.PathLike[str] | None = None,
    source: str | None = None,
) -> tuple[list[LazyArray], dict[str, Any], str]:
    """napari ``(data, meta, "image")`` for a lazy multiscale view of ``encoded``.

    Every level is a :class:`~napari_inif._lazy.LazyArray` over an
    :class:`~napari_inif.core.InifArray` level, so napari decodes only the visible region
    of the current slice at the level it displays.  A multi-channel field becomes one
    layer per channel (``channel_axis``).
    """
    header = encoded.header
    layout = header.layout
    c = layout.channel_axis
    keep = [i for i in range(len(layout.shape)) if i != c]
    axes = "".join(layout.axes[i] for i in keep)
    levels = [LazyArray(level) for level in encoded.array().levels]
    limits = [
        (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
        for lo, hi in zip(header.lo, header.hi, strict=True)
    ]
    meta: dict[str, Any] = {
        "name": name,
        "multiscale": True,
        "rgb": False,
        "axis_labels": list(axes),
        "contrast_limits": limits[0] if c is None else limits,
        "metadata": {
            INFO_KEY: inif_info(encoded, path=path, source=source),
            ENCODED_KEY: encoded,
        },
    }
    if header.scale is not None:
        meta["scale"] = [header.scale[i] for i in keep]
    units = _units(header.unit, axes)
    if units is not None:
        meta["units"] = units
    if c is not None:
        meta["channel_axis"] = c
        meta["axis_labels"] = list(axes)
    return levels, meta, "image"


def codec_dtype(dtype: Any) -> np.dtype:
    """The dtype a layer's data is fitted in: uint8, uint16, float32 as they are; bool as
    uint8; anything else (float64, int16, int32, ...) as float32."""
    dtype = np.dtype(dtype)
    if dtype.name in ("uint8", "uint16", "float32"):
        return dtype
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind in "iuf":
        return np.dtype(np.float32)
    raise ValueError(f"cannot compress {dtype} data")


def layer_axes(layer: Any) -> str:
    """Axis letters of an image layer: its axis labels if they are letters, else guessed."""
    from .core.layout import guess_axes

    ndim = layer.ndim
    labels = [str(label).upper() for label in getattr(layer, "axis_labels", ())]
    if (
        len(labels) == ndim
        and all(len(label) == 1 and label in _AXIS_LETTERS for label in labels)
        and len(set(labels)) == ndim
    ):
        axes = "".join(labels)
    else:
        axes = guess_axes(ndim)
    return axes + ("S" if getattr(layer, "rgb", False) else "")


def layer_shape(layer: Any) -> tuple[int, ...]:
    """Full-resolution shape of an image layer's data (without reading it)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return tuple(int(n) for n in data.shape)


def layer_layout(layer: Any) -> Any:
    """The :class:`~napari_inif.core.Layout` a layer would be fitted with (reads no data)."""
    from .core import Layout

    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return Layout(layer_shape(layer), layer_axes(layer), codec_dtype(data.dtype).name)


def layer_image(layer: Any) -> Image:
    """The full-resolution array of an image layer, with axes and scale, for fitting.

    Reads the data (dask or lazy arrays are computed): call it in a worker thread.
    """
    from .core import Image

    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    arr = np.asarray(data)
    arr = arr.astype(codec_dtype(arr.dtype), copy=False)
    axes = layer_axes(layer)
    scale = [float(s) for s in layer.scale]
    if getattr(layer, "rgb", False):
        scale.append(1.0)
    unit = None
    units = getattr(layer, "units", None)
    if units:
        spatial = [str(u) for u, a in zip(units, axes, strict=False) if a in "ZYX"]
        if spatial and spatial[0] != "pixel":
            unit = spatial[0]
    scale_t = None if all(s == 1.0 for s in scale) else tuple(scale)
    return Image(arr, axes, scale_t, unit)


def field_of(layer: Any) -> LazyArray | None:
    """The full-resolution lazy field view behind a decoded layer, or ``None``."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if isinstance(data, LazyArray) and hasattr(data.source, "zoom"):
        return data
    return None


@dataclass(frozen=True)
class Placed:
    """A decoded region with where it goes in the layer's world: ``scale`` and ``translate``."""

    data: np.ndarray
    scale: tuple[float, ...]
    translate: tuple[float, ...]


def finer_region(layer: Any, region: tuple[slice, ...], k: int = 1) -> Placed:
    """Decode ``region`` of a decoded layer ``k`` times finer in Y and X, placed in its world.

    Parameters
    ----------
    layer
        A layer made by :func:`decoded_layer_data` (``layer.data`` levels are lazy views).
    region
        One slice per layer dimension (unit step), in level-0 data coordinates.
    k
        Sampling factor in the field's plane (Y, X); 1 gives the stored pixels.

    Returns
    -------
    Placed
        The array (one axis per layer dimension) and the scale/translate that put it
        exactly over the layer: sample ``j`` of a plane axis sits at original pixel
        ``start + (j + 0.5) / k - 0.5``.
    """
    base = field_of(layer)
    if base is None:
        raise ValueError(f"layer {layer.name!r} is not a decoded INIF layer")
    if k < 1 or int(k) != k:
        raise ValueError(f"the zoom factor must be a positive integer, got {k}")
    k = int(k)
    sub = base[region]
    field: InifArray = base.source
    layout = field.layout
    plane = set(layout.coord_axes[-2:])
    index: list[Any] = []  # per axis: an integer or an index array
    kept = 0
    scale = list(layer.scale)
    translate = list(layer.translate)
    starts = []
    for axis, idx in enumerate(sub._index):
        if not isinstance(idx, np.ndarray):
            index.append(idx)
            continue
        start = int(idx[0]) if idx.size else 0
        starts.append(start)
        if axis in plane and k > 1:
            index.append(np.arange(start * k, (start + idx.size) * k))
            translate[kept] += scale[kept] * (start + 0.5 / k - 0.5)
            scale[kept] /= k
        else:
            index.append(idx)
            translate[kept] += scale[kept] * start
        kept += 1
    zoomed = field.zoom(k) if k > 1 else field
    data = np.asarray(LazyArray(zoomed, tuple(index)))
    return Placed(data, tuple(scale), tuple(translate))


def fit_layer(layer: Any, config: Any, *, preview_every: float | None = 2.0) -> Any:
    """Generator fitting an image layer: yields ``core.Progress``, returns ``core.Encoded``.

    Reads the layer's data first (in the caller's thread: run it in a worker).
    """
    return (yield from layer_image(layer).fit(config, str(layer.name), preview_every))


def plane_dims(layer: Any) -> tuple[int, ...]:
    """Layer dimensions that are the field's Y and X (where zoom adds samples)."""
    base = field_of(layer)
    if base is None:
        return ()
    plane = set(base.source.layout.coord_axes[-2:])
    kept = [axis for axis, idx in enumerate(base._index) if isinstance(idx, np.ndarray)]
    return tuple(d for d, axis in enumerate(kept) if axis in plane)


def layer_displayed(layer: Any, world_displayed: Any, world_ndim: int) -> tuple[int, ...]:
    """The layer's dimensions among the viewer's displayed (world) dimensions."""
    offset = world_ndim - layer.ndim
    return tuple(int(d) - offset for d in world_displayed if int(d) >= offset)


def current_index(layer: Any, world_point: Any, displayed: tuple[int, ...]) -> tuple[Any, ...]:
    """Level-0 index of the current slice: an int per non-displayed dim, ``slice(None)`` else."""
    position = layer.world_to_data(np.asarray(world_point, float))
    shape = layer_shape(layer)
    return tuple(
        slice(None) if d in displayed else int(np.clip(round(float(position[d])), 0, n - 1))
        for d, n in enumerate(shape)
    )


@dataclass(frozen=True)
class ViewRequest:
    """What the viewport sampler decodes: a level-0 ``region`` sampled ``k`` times finer."""

    region: tuple[slice, ...]
    k: int


def viewport_request(
    layer: Any,
    world_point: Any,
    displayed: tuple[int, ...],
    *,
    max_k: int = 8,
    max_points: int = 1 << 22,
) -> ViewRequest | None:
    """The region a decoded layer shows and the zoom past its native pixels, or ``None``.

    Uses what napari already computed for the view: ``layer.corner_pixels`` (visible
    data box at ``layer.data_level``) and ``layer.scale_factor`` (world units per screen
    pixel).  ``None`` when the view is not zoomed in past the stored pixels, is 3D, or
    shows other axes than the field's Y and X.
    """
    plane = plane_dims(layer)
    if len(displayed) != 2 or not plane or set(plane) != set(displayed):
        return None
    scale_factor = float(getattr(layer, "scale_factor", 1.0) or 1.0)
    screen_px = min(abs(float(layer.scale[d])) for d in displayed) / scale_factor
    k = min(max_k, math.ceil(screen_px - 1e-6))
    if k <= 1:
        return None
    factors = layer.downsample_factors[layer.data_level] if layer.multiscale else None
    shape = layer_shape(layer)
    corners = np.asarray(layer.corner_pixels, float)
    region = []
    index = current_index(layer, world_point, displayed)
    for d, n in enumerate(shape):
        if d not in displayed:
            region.append(slice(index[d], index[d] + 1))
            continue
        f = 1.0 if factors is None else float(factors[d])
        lo = int(np.clip(math.floor(corners[0, d] * f), 0, n - 1))
        hi = int(np.clip(math.ceil((corners[1, d] + 1) * f), lo + 1, n))
        region.append(slice(lo, hi))
    pixels = math.prod(s.stop - s.start for s in region)
    while k > 1 and pixels * k * k > max_points:
        k -= 1
    return ViewRequest(tuple(region), k) if k > 1 else None


def difference_levels(original: Any, decoded: Any) -> list[LazyArray]:
    """Lazy multiscale ``original - decoded`` (float32), exact pixels at every level."""
    from ._lazy import Difference

    a = original.data[0] if original.multiscale else original.data
    base = field_of(decoded)
    b = base if base is not None else (decoded.data[0] if decoded.multiscale else decoded.data)
    diff = LazyArray(Difference(a, b))
    n_levels = len(decoded.data) if decoded.multiscale else 1
    plane = plane_dims(decoded) or tuple(range(max(0, diff.ndim - 2), diff.ndim))
    levels = []
    for level in range(n_levels):
        step = 2**level
        levels.append(
            diff[
                tuple(
                    slice(None, None, step) if d in plane else slice(None) for d in range(diff.ndim)
                )
            ]
        )
    return levels


def compare(original: Any, decoded: Any, index: tuple[Any, ...] | None = None) -> Any:
    """``core.metrics.quality`` of a decoded layer against its original.

    ``index`` picks a slice (ints and ``slice(None)`` per dimension); ``None`` compares
    the whole stack (SSIM over volumes when the field has a Z axis).
    """
    from .core import metrics

    a = original.data[0] if original.multiscale else original.data
    b = field_of(decoded)
    if b is None:
        b = decoded.data[0] if decoded.multiscale else decoded.data
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"the layers differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    key = tuple(slice(None) for _ in a.shape) if index is None else index
    x = np.asarray(a[key])
    y = np.asarray(b[key])
    plane_axes = 2
    if index is None and "Z" in "".join(str(x_) for x_ in decoded.axis_labels) and x.ndim >= 3:
        plane_axes = 3
    return metrics.quality(x, y, plane_axes=plane_axes)
