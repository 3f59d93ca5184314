"""BlockFitter: a block's fit depends only on its pixels, the seed and the steps."""

import numpy as np
import pytest
import torch

from napari_inif.core import CompressionConfig
from napari_inif.core.budget import plan
from napari_inif.core.fit import BlockFitter, normalise
from napari_inif.core.layout import Layout


def test_blocks_fit_the_same_alone_or_together(cells_tyx):
    config = CompressionConfig(ratio=8, steps=5, batch_size=1024, params_per_block=800, seed=7)
    layout = Layout.of(cells_tyx, "TYX")
    norm, lo, hi = normalise(layout.to_canonical(cells_tyx))
    header = plan(layout, config, norm, lo=lo, hi=hi).header
    grid = header.grid
    assert grid.n_blocks >= 4 and len(set(header.widths)) >= 1

    def pixels(b):
        return norm[tuple(slice(a, z) for a, z in grid.fit_bounds(b))]

    cpu = torch.device("cpu")
    together = BlockFitter(header, config, range(grid.n_blocks), pixels, cpu)
    alone = [BlockFitter(header, config, [b], pixels, cpu) for b in (0, grid.n_blocks - 1)]
    losses = [together.step(i / 5) for i in range(5)]
    for f in alone:
        for i in range(5):
            f.step(i / 5)
    assert losses[-1] < losses[0]
    w_all = together.weights()
    for f in alone:
        for block, tensors in f.weights().items():
            for a, b in zip(tensors, w_all[block], strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_config_refuses_unknown_names_and_values():
    with pytest.raises(ValueError, match="available: inif"):
        CompressionConfig(architecture="resnet")
    with pytest.raises(ValueError, match="ratio"):
        CompressionConfig(ratio=0.5)
    with pytest.raises(ValueError, match="unknown settings: colour"):
        CompressionConfig.from_dict({"ratio": 4, "colour": "red"})
    assert CompressionConfig.from_dict(CompressionConfig(ratio=9).to_dict()).ratio == 9
