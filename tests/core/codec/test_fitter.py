"""BlockFitter: a block's fit depends only on its pixels, the seed and the steps."""

import importlib

import numpy as np
import pytest
import torch

from napari_inif.core import CompressionConfig
from napari_inif.core.codec.fitter import BlockFitter, normalise
from napari_inif.core.codec.plan import plan
from napari_inif.core.layout import Layout

fit_module = importlib.import_module("napari_inif.core.codec.fitter")


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


def _fitter(cells_tyx, **overrides):
    values = {"ratio": 8, "steps": 400, "batch_size": 1024, "params_per_block": 800, "seed": 3}
    config = CompressionConfig(**(values | overrides))
    layout = Layout.of(cells_tyx, "TYX")
    norm, lo, hi = normalise(layout.to_canonical(cells_tyx))
    header = plan(layout, config, norm, lo=lo, hi=hi).header
    grid = header.grid

    def pixels(b):
        return norm[tuple(slice(a, z) for a, z in grid.fit_bounds(b))]

    return BlockFitter(header, config, range(grid.n_blocks), pixels, torch.device("cpu"))


def _block_mse(fitter):
    """Per-block mean squared error of every group on 4096 fresh samples."""
    torch.manual_seed(0)
    with torch.no_grad():
        out = {}
        for g in fitter.groups:
            inputs, targets = g.sample(4096, fitter.edges)
            mse = (g.net(inputs) - targets).square().mean(dim=(1, 2))
            out.update({b: float(m) for b, m in zip(g.blocks, mse, strict=True)})
    return out


def _blow_up(fitter, block):
    """Add large noise to one block's weights, as an Adam blow-up does."""
    group = next(g for g in fitter.groups if block in g.blocks)
    j = group.blocks.index(block)
    with torch.no_grad():
        for w in group.net.weights:
            w[j] += 2.0 * torch.randn_like(w[j])
    return group, j


def test_a_diverged_block_is_rolled_back_and_slowed(cells_tyx):
    fitter = _fitter(cells_tyx)
    for i in range(fit_module.GUARD_WARMUP):
        fitter.step(i / 400)
    before = _block_mse(fitter)
    block = max(before)  # any block; the last one
    group, j = _blow_up(fitter, block)
    assert _block_mse(fitter)[block] > 10 * before[block]
    for i in range(fit_module.GUARD_EVERY):
        fitter.step((fit_module.GUARD_WARMUP + i) / 400)
    after = _block_mse(fitter)
    assert fitter.rollbacks == 1
    assert after[block] < 2 * before[block]
    assert group.lr_scale[j] == 0.5
    assert all(float(s) == 1 for g in fitter.groups for s in g.lr_scale if g is not group)
    for other in before:  # the other blocks went on fitting
        if other != block:
            assert after[other] < 1.5 * before[other]


def test_finish_keeps_the_best_state_of_a_block_that_ended_worse(cells_tyx):
    fitter = _fitter(cells_tyx)
    for i in range(2 * fit_module.GUARD_EVERY):
        fitter.step(i / 400)
    before = _block_mse(fitter)
    block = min(before)
    _blow_up(fitter, block)
    for _ in range(3):  # fewer steps than the guard period: the loss smoothing sees it
        fitter.step(0.2)
    assert fitter.rollbacks == 0
    fitter.finish()
    assert _block_mse(fitter)[block] < 2 * before[block]


def test_learning_rate_shrinks_with_the_points_each_block_gets(cells_tyx):
    one = _fitter(cells_tyx, ratio=16, params_per_block=100_000, batch_size=8192)
    assert one.header.grid.n_blocks == 1 and one.lr == pytest.approx(one.config.lr)
    many = _fitter(cells_tyx, batch_size=8192)
    n = many.header.grid.n_blocks
    assert n >= 4
    expected = (max(256, 8192 // n) / 8192) ** 0.25
    assert many.lr == pytest.approx(many.config.lr * expected)
    assert many.lr < one.lr
