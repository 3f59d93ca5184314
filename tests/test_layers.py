"""Layer glue: axes, fitting input, finer regions and viewport requests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_inif._layers import (
    codec_dtype,
    decoded_layer_data,
    finer_region,
    layer_axes,
    layer_image,
    plane_dims,
    viewport_request,
)


def _layer(data, meta, **extra):
    """A stand-in for a napari image layer built from layer data."""
    ndim = data[0].ndim if meta.get("multiscale") else data.ndim
    values = {
        "data": data,
        "multiscale": bool(meta.get("multiscale")),
        "ndim": ndim,
        "name": meta.get("name", "x"),
        "axis_labels": meta.get("axis_labels", [str(i - ndim) for i in range(ndim)]),
        "scale": np.asarray(meta.get("scale", [1.0] * ndim), float),
        "translate": np.asarray(meta.get("translate", [0.0] * ndim), float),
        "rgb": False,
        "units": None,
        "metadata": meta.get("metadata", {}),
    }
    values.update(extra)
    return SimpleNamespace(**values)


def test_codec_dtype():
    assert codec_dtype(np.uint16) == np.uint16
    assert codec_dtype(np.float64) == np.float32
    assert codec_dtype(np.int32) == np.float32
    assert codec_dtype(bool) == np.uint8
    with pytest.raises(ValueError):
        codec_dtype(np.complex64)


def test_layer_axes_from_labels_or_guessed():
    arr = np.zeros((3, 4, 5), np.uint8)
    assert layer_axes(_layer(arr, {"axis_labels": ["t", "y", "x"]})) == "TYX"
    assert layer_axes(_layer(arr, {})) == "ZYX"
    assert layer_axes(_layer(arr, {"axis_labels": ["Y", "Y", "X"]})) == "ZYX"


def test_layer_image_converts_and_keeps_scale():
    arr = np.linspace(0, 1, 60).reshape(6, 10)
    image = layer_image(_layer(arr, {"scale": [2.0, 2.0]}))
    assert image.data.dtype == np.float32 and image.axes == "YX" and image.scale == (2.0, 2.0)


def test_finer_region_places_samples_between_pixels(cells_encoded):
    data, meta, _ = decoded_layer_data(cells_encoded, name="cells")
    layer = _layer(data, meta, translate=np.array([0.0, 10.0, 20.0]))
    assert plane_dims(layer) == (1, 2)
    region = (slice(2, 3), slice(8, 12), slice(4, 10))
    placed = finer_region(layer, region, 4)
    assert placed.data.shape == (1, 16, 24)
    assert placed.scale == (1.0, 0.125, 0.125)
    # sample j sits at original pixel start + (j + 0.5) / k - 0.5, in world units
    assert placed.translate == pytest.approx((2.0, 10 + 0.5 * (8 - 0.375), 20 + 0.5 * (4 - 0.375)))
    direct = cells_encoded.array().zoom(4)[2:3, 32:48, 16:40]
    np.testing.assert_array_equal(placed.data, direct)
    same = finer_region(layer, region, 1)
    np.testing.assert_array_equal(same.data, cells_encoded.array()[2:3, 8:12, 4:10])
    assert same.translate == pytest.approx((2.0, 14.0, 22.0))


def test_viewport_request_from_the_camera_and_canvas(cells_encoded):
    data, meta, _ = decoded_layer_data(cells_encoded, name="cells")
    extra = {"translate": (0.0, 0.0, 0.0), "world_to_data": lambda p: np.asarray(p)}
    layer = _layer(data, meta, **extra)  # scale (1, 0.5, 0.5) from the file
    view = {"center": (0.0, 10.0, 8.0), "canvas_size": (80, 60)}
    request = viewport_request(layer, [4.0, 0.0, 0.0], (1, 2), zoom=6.4, **view)
    assert request.k == 4  # 3.2 screen pixels per stored pixel
    # 80 x 60 screen pixels / 6.4 = 12.5 x 9.4 world units = 25 x 18.75 stored pixels
    assert request.region == (slice(4, 5), slice(8, 33), slice(7, 26))
    assert viewport_request(layer, [4.0, 0.0, 0.0], (1, 2), zoom=1.5, **view) is None
    assert viewport_request(layer, [4.0, 0.0, 0.0], (0, 2), zoom=6.4, **view) is None  # T-X
    capped = viewport_request(layer, [4.0, 0.0, 0.0], (1, 2), zoom=6.4, max_k=2, **view)
    assert capped.k == 2
    clipped = viewport_request(
        layer, [0.0, 0.0, 0.0], (1, 2), zoom=6.4, center=(0, 0, 0), canvas_size=(1000, 1000)
    )
    assert clipped.region[1:] == (slice(0, 48), slice(0, 40))  # never past the layer


def test_tiled_views_slice_like_the_field_and_never_wait(cells_encoded):
    """napari's levels in a window: lazy boxes assembled from background-decoded chunks."""
    from napari_inif._layers import BackgroundDecoder, TiledView, lazy_levels

    decoder = BackgroundDecoder()
    try:
        field = cells_encoded.array()
        levels = lazy_levels(field, decoder)
        assert all(isinstance(level, TiledView) for level in levels)
        keys = [
            (2,),
            (slice(1, 4), slice(5, 30), slice(None)),
            (-1, slice(3, 47), 7),
            (Ellipsis, slice(2, 9)),
            (slice(None), slice(0, 48, 3)),
        ]
        for level, exact in zip(levels, field.levels, strict=True):
            for key in keys:
                first = np.asarray(level[key])  # stand-ins: no waiting for a decode
                assert first.shape == np.asarray(exact[key]).shape
            decoder.idle()
            for key in keys:
                view = level[key]
                assert view.shape == np.asarray(exact[key]).shape
                np.testing.assert_array_equal(np.asarray(view), np.asarray(exact[key]))
        # Slicing a view again composes the boxes (napari slices the displayed axes first).
        view = levels[0][:, 10:40, 5:35][3, 2:20]
        decoder.idle()
        np.testing.assert_array_equal(np.asarray(view), np.asarray(field[3, 12:30, 5:35]))
    finally:
        decoder.close()
