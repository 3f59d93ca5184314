"""One validated configuration drives the CLI flags, the widget and the file header.

Torch-free: names are checked against :mod:`napari_inif.core.registry`, which lists them
without importing their implementations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from napari_inif.core.registry import ARCHITECTURES, GUIDANCES, OPTIMIZERS

__all__ = ["MODES", "CompressionConfig"]

#: Compression modes: the field alone, or a classic-codec prior plus a residual field.
MODES = ("field", "hybrid")


@dataclass(frozen=True)
class CompressionConfig:
    """Everything that decides how an image is compressed.

    Attributes
    ----------
    ratio
        Asked compression ratio, ``raw bytes / file bytes`` with the whole file counted.
    architecture
        Network family from :data:`napari_inif.core.registry.ARCHITECTURES`
        (``"inif"``: per-neuron frequencies learned in the first layer; ``"inif-all"``: in
        every layer; ``"siren"``: fixed ``w0``).
    steps
        Optimisation steps (the fit may stop earlier on ``time_limit`` or ``target_psnr``).
    time_limit
        Wall-clock budget of the fit in seconds, or ``None``.
    target_psnr
        Stop once the PSNR on the training batches (dB, data range) exceeds this.
    batch_size
        Coordinates sampled per step, over all blocks together (at least 256 per block).
        Many cheap steps beat few large ones: at equal compute, 1200 steps of 8192 points
        gave 29.9 dB where 300 steps of 32768 gave 27.7 dB (cancer-cell stack, 256x), and
        41.8 vs 39.1 dB on a BBBC034 image at 64x.
    lr
        Peak learning rate of the optimiser (cosine decay to 5% of it) for a block trained
        on 8192 points per step; smaller per-block batches use ``lr * (points / 8192) ** 0.25``
        (see :data:`napari_inif.core.codec.fitter.LR_REFERENCE_POINTS`).
    freq_lr_scale
        Learning-rate multiplier of the learnable log-frequencies.
    optimizer
        Optimiser name from :data:`napari_inif.core.registry.OPTIMIZERS`.
    w0, w0_first
        Initial frequency of hidden and first sine layers.
    depth
        Number of linear layers, or ``None`` to choose from the budget.
    params_per_block
        Parameters a block aims at; decides how many blocks the image is split into.
    max_block_voxels
        Upper bound on the pixels of one block (bounds memory).
    block_margin
        Pixels beyond its tile, on each side, that each block's field is also fitted on;
        keeps the fields' edge effects off the tile borders (no seams).
    allocation
        ``"content"`` shares the budget by block standard deviation, ``"uniform"`` equally.
    bits
        Nominal bits per weight used to size the network; the rate control then picks the
        finest quantiser that fits the byte budget.
    seed
        Seed of initialisation and coordinate sampling.
    device
        ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    mode
        ``"field"``: the field codes the image; ``"hybrid"``: a classic codec (``prior``)
        codes the image and the field its residual (see :mod:`napari_inif.core.hybrid.prior`).
    prior
        Codec prior name from :data:`napari_inif.core.registry.CODECS` (hybrid mode).
    prior_fraction
        Share of the file budget given to the prior in hybrid mode, or ``None`` for the
        automatic split (:data:`napari_inif.core.hybrid.prior.AUTO_PRIOR_FRACTION`).
    guidance
        Extra loss from :data:`napari_inif.core.registry.GUIDANCES`: ``"none"``, ``"ssim"``,
        ``"perceptual"`` or ``"segmentation"`` (the last two need Cellpose and a model).
    guidance_weight
        Strength of the guidance; 1 is the recommended strength, 0 switches it off.
    guidance_model
        Cellpose model: built-in name (``cyto3``, ``nuclei``, ...), weights file, or
        ``"inif_nuclei_small"`` (the small network shipped with napari-inif).
    guidance_diameter
        Typical cell diameter in pixels (``None``: estimated from the image).
    guidance_channel
        Channel to segment.
    guidance_patch, guidance_every
        Window edge (network pixels) and period in steps of the guidance; ``None`` picks
        by device (CPU: 128 every 2 steps; GPU: 224, four windows, every step).
    """

    ratio: float = 64.0
    architecture: str = "inif"
    steps: int = 4000
    time_limit: float | None = None
    target_psnr: float | None = None
    batch_size: int = 8192
    lr: float = 1e-3
    optimizer: str = "adam"
    freq_lr_scale: float = 20.0
    w0: float = 30.0
    w0_first: float = 30.0
    depth: int | None = None
    params_per_block: int = 12000
    max_block_voxels: int = 1 << 20
    allocation: str = "content"
    block_margin: int = 2
    bits: int = 8
    seed: int = 0
    device: str = "auto"
    mode: str = "field"
    prior: str = "avif"
    prior_fraction: float | None = None
    guidance: str = "none"
    guidance_weight: float = 1.0
    guidance_model: str | None = None
    guidance_diameter: float | None = None
    guidance_channel: int = 0
    guidance_patch: int | None = None
    guidance_every: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.ratio > 1, f"ratio must be above 1, got {self.ratio}"),
            (self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.time_limit is None or self.time_limit > 0, "time_limit must be positive"),
            (self.batch_size >= 64, "batch_size must be at least 64"),
            (0 < self.lr < 1, f"lr must be in (0, 1), got {self.lr}"),
            (self.w0 > 0 and self.w0_first > 0, "w0 and w0_first must be positive"),
            (self.depth is None or 2 <= self.depth <= 16, "depth must be 2..16"),
            (self.params_per_block >= 100, "params_per_block must be at least 100"),
            (self.max_block_voxels >= 256, "max_block_voxels must be at least 256"),
            (self.allocation in ("content", "uniform"), "allocation is content or uniform"),
            (0 <= self.block_margin <= 64, "block_margin must be 0..64"),
            (4 <= self.bits <= 16, "bits must be 4..16"),
            (self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}"),
            (
                self.prior_fraction is None or 0 < self.prior_fraction < 1,
                "prior_fraction must be in (0, 1) or None (automatic)",
            ),
            (0 <= self.guidance_weight <= 100, "guidance_weight must be in [0, 100]"),
            (
                self.mode == "field" or self.guidance == "none",
                "guidance works in mode 'field' only (in hybrid mode the field is a residual)",
            ),
            (
                self.guidance_diameter is None or self.guidance_diameter > 0,
                "guidance_diameter must be positive",
            ),
            (self.guidance_channel >= 0, "guidance_channel must not be negative"),
            (self.guidance_patch is None or self.guidance_patch >= 16, "guidance_patch >= 16"),
            (self.guidance_every is None or self.guidance_every >= 1, "guidance_every >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        ARCHITECTURES.entry(self.architecture)  # ValueError naming the registered ones
        OPTIMIZERS.entry(self.optimizer)
        GUIDANCES.entry(self.guidance)
        if self.mode == "hybrid":
            from napari_inif.core.hybrid.prior import get_prior  # torch-free

            get_prior(self.prior)  # ValueError naming the priors usable here
        if GUIDANCES.meta(self.guidance).get("needs_model") and not self.guidance_model:
            raise ValueError(
                f"guidance {self.guidance!r} needs a Cellpose model (guidance_model): a "
                "built-in name such as cyto3 or nuclei, a weights file, or inif_nuclei_small"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the file header and logs."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CompressionConfig:
        """Build from a dict, refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**values)
