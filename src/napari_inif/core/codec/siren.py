"""The neural field: a batch of SIREN MLPs with learnable frequencies.

One :class:`BatchedSiren` holds ``B`` independent networks of one architecture (one per
block of the image) and evaluates them together with batched matrix products, which is
what keeps a CPU or GPU busy on many small fields.

The activation of hidden neuron ``j`` in layer ``l`` is ``sin(omega_lj * (W_l x + b_l)_j)``
(Sitzmann et al. 2020, "Implicit Neural Representations with Periodic Activation
Functions", arXiv 2006.09661).  INIF (arXiv 2405.19012) makes the frequency a trained
parameter; here ``omega = w0 * exp(s)`` with one ``s`` per neuron, initialised to 0 so
that training starts exactly as SIREN does.  For storage the frequency is folded into the
weights (``sin(omega (Wx + b)) = sin((omega W) x + omega b)``): the file holds a plain sine
MLP and the decoder needs no frequencies at all (see :func:`fold_frequencies`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from napari_inif.core.codec.architecture import Architecture

__all__ = [
    "Architecture",
    "BatchedSiren",
    "evaluate_folded",
    "fold_frequencies",
    "inif",
    "inif_all",
    "siren",
]


class BatchedSiren(nn.Module):
    """``n_blocks`` sine MLPs of one architecture evaluated with batched matmuls.

    Parameters
    ----------
    arch
        The architecture shared by all blocks.
    n_blocks
        How many independent networks.
    w0
        Initial frequency of every sine layer (SIREN's ``omega_0``).
    w0_first
        Initial frequency of the first layer (defaults to ``w0``).
    learn_frequency
        Train the log-frequencies (INIF); ``False`` gives plain SIREN.
    per_neuron
        One frequency per neuron (``True``) or one per layer.
    generator
        Seeded generator for reproducible initialisation of all blocks together.
    seeds
        One seed per block instead: each block's initialisation then depends only on its
        own seed, so blocks can be fitted in any grouping and give the same networks.
    """

    def __init__(
        self,
        arch: Architecture,
        n_blocks: int,
        *,
        w0: float = 30.0,
        w0_first: float | None = None,
        learn_frequency: bool = True,
        per_neuron: bool = True,
        learn_layers: int | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.n_blocks = n_blocks
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.log_freqs = nn.ParameterList()
        first = w0 if w0_first is None else w0_first
        self.base_freqs = [first] + [w0] * (arch.depth - 2)
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds] if seeds else [generator]
        if len(gens) not in (1, n_blocks):
            raise ValueError(f"{len(gens)} seeds for {n_blocks} blocks")
        for layer, (fan_in, fan_out) in enumerate(arch.layer_shapes):
            head = layer == arch.depth - 1
            if layer == 0:
                bound = 1.0 / fan_in  # SIREN: the first layer spans +-1 before w0
            elif head:
                bound = math.sqrt(6.0 / fan_in)  # linear output layer
            else:  # SIREN: omega * W ~ U(-sqrt(6/n), sqrt(6/n))
                bound = math.sqrt(6.0 / fan_in) / self.base_freqs[layer - 1]
            per_block = n_blocks if len(gens) == 1 else 1
            w = torch.cat([_uniform((per_block, fan_in, fan_out), bound, g) for g in gens])
            b = torch.cat(
                [_uniform((per_block, 1, fan_out), 1 / math.sqrt(fan_in), g) for g in gens]
            )
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b * 0.0 if head else b))
        for layer in range(arch.depth - 1):
            trained = learn_frequency and (learn_layers is None or layer < learn_layers)
            self.log_freqs.append(
                nn.Parameter(
                    torch.zeros(n_blocks, 1, arch.width if per_neuron else 1),
                    requires_grad=trained,
                )
            )

    def frequencies(self) -> list[torch.Tensor]:
        """Per-neuron frequencies ``(B, 1, width)`` of every sine layer."""
        return [
            base * torch.exp(s) for base, s in zip(self.base_freqs, self.log_freqs, strict=True)
        ]

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Evaluate ``coords`` of shape ``(B, N, in_features)`` to ``(B, N, out_features)``."""
        h = coords
        freqs = self.frequencies()
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if layer < last:
                h = torch.sin(freqs[layer] * h)
        return h


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def fold_frequencies(field: BatchedSiren) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fold the frequencies into the weights: ``[(W, b), ...]`` of a plain sine MLP."""
    out = []
    freqs = field.frequencies()
    with torch.no_grad():
        for layer, (w, b) in enumerate(zip(field.weights, field.biases, strict=True)):
            if layer < len(freqs):
                out.append((w * freqs[layer], b * freqs[layer]))
            else:
                out.append((w.clone(), b.clone()))
    return [(w.detach(), b.detach()) for w, b in out]


def evaluate_folded(
    layers: list[tuple[torch.Tensor, torch.Tensor]], coords: torch.Tensor
) -> torch.Tensor:
    """Evaluate a folded sine MLP; ``layers`` hold ``(W, b)`` of shape ``(B, i, o)``, ``(B, 1, o)``.

    ``coords`` is ``(B, N, in_features)``; works with autograd (used by the QAT phase).
    """
    h = coords
    last = len(layers) - 1
    for layer, (w, b) in enumerate(layers):
        h = torch.baddbmm(b, h, w)
        if layer < last:
            h = torch.sin(h)
    return h


# The field families registered under these names in
# :data:`napari_inif.core.registry.ARCHITECTURES`.


def inif(arch: Architecture, n_blocks: int, **kw: object) -> BatchedSiren:
    """Per-neuron frequencies learned in the first layer (the bandwidth of the field)."""
    return BatchedSiren(arch, n_blocks, learn_frequency=True, learn_layers=1, **kw)  # type: ignore[arg-type]


def inif_all(arch: Architecture, n_blocks: int, **kw: object) -> BatchedSiren:
    """Per-neuron frequencies learned in every sine layer."""
    return BatchedSiren(arch, n_blocks, learn_frequency=True, **kw)  # type: ignore[arg-type]


def siren(arch: Architecture, n_blocks: int, **kw: object) -> BatchedSiren:
    """Plain SIREN: fixed frequencies."""
    return BatchedSiren(arch, n_blocks, learn_frequency=False, **kw)  # type: ignore[arg-type]
