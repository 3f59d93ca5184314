"""Guidance losses: registry, SSIM, window rendering, Cellpose guidance, guided fits."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_inif.core import CompressionConfig, compress, load
from napari_inif.core.codec.blocks import BlockGrid
from napari_inif.core.codec.fitter import normalise
from napari_inif.core.codec.render import WindowRenderer
from napari_inif.core.codec.siren import Architecture, BatchedSiren
from napari_inif.core.guidance.losses import (
    GUIDANCES,
    START,
    WARMUP,
    GuidanceSettings,
    guidance_names,
    guidance_summary,
    make_guidance,
    ssim_loss,
)

CPU = torch.device("cpu")


def small_net(seed: int = 0):
    """A random Cellpose 3 network of the real class, small enough for unit tests."""
    pytest.importorskip("cellpose")
    from cellpose.resnet_torch import CPnet

    from napari_inif.core.guidance.cellpose_net import CellposeNet

    torch.manual_seed(seed)
    return CellposeNet.from_module(CPnet([2, 8, 16], 3, 3, mkldnn=False, diam_mean=30.0), "tiny")


def test_registry_lists_the_guidances():
    assert guidance_names() == ["none", "perceptual", "segmentation", "ssim"]
    assert GUIDANCES["segmentation"].needs_model and not GUIDANCES["ssim"].needs_model
    assert make_guidance(GuidanceSettings("none"), np.zeros((8, 8, 1), np.float32), CPU) is None


def test_config_validates_guidance():
    with pytest.raises(ValueError, match="unknown guidance"):
        CompressionConfig(guidance="vgg")
    with pytest.raises(ValueError, match="needs a Cellpose model"):
        CompressionConfig(guidance="segmentation")
    with pytest.raises(ValueError, match="guidance_weight must be"):
        CompressionConfig(guidance="ssim", guidance_weight=-1)
    cfg = CompressionConfig(guidance="segmentation", guidance_model="cyto3", guidance_weight=2)
    assert CompressionConfig.from_dict(cfg.to_dict()) == cfg


def test_ssim_loss():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 32, 40, generator=g) * 2 - 1
    assert float(ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    y = (x + 0.3 * torch.randn(1, 32, 40, generator=g)).requires_grad_()
    loss = ssim_loss(y, x)
    loss.backward()
    assert float(loss.detach()) > 0.05 and float(y.grad.abs().sum()) > 0


def field_groups(grid: BlockGrid, channels: int = 1, seed: int = 0):
    arch = Architecture(len(grid.shape), channels, 16, 3)
    net = BatchedSiren(arch, grid.n_blocks, generator=torch.Generator().manual_seed(seed))
    return [SimpleNamespace(blocks=list(range(grid.n_blocks)), net=net)], net


def test_renderer_matches_the_block_networks_and_only_touches_its_blocks():
    grid = BlockGrid((3, 20, 24), (1, 2, 2))
    groups, net = field_groups(grid)
    render = WindowRenderer(grid, groups)
    out = render((1,), 6, 2, 8, 9)  # blocks are 10 x 12: crosses the Y boundary only
    assert out.shape == (1, 8, 9)
    for y in (6, 9, 10, 13):
        for x in (2, 10):
            block = grid.touching(((1, 2), (y, y + 1), (x, x + 1)))[0]
            coords = np.array(
                [
                    grid.normalise(block, a, np.array([float(v)]))[0]
                    for a, v in enumerate((1, y, x))
                ],
                np.float32,
            )
            inputs = torch.zeros(grid.n_blocks, 1, 3)
            inputs[block, 0] = torch.from_numpy(coords)
            expected = net(inputs)[block, 0, 0]
            got = float(out[0, y - 6, x - 2].detach())
            assert got == pytest.approx(float(expected.detach()), abs=1e-5)
    out.sum().backward()
    touched = {b for b in range(grid.n_blocks) if float(net.weights[0].grad[b].abs().sum()) > 0}
    assert touched == {0, 2}  # blocks (0, 0) and (1, 0) hold the window
    with pytest.raises(ValueError, match="outside"):
        render((1,), 15, 0, 8, 8)


def test_renderer_samples_a_shrunken_window_at_cell_centres():
    grid = BlockGrid((20, 24), (2, 2))
    groups, net = field_groups(grid, channels=2)
    render = WindowRenderer(grid, groups)
    out = render((), 2, 4, 16, 20, size=(4, 5))  # 4x4-pixel cells
    assert out.shape == (2, 4, 5)
    for i, j in ((0, 0), (3, 4), (2, 1)):
        y, x = 2 - 0.5 + (i + 0.5) * 4, 4 - 0.5 + (j + 0.5) * 4
        block = int(
            np.ravel_multi_index(
                (grid.block_of(np.array([y]), 0)[0], grid.block_of(np.array([x]), 1)[0]),
                grid.counts_effective,
            )
        )
        inputs = torch.zeros(grid.n_blocks, 1, 2)
        inputs[block, 0, 0] = float(grid.normalise(block, 0, np.array([y]))[0])
        inputs[block, 0, 1] = float(grid.normalise(block, 1, np.array([x]))[0])
        expected = net(inputs)[block, 0].detach()
        assert torch.allclose(out[:, i, j].detach(), expected, atol=1e-5)


@pytest.fixture
def nuclei_norm(nuclei_crop):
    return normalise(nuclei_crop[..., None])[0]


@pytest.mark.parametrize("diameter", [20.0, 60.0])  # window enlarged / shrunk for the net
def test_segmentation_guidance_is_zero_at_the_original_and_positive_elsewhere(
    nuclei_norm, diameter
):
    guide = make_guidance(
        GuidanceSettings("segmentation", model="tiny", diameter=diameter),
        nuclei_norm,
        CPU,
        net=small_net(),
    )
    assert guide.supersample == (1 if diameter == 20 else 2)
    original = torch.from_numpy(np.moveaxis(nuclei_norm, -1, 0))

    def render_original(index, y0, x0, h, w, size=None):  # sampled as the field would be
        window = original[None, :, y0 : y0 + h, x0 : x0 + w]
        if size is not None:
            window = torch.nn.functional.interpolate(window, size, mode="bilinear")
        return window[0]

    def render_blurred(index, y0, x0, h, w, size=None):
        window = render_original(index, y0, x0, h, w, size)[None]
        return torch.nn.functional.avg_pool2d(window, 5, 1, 2)[0]

    at_original = float(guide.loss(render_original).detach())
    blurred = float(guide.loss(render_blurred).detach())
    assert at_original == pytest.approx(0.0, abs=1e-9)
    assert blurred > 1e-7 and blurred > 1e3 * abs(at_original)


@pytest.mark.parametrize("name", ["segmentation", "perceptual", "ssim"])
def test_guidance_loss_decreases_and_its_gradient_reaches_the_field(nuclei_norm, name):
    h, w = nuclei_norm.shape[:2]
    grid = BlockGrid((h, w), (1, 2))
    groups, field = field_groups(grid)
    render = WindowRenderer(grid, groups)
    kw = {} if name == "ssim" else {"net": small_net()}
    settings = GuidanceSettings(
        name, model=None if name == "ssim" else "tiny", diameter=20.0, patch=64, every=1
    )
    guide = make_guidance(settings, nuclei_norm, CPU, **kw)
    guide.loss(render).backward()
    for p in field.parameters():
        assert float(p.grad.abs().sum()) > 0
    opt = torch.optim.Adam(field.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = guide.loss(render)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_schedule_ramps_up_and_skips_steps(nuclei_norm):
    guide = make_guidance(GuidanceSettings("ssim", weight=2.0, every=3), nuclei_norm, CPU)
    assert guide.weight_at(0.0) == guide.weight_at(START) == 0.0
    assert guide.weight_at(START + WARMUP / 2) == pytest.approx(guide.scale)
    assert guide.weight_at(1.0) == pytest.approx(2.0 * guide.scale)
    assert guide.add_gradient(lambda *a: None, [], 4, 1.0) is None  # not a multiple of every
    assert guide.add_gradient(lambda *a: None, [], 3, 0.0) is None  # weight 0 at the start


def test_guidance_gradient_is_rescaled_to_the_pixel_gradient(nuclei_norm):
    h, w = nuclei_norm.shape[:2]
    grid = BlockGrid((h, w), (1, 1))
    groups, field = field_groups(grid)
    params = list(field.parameters())
    pixel = [torch.full_like(p, 0.01) for p in params]
    for p, g in zip(params, pixel, strict=True):
        p.grad = g.clone()
    guide = make_guidance(GuidanceSettings("ssim", weight=1.0, every=1, patch=32), nuclei_norm, CPU)
    loss = guide.add_gradient(WindowRenderer(grid, groups), params, 5, 1.0)
    assert loss is not None and loss > 0 and guide.steps_done == 1
    added = torch.cat([(p.grad - g).ravel() for p, g in zip(params, pixel, strict=True)])
    norm = float(torch.cat([g.ravel() for g in pixel]).norm())
    assert float(added.norm()) == pytest.approx(guide.scale * norm, rel=1e-4)


def test_guided_fit_end_to_end_with_the_bundled_network(nuclei_crop, tmp_path):
    pytest.importorskip("cellpose")
    cfg = CompressionConfig(
        ratio=6,
        steps=40,
        batch_size=2048,
        device="cpu",
        guidance="segmentation",
        guidance_model="inif_nuclei_small",
        guidance_every=2,
    )
    encoded = compress(nuclei_crop, cfg)
    assert encoded.ratio >= 6
    record = encoded.header.fit["guidance"]
    assert record["name"] == "segmentation" and record["model"] == "inif_nuclei_small"
    a = record["agreement"]
    assert a["method"] == "cellpose" and a["n_original"] >= 1
    assert 0 <= a["f1"] <= 1
    encoded.save(tmp_path / "x.inif")
    again = load(tmp_path / "x.inif").header.fit["guidance"]
    assert again == record
    assert "F1" in guidance_summary(again)


def test_guided_fit_of_a_stack_uses_planes(cells_tyx):
    cfg = CompressionConfig(
        ratio=8,
        steps=12,
        batch_size=2048,
        device="cpu",
        guidance="ssim",
        guidance_patch=32,
        guidance_every=1,
    )
    encoded = compress(cells_tyx, cfg, axes="TYX")
    record = encoded.header.fit["guidance"]
    assert record["agreement"]["method"] == "classical"


def test_guidance_summary_tolerates_bad_records():
    assert guidance_summary(None) == "?"
    assert "?" in guidance_summary({"name": "x", "weight": "heavy", "agreement": {"f1": []}})
