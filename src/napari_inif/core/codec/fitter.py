"""Fitting the blocks of a plan: batched per-width networks, Adam, a divergence guard.

:class:`BlockFitter` fits some blocks of a :class:`~napari_inif.core.codec.header.FieldHeader`
(all of them in one process, or one Dask task's share); each block's result depends only
on its pixels, the seed and the steps, so any grouping gives the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from napari_inif.core.codec.blocks import BlockGrid
from napari_inif.core.codec.header import FieldHeader
from napari_inif.core.codec.siren import BatchedSiren, fold_frequencies
from napari_inif.core.config import CompressionConfig
from napari_inif.core.registry import ARCHITECTURES, OPTIMIZERS

__all__ = [
    "BlockFitter",
    "adam",
    "adamax",
    "block_seed",
    "flat_weights",
    "intensity_range",
    "normalise",
    "pick_device",
    "to_unit",
    "unit_span",
]

# The optimisers registered under these names in :data:`napari_inif.core.registry.OPTIMIZERS`
# (``factory(params, lr) -> torch.optim.Optimizer``; a learned optimiser plugs in there).


def adam(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam with ``foreach``: one kernel per operation over all tensors on a GPU (CUDA's
    default); on the CPU it gives the same numbers at the same speed."""
    return torch.optim.Adam(params, lr=lr, foreach=True)


def adamax(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adamax."""
    return torch.optim.Adamax(params, lr=lr)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; other names are passed to torch."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def intensity_range(lo: np.ndarray, hi: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel normalisation range (what the header stores) from the channels' minima
    and maxima.  A constant channel keeps ``hi == lo``: it decodes to exactly its value,
    whatever the field outputs (:func:`unit_span` keeps the mapping defined)."""
    return tuple(float(v) for v in np.asarray(lo, np.float64)), tuple(
        float(v) for v in np.asarray(hi, np.float64)
    )


def unit_span(lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    """``hi - lo`` per channel (float64), 1 for a constant channel."""
    lo64, hi64 = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return np.where(hi64 > lo64, hi64 - lo64, 1.0)


def to_unit(canon: np.ndarray, lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    """Map each channel of a canonical array from ``[lo, hi]`` to ``[-1, 1]`` (float32); a
    constant channel maps to -1."""
    lo32 = np.asarray(lo, np.float64).astype(np.float32)
    norm = (canon.astype(np.float32) - lo32) / unit_span(lo, hi).astype(np.float32)
    return norm * 2 - 1


def normalise(canon: np.ndarray) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """Map each channel of a canonical array to ``[-1, 1]``: ``(norm, lo, hi)``."""
    flat = canon.reshape(-1, canon.shape[-1]).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise ValueError("the image contains NaN or infinite values")
    lo, hi = intensity_range(flat.min(axis=0), flat.max(axis=0))
    return to_unit(canon, lo, hi), lo, hi


def block_seed(seed: int, block: int) -> int:
    """Seed of one block's initialisation and sampling."""
    return (seed * 1_000_003 + block * 7919 + 1) % (1 << 62)


class BlockFitter:
    """Fits some blocks of a plan: all of them, or one Dask task's share.

    Each block's result depends only on its own pixels, the seed and the steps: its
    initialisation and coordinate sampling use generators seeded by ``(seed, block)``, its
    loss is normalised and its gradient clipped on its own.  Blocks of one width are
    evaluated together as one batched network.

    Parameters
    ----------
    header
        The plan's header (grid, depth, widths, channels).
    config
        Architecture, learning rate, optimiser, batch size and seed.
    blocks
        Block numbers to fit.
    pixels
        ``pixels(block)`` returns the normalised pixels ``(*fit_extent, C)`` (float32) of
        the block's fitted region (:meth:`~napari_inif.core.codec.blocks.BlockGrid.fit_bounds`).
    device
        Torch device.
    """

    def __init__(
        self,
        header: FieldHeader,
        config: CompressionConfig,
        blocks: Sequence[int],
        pixels: Callable[[int], np.ndarray],
        device: torch.device,
    ):
        self.header = header
        self.config = config
        self.device = device
        grid = header.grid
        self.edges = torch.tensor(grid.fit_edges, dtype=torch.float32, device=device)
        self.per_block = max(MIN_BLOCK_POINTS, config.batch_size // max(1, grid.n_blocks))
        # Adam on sine networks diverges at small batches: the learning rate shrinks with
        # the fourth root of a block's points per step below LR_REFERENCE_POINTS.
        self.lr = config.lr * min(1.0, self.per_block / LR_REFERENCE_POINTS) ** 0.25
        self.groups: list[_Group] = []
        for width in sorted({header.widths[b] for b in blocks}):
            members = [b for b in blocks if header.widths[b] == width]
            net = ARCHITECTURES[config.architecture](
                header.arch(members[0]),
                len(members),
                w0=config.w0,
                w0_first=config.w0_first,
                seeds=[block_seed(config.seed, b) for b in members],
            ).to(device)
            data = torch.from_numpy(_padded(pixels, grid, members)).to(device)
            extents = torch.tensor(
                [grid.fit_extent(b) for b in members], dtype=torch.float32, device=device
            )
            gens = [
                torch.Generator(device=device).manual_seed(block_seed(config.seed, b) + 1)
                for b in members
            ]
            self.groups.append(_Group(members, net, data, extents, gens))
        self.params = [p for g in self.groups for p in g.net.parameters() if p.requires_grad]
        self.steps_done = 0
        self.rollbacks = 0  # blocks put back to their best state after diverging
        freq_ids = {id(p) for g in self.groups for p in g.net.log_freqs}
        self.optimizer = OPTIMIZERS[config.optimizer](
            [
                {"params": [p for p in self.params if id(p) not in freq_ids], "scale": 1.0},
                {
                    "params": [p for p in self.params if id(p) in freq_ids],
                    "scale": config.freq_lr_scale,
                },
            ],
            self.lr,
        )

    def step(
        self,
        progress: float,
        after_backward: Callable[[list[torch.Tensor]], None] | None = None,
    ) -> float:
        """One optimisation step at ``progress`` in [0, 1] of the cosine schedule.

        ``after_backward(params)`` may add to the gradients (guidance) before clipping.
        Returns the mean squared error over the blocks' sampled pixels (normalised units).
        """
        lr = self.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
        for pg in self.optimizer.param_groups:
            pg["lr"] = lr * pg["scale"]
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        n = 0
        for g in self.groups:
            inputs, targets = g.sample(self.per_block, self.edges)
            per_block = (g.net(inputs) - targets).square().mean(dim=(1, 2))
            g.track(per_block.detach())
            total = total + per_block.sum()
            n += len(g.blocks)
        total.backward()
        if after_backward is not None:
            after_backward(self.params)
        for g in self.groups:
            g.clip_gradients(1.0)
        damped = [
            (g, [p.detach().clone() for p in g.net.parameters()]) for g in self.groups if g.damped
        ]
        self.optimizer.step()
        for g, old in damped:  # a rolled-back block steps at a fraction of the learning rate
            g.damp(old)
        self.steps_done += 1
        if self.steps_done % GUARD_EVERY == 0:
            armed = self.steps_done >= GUARD_WARMUP
            for g in self.groups:
                self.rollbacks += g.checkpoint(self.optimizer, DIVERGED if armed else None)
        return float(total.detach()) / n

    def finish(self) -> None:
        """Put back the best state of every block that ended clearly worse than it (call
        once, after the last step and before :meth:`weights`)."""
        for g in self.groups:
            g.checkpoint(self.optimizer, FINISH_WORSE)

    def weights(self) -> dict[int, list[np.ndarray]]:
        """Folded float32 tensors of each fitted block, in payload order (layer, W then b)."""
        out: dict[int, list[np.ndarray]] = {}
        for g in self.groups:
            folded = [(w.cpu().numpy(), b.cpu().numpy()) for w, b in fold_frequencies(g.net)]
            for j, block in enumerate(g.blocks):
                out[block] = [t for w, b in folded for t in (w[j], b[j, 0])]
        return out


#: Fewest coordinates a block is trained on per step, however many blocks share the batch.
MIN_BLOCK_POINTS = 256
#: Points per block per step at which ``config.lr`` applies unscaled.  Measured at equal
#: compute (BBBC034 C0, 1024x1024, 2 CPU threads): lr 1e-3 is best with one block on 8192
#: points (cancer-cell stack 256x: 30.5 dB vs 30.1 at 5e-4; tinc ZYX 128x: 31.4 vs 29.7),
#: but 16 blocks on 512 points each diverge at 1e-3 (40.8 dB with the guard below) and
#: reach 43.0-43.1 dB at 5e-4-7e-4.
LR_REFERENCE_POINTS = 8192

#: Divergence guard.  Sine networks trained with Adam at a useful learning rate now and
#: then blow up mid-fit (the loss of one block jumps 10-100x and never comes back; seen
#: on 16 blocks of a 1024x1024 BBBC034 image after ~1500 of 4800 steps: 43 dB -> 26 dB).
#: Every ``GUARD_EVERY`` steps each block's smoothed loss is compared with its best: a
#: better block is snapshotted, a block ``DIVERGED`` times worse (6 dB) is put back to its
#: snapshot with its Adam momentum cleared.  Per block, so groupings still agree.
GUARD_EVERY = 25
GUARD_WARMUP = 100
DIVERGED = 4.0
FINISH_WORSE = 1.25  # ~1 dB: at the end, keep the snapshot of a block this much worse


class _Group:
    """Blocks of one width, fitted as one batched network."""

    def __init__(
        self,
        blocks: list[int],
        net: BatchedSiren,
        data: torch.Tensor,
        extents: torch.Tensor,
        gens: list[torch.Generator],
    ):
        self.blocks = blocks
        self.net = net
        self.data = data  # (B, prod(edges), C) padded block pixels
        self.extents = extents  # (B, d) float block lengths
        self.gens = gens  # one sampling generator per block
        self.ema: torch.Tensor | None = None  # (B,) smoothed training loss of each block
        self.best: torch.Tensor | None = None  # (B,) best smoothed loss at a checkpoint
        self.snapshot: list[torch.Tensor] = []  # parameters at each block's best
        self.lr_scale = torch.ones(len(blocks), device=data.device)  # halved per rollback
        self.damped = False  # whether any lr_scale is below 1 (kept here: no device sync)

    def damp(self, old: list[torch.Tensor]) -> None:
        """Shrink this step's update of each block by its ``lr_scale`` (blocks at full rate
        are left exactly as the optimiser put them)."""
        with torch.no_grad():
            for p, before in zip(self.net.parameters(), old, strict=True):
                scale = self.lr_scale.reshape(-1, *([1] * (p.dim() - 1)))
                p.copy_(torch.where(scale < 1, before + scale * (p - before), p))

    def track(self, loss: torch.Tensor) -> None:
        """Smooth this step's per-block loss ``(B,)``."""
        self.ema = loss.clone() if self.ema is None else 0.8 * self.ema + 0.2 * loss

    def checkpoint(self, optimizer: torch.optim.Optimizer, worse: float | None) -> int:
        """Snapshot blocks at a new best; roll back those ``worse`` times above it.

        Returns the number of blocks rolled back.
        """
        if self.ema is None:
            return 0
        params = list(self.net.parameters())
        with torch.no_grad():
            if self.best is None:
                self.best = self.ema.clone()
                self.snapshot = [p.detach().clone() for p in params]
                return 0
            better = self.ema < self.best
            if bool(better.any()):
                self.best = torch.where(better, self.ema, self.best)
                for snap, p in zip(self.snapshot, params, strict=True):
                    snap[better] = p[better]
            if worse is None:
                return 0
            bad = self.ema > worse * self.best
            n_bad = int(bad.sum())
            if n_bad:
                for snap, p in zip(self.snapshot, params, strict=True):
                    p[bad] = snap[bad]
                    state = optimizer.state.get(p, {})
                    if "exp_avg" in state:  # keep exp_avg_sq: it damps the next steps
                        state["exp_avg"][bad] = 0
                self.ema = torch.where(bad, self.best, self.ema)
                self.lr_scale[bad] *= 0.5
                self.damped = True
        return n_bad

    def sample(self, n: int, edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random pixel coordinates inside each block: ``(inputs, targets)``."""
        d = self.extents.shape[1]
        dev = self.data.device
        u = torch.stack([torch.rand(n, d, generator=g, device=dev) for g in self.gens])
        idx = torch.floor(u * self.extents[:, None, :])
        inputs = 2 * (idx + 0.5) / self.extents[:, None, :] - 1
        strides = torch.ones(d, device=dev)
        for a in range(d - 2, -1, -1):
            strides[a] = strides[a + 1] * edges[a + 1]
        flat = (idx * strides).sum(-1).long()
        targets = torch.gather(self.data, 1, flat[..., None].expand(-1, -1, self.data.shape[-1]))
        return inputs, targets

    def clip_gradients(self, max_norm: float) -> None:
        """Clip each block's gradient norm on its own."""
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        if not grads:
            return
        sq = sum(g.reshape(g.shape[0], -1).square().sum(1) for g in grads)
        coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, [coef.reshape(-1, *([1] * (g.dim() - 1))) for g in grads])


def _padded(pixels: Callable[[int], np.ndarray], grid: BlockGrid, blocks: list[int]) -> np.ndarray:
    """``(B, prod(edges), C)`` block pixels, edge-padded to the nominal block size."""
    edges = grid.fit_edges
    regions = [pixels(b) for b in blocks]
    c = regions[0].shape[-1]
    out = np.empty((len(blocks), *edges, c), np.float32)
    for i, region in enumerate(regions):
        pad = [(0, e - n) for e, n in zip(edges, region.shape[:-1], strict=True)] + [(0, 0)]
        out[i] = np.pad(region, pad, mode="edge")
    return out.reshape(len(blocks), -1, c)


def flat_weights(per_block: dict[int, list[np.ndarray]], n_blocks: int) -> list[np.ndarray]:
    """All blocks' tensors in payload order."""
    return [t for block in range(n_blocks) for t in per_block[block]]
