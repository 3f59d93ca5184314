import numpy as np
import pytest

from napari_inif.core.codec.blocks import BlockGrid, choose_grid


def test_blocks_tile_the_shape_exactly():
    grid = BlockGrid((65, 257), (3, 5))
    cover = np.zeros((65, 257), int)
    for b in range(grid.n_blocks):
        cover[tuple(slice(lo, hi) for lo, hi in grid.bounds(b))] += 1
    assert (cover == 1).all()


def test_touching_returns_only_intersecting_blocks():
    grid = BlockGrid((100, 100), (4, 4))  # 25-pixel blocks
    assert grid.touching(((0, 10), (0, 10))) == [0]
    assert sorted(grid.touching(((20, 30), (20, 30)))) == [0, 1, 4, 5]
    assert len(grid.touching(((0, 100), (0, 100)))) == 16
    assert grid.touching(((5, 5), (0, 10))) == []


def test_block_of_and_normalise_follow_pixel_centres():
    grid = BlockGrid((64,), (2,))
    assert grid.block_of(np.array([0, 31, 32, 63, 31.4, 31.6]), 0).tolist() == [0, 0, 1, 1, 0, 1]
    centres = grid.normalise(1, 0, np.arange(32, 64))
    assert centres[0] > -1 and centres[-1] < 1
    np.testing.assert_allclose(centres, -centres[::-1])


@pytest.mark.parametrize("shape,n", [((1024, 1024), 16), ((48, 130, 130), 3), ((20, 20), 64)])
def test_choose_grid_respects_target_and_minimum_edge(shape, n):
    grid = choose_grid(shape, n)
    assert all(e >= min(16, s) for e, s in zip(grid.edges, shape, strict=True))
    if min(shape) >= 64:
        assert grid.n_blocks >= n


def test_invalid_grid_is_refused():
    with pytest.raises(ValueError):
        BlockGrid((10,), (11,))


def test_margin_extends_the_fitted_region_inside_the_image():
    grid = BlockGrid((100, 60), (4, 2), margin=3)
    assert grid.fit_bounds(0) == ((0, 28), (0, 33))
    assert grid.fit_bounds(grid.n_blocks - 1) == ((72, 100), (27, 60))
    assert grid.fit_edges == (31, 36)
    # tile pixels still map inside (-1, 1) of their block's field
    inputs = grid.normalise(5, 0, np.arange(*grid.bounds(5)[0]))
    assert -1 < inputs.min() and inputs.max() < 1
