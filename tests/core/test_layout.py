import numpy as np
import pytest

from napari_inif.core.layout import Layout, guess_axes


@pytest.mark.parametrize(
    "shape,axes,coord,channels",
    [
        ((3, 65, 257), "CYX", (65, 257), 3),
        ((512, 67, 3), "YXS", (512, 67), 3),
        ((8, 12, 16, 1), "QYXQ", (8, 12, 16), 1),
        ((2, 3, 4, 5, 6), "TCZYX", (2, 4, 5, 6), 3),
        ((1, 1, 9, 7), "TZYX", (9, 7), 1),
    ],
)
def test_canonical_round_trip(shape, axes, coord, channels):
    data = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    layout = Layout.of(data, axes)
    canon = layout.to_canonical(data)
    assert canon.shape == (*coord, channels)
    np.testing.assert_array_equal(layout.from_canonical(canon), data)


def test_guessed_axes():
    assert guess_axes(2) == "YX" and guess_axes(3) == "ZYX" and guess_axes(5) == "TCZYX"


@pytest.mark.parametrize(
    "shape,axes,dtype,match",
    [
        ((4, 4), "YX", "int32", "unsupported dtype"),
        ((4, 4), "YXZ", "uint8", "do not match"),
        ((2, 3, 4, 4), "CSYX", "uint8", "more than one channel"),
        ((2, 2, 2, 2, 2), "TZYXQ", "uint8", "at most 4"),
        ((4, 4), "YY", "uint8", "repeated"),
    ],
)
def test_bad_layouts_are_refused(shape, axes, dtype, match):
    with pytest.raises(ValueError, match=match):
        Layout(shape, axes, dtype)
