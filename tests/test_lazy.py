"""LazyArray composes indexing like numpy and reads its source once, at the end."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_inif._lazy import Difference, LazyArray


class _Counting:
    """An array source that records how it is indexed."""

    def __init__(self, arr: np.ndarray):
        self.arr = arr
        self.shape = arr.shape
        self.dtype = arr.dtype
        self.keys: list = []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.arr[key]


def _index(draw, n: int):
    kind = draw(st.sampled_from(["int", "slice", "full"]))
    if kind == "int":
        return draw(st.integers(-n, n - 1))
    if kind == "full":
        return slice(None)
    start = draw(st.none() | st.integers(-n, n))
    stop = draw(st.none() | st.integers(-n, n))
    step = draw(st.sampled_from([None, 1, 2, 3, -1, -2]))
    return slice(start, stop, step)


@st.composite
def _two_keys(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    first = tuple(_index(draw, n) for n in shape)
    after = np.empty(shape)[first].shape
    second = tuple(_index(draw, n) for n in after) if all(after) else ()
    return shape, first, second


@settings(max_examples=100, deadline=None)
@given(_two_keys())
def test_lazy_indexing_matches_numpy(case):
    shape, first, second = case
    arr = np.arange(int(np.prod(shape))).reshape(shape)
    source = _Counting(arr)
    view = LazyArray(source)[first][second]
    assert source.keys == []  # nothing read while composing
    expected = arr[first][second]
    got = np.asarray(view)
    assert view.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert len(source.keys) == 1


def test_napari_style_slicing_reads_only_the_visible_tile_of_one_plane():
    arr = np.arange(5 * 40 * 30).reshape(5, 40, 30)
    source = _Counting(arr)
    tile = LazyArray(source)[:, 10:20, 5:25]  # napari: visible box, all planes
    plane = np.asarray(tile[3])  # then the current plane
    np.testing.assert_array_equal(plane, arr[3, 10:20, 5:25])
    assert source.keys == [(3, slice(10, 20, 1), slice(5, 25, 1))]


def test_integer_array_index_and_errors():
    arr = np.arange(24).reshape(4, 6)
    view = LazyArray(arr)
    np.testing.assert_array_equal(np.asarray(view[np.array([3, 0, 2])]), arr[[3, 0, 2]])
    with pytest.raises(IndexError):
        view[4]
    with pytest.raises(IndexError):
        view[0, 0, 0]
    with pytest.raises(IndexError):
        view[None]


def test_difference_is_float32_and_checks_shapes():
    a = np.full((3, 4), 10, np.uint16)
    b = np.full((3, 4), 12, np.uint16)
    diff = LazyArray(Difference(a, b))
    assert diff.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(diff[1]), np.full(4, -2, np.float32))
    with pytest.raises(ValueError, match="shapes differ"):
        Difference(a, b[:2])
