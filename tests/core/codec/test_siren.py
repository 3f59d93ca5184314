import numpy as np
import pytest
import torch

from napari_inif.core.codec.siren import (
    Architecture,
    BatchedSiren,
    evaluate_folded,
    fold_frequencies,
)
from napari_inif.core.registry import ARCHITECTURES


def test_architecture_counts_every_parameter():
    arch = Architecture(3, 2, 16, 4)
    net = BatchedSiren(arch, 1)
    stored = sum(w.numel() + b.numel() for w, b in zip(net.weights, net.biases, strict=True))
    assert arch.n_params == stored == Architecture.params_for(3, 2, 16, 4)


@pytest.mark.parametrize("bad", [dict(in_features=0), dict(in_features=5), dict(depth=1)])
def test_architecture_rejects_bad_shapes(bad):
    with pytest.raises(ValueError):
        Architecture(**{**dict(in_features=2, out_features=1, width=8, depth=3), **bad})


def test_folded_network_equals_trained_network():
    gen = torch.Generator().manual_seed(0)
    net = BatchedSiren(Architecture(2, 3, 12, 4), 5, w0=30, w0_first=45, generator=gen)
    with torch.no_grad():  # pretend training moved the frequencies
        for s in net.log_freqs:
            s.uniform_(-0.3, 0.3)
    x = torch.rand(5, 100, 2, generator=gen) * 2 - 1
    expected = net(x)
    got = evaluate_folded(fold_frequencies(net), x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name,trained",
    [("inif", [True, False, False]), ("inif-all", [True, True, True]), ("siren", [False] * 3)],
)
def test_which_frequencies_are_trained(name, trained):
    net = ARCHITECTURES[name](Architecture(2, 1, 8, 4), 1)
    net(torch.rand(1, 64, 2)).square().mean().backward()
    got = [s.grad is not None and bool(s.grad.abs().sum() > 0) for s in net.log_freqs]
    assert got == trained


def test_blocks_are_independent():
    net = BatchedSiren(Architecture(1, 1, 8, 3), 2, generator=torch.Generator().manual_seed(1))
    x = torch.linspace(-1, 1, 50).reshape(1, 50, 1).repeat(2, 1, 1)
    y = net(x)
    assert not torch.allclose(y[0], y[1])
    net(x)[0].sum().backward()
    assert net.weights[0].grad[1].abs().sum() == 0
    assert np.isfinite(y.detach().numpy()).all()
