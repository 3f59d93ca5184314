"""Guidance with the grid field: windows rendered from the grid being fitted, the
guidance gradient added to its latents, the result in the file's fit record."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_inif.core import CompressionConfig, compress, loads
from napari_inif.core.codec.fitter import normalise
from napari_inif.core.codec.grid import GridField, GridSpec, channel_range
from napari_inif.core.codec.render import GridWindowRenderer
from napari_inif.core.engine.grid import _GuidanceHook, _to_norm
from napari_inif.core.guidance import losses
from napari_inif.core.guidance.losses import make_guidance


def _field(shape=(3, 24, 20), channels=1) -> GridField:
    torch.manual_seed(0)
    fld = GridField(GridSpec(shape, channels, levels=3, hidden=(8,)))
    with torch.no_grad():
        for z in fld.latents:
            z.normal_(0, 2)
    return fld


def test_window_is_the_decoded_field_in_normalised_units():
    fld = _field(channels=2)
    gain, offset = [2.0, 0.5], [-1.0, 0.25]
    render = GridWindowRenderer(fld, gain, offset)
    window = render((1,), 5, 3, 12, 10)
    assert window.shape == (2, 12, 10) and window.requires_grad
    with torch.no_grad():  # the whole image from the rounded latents, as decoded
        full = fld.synthesize(fld.features_dense(fld.quantized_latents()))
    expect = full[1, 5:17, 3:13] * torch.tensor(gain) + torch.tensor(offset)
    torch.testing.assert_close(window.detach(), expect.permute(2, 0, 1), atol=1e-5, rtol=1e-5)
    # a shrunken view samples cell centres; outside the image is refused
    assert render((0,), 0, 0, 24, 20, size=(6, 5)).shape == (2, 6, 5)
    with pytest.raises(ValueError, match="outside the image"):
        render((3,), 0, 0, 4, 4)


def test_to_norm_maps_the_stream_range_to_the_guidance_units():
    canon = np.array([[[10.0, 0.0], [30.0, 100.0]]], np.float32)  # (1, 2, C=2)
    norm, lo, hi = normalise(canon)
    v_lo, v_hi = channel_range(canon)  # the stream's map, per channel
    gain, offset = _to_norm(v_lo, v_hi, lo, hi)
    unit = (canon - v_lo) / (v_hi - v_lo)  # what the grid outputs
    np.testing.assert_allclose(unit * np.array(gain) + np.array(offset), norm, atol=1e-6)


def test_hook_adds_the_rescaled_guidance_gradient_to_the_latents():
    fld = _field()
    image = np.random.default_rng(1).uniform(-1, 1, (3, 24, 20, 1)).astype(np.float32)
    config = CompressionConfig(guidance="ssim", guidance_every=1, guidance_patch=16)
    guide = make_guidance(config, image, torch.device("cpu"), 0)
    params = [*fld.latents, *fld.synthesis.parameters()]
    out = fld.synthesize(fld.features_dense(list(fld.latents)))
    torch.mean((out - torch.from_numpy(image[..., :1])) ** 2).backward()
    before = [p.grad.clone() for p in params]
    hook = _GuidanceHook(guide, [2.0], [-1.0])
    hook(fld, 0, 0.1)  # before the guidance starts: nothing added
    assert all(torch.equal(p.grad, b) for p, b in zip(params, before, strict=True))
    hook(fld, 1, 1.0)
    assert guide.steps_done == 1 and math.isfinite(guide.last_loss)
    added = [p.grad - b for p, b in zip(params, before, strict=True)]
    assert float(added[0].abs().sum()) > 0  # the finest latents got the guidance
    norm = lambda ts: math.sqrt(sum(float(t.square().sum()) for t in ts))  # noqa: E731
    # rescaled to weight_at(1) = 0.5 times the pixel gradient's norm
    assert norm(added) == pytest.approx(guide.weight_at(1.0) * norm(before), rel=1e-3)
    # a fine-tuning round restarts the steps: the guidance keeps its full weight
    hook(fld, 0, 0.0)
    assert guide.steps_done == 2


def test_ssim_guidance_end_to_end(cells_tyx, monkeypatch):
    guided = []
    add_gradient = losses.Guidance.add_gradient

    def counting(self, render, params, step, frac):
        result = add_gradient(self, render, params, step, frac)
        if result is not None:
            assert isinstance(render, GridWindowRenderer)
            guided.append(result)
        return result

    monkeypatch.setattr(losses.Guidance, "add_gradient", counting)
    config = CompressionConfig(
        ratio=16,
        steps=40,
        architecture="grid",
        guidance="ssim",
        guidance_every=2,
        guidance_patch=32,
    )
    enc = compress(cells_tyx, config, axes="TYX")
    # past 60% of the 40 steps, every second one (steps 26-38); a rate round adds more
    assert len(guided) >= 7
    back = loads(enc.to_bytes())
    np.testing.assert_array_equal(back.array()[...], enc.array()[...])
    assert enc.nbytes <= 1.01 * cells_tyx.nbytes / 16
    record = back.header.fit["guidance"]
    assert record["name"] == "ssim" and record["weight"] == 1.0
    assert set(record["agreement"]) >= {"f1", "mean_iou", "method"}
    assert 0 <= record["agreement"]["f1"] <= 1
    assert back.header.fit["psnr"] > 24
