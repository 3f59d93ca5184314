"""Guidance: extra losses that protect what the biologist will measure.

The fit minimises the pixel MSE on random coordinates.  A *guidance* adds, every
``every`` steps, a loss computed on a dense 2D window of the field rendered with its
gradient (:class:`~napari_inif.core.codec.render.WindowRenderer`):

``"none"``
    Pixel MSE only.
``"ssim"``
    ``1 - SSIM`` (Wang et al. 2004, IEEE TIP 13:600) on random windows: weight-free,
    needs nothing installed.
``"perceptual"``
    Distance between the feature maps of the frozen Cellpose encoder on the decoded
    and on the original window (a domain-specific perceptual loss, in the spirit of
    Johnson et al. 2016, arXiv 1603.08155, with Cellpose instead of VGG: no download).
``"segmentation"``
    The frozen Cellpose network is run once on the original, in tiles, to get target
    flows and cell probabilities; while fitting, the decoded tile goes through the same
    network and is pulled towards those targets with Cellpose's own training loss
    (flow MSE / 2 plus cell-probability cross-entropy, here as a KL divergence so that
    it is 0 for a perfect reconstruction).

3D and time-lapse stacks are guided on random 2D planes (the last two coordinate axes).
Every guidance also reports, after the fit, the segmentation agreement of the original
and the decoded image (:mod:`napari_inif.core.guidance.segmentation`), stored in the file header.

Weighting: the loss scales of MSE (1e-4 at 40 dB, 1e-2 at 20 dB) and of a guidance
(Cellpose flows, SSIM, features) have nothing in common and change during the fit, so
a fixed multiplier means something different on every image.  Instead the guidance
*gradient* is rescaled, on each guided step, to ``weight`` times the norm of
the pixel-loss gradient (the idea of GradNorm, Chen et al. 2018, arXiv 1711.02257,
reduced to a fixed ratio): ``weight = 1`` is the recommended strength of every guidance,
on any image.  The guidance is off for the first :data:`START` of the fit and ramps
up over the next :data:`WARMUP`: measured on BBBC022 nuclei, the Cellpose loss's
gradient only helps once the learning rate has decayed (at the peak rate it acts as noise
on a SIREN and raises the segmentation loss it is meant to lower).

Cost control (see ``docs/guidance.md``): the window edge ``patch`` and the period
``every``.  Making the rarer guided steps stronger instead (lazy regularisation, as in
StyleGAN2) was tried and made the segmentation loss worse: the spikes upset Adam.  On a
GPU the defaults are a 224-pixel window, four windows per guided step, every step; on a
CPU one 128-pixel window every second step, which is weaker as well as cheaper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from napari_inif.core.config import CompressionConfig
from napari_inif.core.guidance.segmentation import (
    Agreement,
    estimate_diameter,
    segmentation_agreement,
)
from napari_inif.core.registry import GUIDANCES

__all__ = [
    "GUIDANCES",
    "START",
    "WARMUP",
    "Guidance",
    "GuidanceSettings",
    "guidance_names",
    "guidance_summary",
    "make_guidance",
    "register_guidance",
    "ssim_loss",
]

#: The guidance weight is 0 before this fraction of the fit ...
START = 0.6
#: ... and ramps up linearly to its full value over this fraction.
WARMUP = 0.2
#: At most this many planes of a stack are used for targets and agreement.
MAX_PLANES = 8

#: ``render(index, y0, x0, h, w, size=None) -> (C, h, w)``, see
#: :class:`~napari_inif.core.codec.render.WindowRenderer`.
Render = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class GuidanceSettings:
    """Guidance options, taken from :class:`~napari_inif.core.config.CompressionConfig`.

    Attributes
    ----------
    name
        Registered guidance name (:data:`GUIDANCES`).
    weight
        User weight; 1 is the recommended strength of each guidance.
    model
        Cellpose model (built-in name, weights file or bundled name) or ``None``.
    diameter
        Typical object diameter in pixels, or ``None`` to estimate it from the original.
    channel
        Channel to segment (0-based).
    patch
        Window edge at the network's scale, or ``None`` for the device's default.
    every
        Guided step period, or ``None`` for the device's default.
    """

    name: str = "none"
    weight: float = 1.0
    model: str | None = None
    diameter: float | None = None
    channel: int = 0
    patch: int | None = None
    every: int | None = None

    @classmethod
    def from_config(cls, config: CompressionConfig) -> GuidanceSettings:
        """The ``guidance*`` fields of a config."""
        return cls(
            name=config.guidance,
            weight=float(config.guidance_weight),
            model=config.guidance_model or None,
            diameter=config.guidance_diameter,
            channel=int(config.guidance_channel),
            patch=config.guidance_patch,
            every=config.guidance_every,
        )


def _preset(device: torch.device) -> dict[str, int]:
    """Defaults for the device: practical on a CPU, full strength on a GPU."""
    if device.type == "cpu":
        return {"patch": 128, "every": 2, "batch": 1}
    return {"patch": 224, "every": 1, "batch": 4}


def _plane_indices(coord_shape: Sequence[int], limit: int = MAX_PLANES) -> list[tuple[int, ...]]:
    """Up to ``limit`` evenly spaced planes over the axes before the last two."""
    outer = tuple(coord_shape[:-2])
    n = int(np.prod(outer)) if outer else 1
    picks = np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(int))
    return [tuple(int(v) for v in np.unravel_index(p, outer)) if outer else () for p in picks]


class Guidance:
    """Base class: an extra loss on rendered 2D windows, plus the agreement report.

    Parameters
    ----------
    settings
        The user's options.
    image
        Canonical normalised image ``(*coord_shape, C)`` in ``[-1, 1]`` (what is fitted).
    device
        Torch device of the fit.
    seed
        Seed of the window sampling.
    """

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False
    description: ClassVar[str] = ""
    #: Guidance-to-pixel gradient norm ratio at ``weight = 1`` (the recommended strength).
    scale: ClassVar[float] = 0.5

    def __init__(
        self, settings: GuidanceSettings, image: np.ndarray, device: torch.device, seed: int = 0
    ):
        if image.ndim < 3:
            raise ValueError(
                f"guidance {self.name!r} needs an image with at least two coordinate axes"
            )
        if not 0 <= settings.channel < image.shape[-1]:
            raise ValueError(
                f"guidance channel {settings.channel} does not exist "
                f"(the image has {image.shape[-1]})"
            )
        preset = _preset(device)
        self.settings = settings
        self.image = image
        self.device = device
        self.patch = int(settings.patch or preset["patch"])
        self.every = int(settings.every or preset["every"])
        self.batch = preset["batch"]
        if self.patch < 16 or self.every < 1:
            raise ValueError("guidance patch must be at least 16 and every at least 1")
        self.rng = np.random.default_rng(seed + 7)
        self.planes = _plane_indices(image.shape[:-1])
        self.plane_shape = image.shape[-3:-1]
        self.steps_done = 0
        self.seconds = 0.0
        self.last_loss = float("nan")
        self.diameter = settings.diameter
        self.model_name: str | None = None

    # -- schedule --------------------------------------------------------------------------
    def weight_at(self, frac: float) -> float:
        """Gradient norm ratio at fit progress ``frac`` in [0, 1]: 0 before :data:`START`,
        then a linear ramp over :data:`WARMUP`."""
        return self.settings.weight * self.scale * min(1.0, max(frac - START, 0.0) / WARMUP)

    def add_gradient(
        self, render: Render, params: Sequence[torch.Tensor], step: int, frac: float
    ) -> float | None:
        """On guided steps, add the guidance gradient to ``p.grad`` of ``params``, rescaled
        to :meth:`weight_at` times the norm of the gradient already there (the pixel loss's).

        Call after the pixel loss's ``backward()``.  Returns the guidance loss, or ``None``
        on steps without guidance.
        """
        if step % self.every:
            return None
        ratio = self.weight_at(frac)
        if ratio <= 0:
            return None
        start = time.perf_counter()
        params = [p for p in params if p.requires_grad]
        loss = self.loss(render)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            sq = lambda ts: sum(float(t.square().sum()) for t in ts if t is not None)  # noqa: E731
            pixel = math.sqrt(sq(p.grad for p in params))
            guided = math.sqrt(sq(grads))
            factor = ratio * pixel / guided if guided > 0 else 0.0
            for p, g in zip(params, grads, strict=True):
                if g is None:
                    continue
                if p.grad is None:
                    p.grad = factor * g
                else:
                    p.grad.add_(g, alpha=factor)
        self.last_loss = float(loss.detach())
        self.steps_done += 1
        self.seconds += time.perf_counter() - start
        return self.last_loss

    def loss(self, render: Render) -> torch.Tensor:
        """Unweighted loss on freshly rendered windows."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------
    def _original(self, index: Sequence[int], y0: int, x0: int, h: int, w: int) -> torch.Tensor:
        region = self.image[(*index, slice(y0, y0 + h), slice(x0, x0 + w))]
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(region, -1, 0))).to(self.device)

    def _random_window(self, h: int, w: int) -> tuple[tuple[int, ...], int, int]:
        index = self.planes[int(self.rng.integers(len(self.planes)))]
        y0 = int(self.rng.integers(self.plane_shape[0] - h + 1))
        x0 = int(self.rng.integers(self.plane_shape[1] - w + 1))
        return index, y0, x0

    # -- report ----------------------------------------------------------------------------
    def segmenter(self) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
        """How agreement is measured: ``(segment(plane) -> labels, method name)``."""
        if self.diameter is None:
            first = self.image[(*self.planes[0], ..., self.settings.channel)]
            self.diameter = estimate_diameter(first)
        d = self.diameter
        from napari_inif.core.guidance.segmentation import segment_classical

        return (lambda plane: segment_classical(plane, d)), self.segmenter_name()

    def agreement(self, original: np.ndarray, decoded: np.ndarray) -> Agreement:
        """Segmentation agreement of the original and decoded canonical arrays
        ``(*coord_shape, C)`` on the guidance channel, over up to :data:`MAX_PLANES` planes."""
        segment, method = self.segmenter()
        c = self.settings.channel
        a = np.stack([original[(*i, ..., c)] for i in self.planes]).astype(np.float32)
        b = np.stack([decoded[(*i, ..., c)] for i in self.planes]).astype(np.float32)
        return segmentation_agreement(a, b, segment, method=method)

    def record(
        self, agreement: Agreement | None = None, *, placeholder: bool = False
    ) -> dict[str, Any]:
        """What the header says about the guidance (``placeholder``: the longest values it
        can hold, to size the header before the fit).

        Kept short on purpose: at high ratios every header byte is taken from the weights
        (a 1 KB file loses about 8 % of its payload to this record).  Patch, period and
        time spent are in :attr:`steps_done`, :attr:`seconds` and the fit's progress.
        """
        rec: dict[str, Any] = {
            "name": self.name,
            "weight": 99.999 if placeholder else round(self.settings.weight, 3),
        }
        if self.model_name:
            rec["model"] = self.model_name
        if self.diameter is not None or placeholder:
            rec["diameter"] = 9999.9 if placeholder else round(float(self.diameter), 1)
        if placeholder:
            method = self.segmenter_name()
            agreement = Agreement(0.999, 0.999, 0.999, 99999, 99999, method)
        if agreement is not None:
            rec["agreement"] = agreement.as_dict()
        return rec

    def segmenter_name(self) -> str:
        """Name of the segmentation used for the agreement (the model is in the record)."""
        return "classical"


# -- SSIM ---------------------------------------------------------------------------------


def _gaussian_window(size: int = 11, sigma: float = 1.5, device: Any = None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_loss(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """``1 - SSIM`` of ``(C, H, W)`` or ``(B, C, H, W)`` tensors (Gaussian window 11, 1.5)."""
    if x.ndim == 3:
        x, y = x[None], y[None]
    c = x.shape[1]
    size = min(11, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2
    g = _gaussian_window(size, 1.5 * size / 11, x.device)
    wy = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    wx = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wy, groups=c), wx, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return 1 - s.mean()


class SSIMGuidance(Guidance):
    """``1 - SSIM`` on random windows of all channels."""

    name = "ssim"
    description = "structural similarity on random windows (no model needed)"

    def loss(self, render: Render) -> torch.Tensor:
        h, w = min(self.patch, self.plane_shape[0]), min(self.patch, self.plane_shape[1])
        total = torch.zeros((), device=self.device)
        for _ in range(self.batch):
            index, y0, x0 = self._random_window(h, w)
            decoded = render(index, y0, x0, h, w)
            total = total + ssim_loss(decoded, self._original(index, y0, x0, h, w))
        return total / self.batch


# -- Cellpose-based guidance ---------------------------------------------------------------


class _CellposeGuidance(Guidance):
    """Common part: the frozen network, per-plane normalisation, window geometry."""

    needs_model = True

    def __init__(
        self,
        settings: GuidanceSettings,
        image: np.ndarray,
        device: torch.device,
        seed: int = 0,
        *,
        net: Any = None,
    ):
        super().__init__(settings, image, device, seed)
        if net is None:
            from napari_inif.core.guidance.cellpose_net import load_cellpose

            net = load_cellpose(settings.model or "", device=device)
        self.net = net.to(device)
        self.model_name = net.name
        if self.diameter is None:
            self.diameter = estimate_diameter(image[(*self.planes[0], ..., settings.channel)])
        r = net.rescale(self.diameter)
        H, W = self.plane_shape
        if net.fixed_size:
            self.patch = net.fixed_size
        self.win = (min(H, max(1, round(self.patch / r))), min(W, max(1, round(self.patch / r))))
        d = net.divisor
        if net.fixed_size:
            self.net_size = (net.fixed_size, net.fixed_size)
        else:
            self.net_size = tuple(max(d, round(n * r / d) * d) for n in self.win)
        # Windows shrunk for the network are sampled on a 2x finer grid and box-filtered,
        # rather than rendered at full resolution (a 200-pixel nucleus at diameter 30 would
        # cost 40x the samples).
        self.supersample = 2 if self.net_size[0] < 0.75 * self.win[0] else 1
        self.max_windows = 256 if device.type == "cpu" else 1024
        # Cellpose's normalize99 of each plane, expressed on the fitted (normalised) values.
        c = settings.channel
        self.norm = {}
        for index in self.planes:
            lo, hi = np.percentile(image[(*index, ..., c)], (1, 99))
            self.norm[index] = (float(lo), float(max(hi - lo, 1e-3)))

    def _view_size(self) -> tuple[int, int]:
        s = self.supersample
        return (s * self.net_size[0], s * self.net_size[1])

    def decoded_input(
        self, render: Render, index: tuple[int, ...], y0: int, x0: int
    ) -> torch.Tensor:
        """Network input ``(1, nchan, *net_size)`` of a window of the field, with gradient."""
        h, w = self.win
        return self._to_net(render(index, y0, x0, h, w, self._view_size()), index)

    def original_input(self, index: tuple[int, ...], y0: int, x0: int) -> torch.Tensor:
        """The same view of the original: sampled at the same points (bilinear)."""
        h, w = self.win
        values = self._original(index, y0, x0, h, w)[None]
        size = self._view_size()
        if size != (h, w):
            values = F.interpolate(values, size=size, mode="bilinear", align_corners=False)
        return self._to_net(values[0], index)

    def _to_net(self, values: torch.Tensor, index: tuple[int, ...]) -> torch.Tensor:
        lo, span = self.norm[index]
        c = self.settings.channel
        x = ((values[c : c + 1] - lo) / span)[None]
        if self.supersample > 1:
            x = F.avg_pool2d(x, self.supersample)
        return self.net.pad_input(x)

    def segmenter(self) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
        """Segment with the guidance network itself."""
        d = self.diameter
        net = self.net

        def segment(plane: np.ndarray) -> np.ndarray:
            import warnings

            with warnings.catch_warnings():  # Cellpose's dynamics builds a sparse tensor
                warnings.filterwarnings("ignore", message=".*[Ss]parse invariant checks.*")
                return net.segment(plane, diameter=d)

        return segment, self.segmenter_name()

    def segmenter_name(self) -> str:
        """Cellpose (the record names the model)."""
        return "cellpose"

    def _windows(self, limit: int) -> list[tuple[tuple[int, ...], int, int]]:
        """A grid of windows with half-window overlap over the guidance planes (at most
        ``limit``, a random subset beyond)."""
        (H, W), (h, w) = self.plane_shape, self.win
        ys = np.unique(np.linspace(0, H - h, max(1, math.ceil(2 * H / h) - 1)).round().astype(int))
        xs = np.unique(np.linspace(0, W - w, max(1, math.ceil(2 * W / w) - 1)).round().astype(int))
        all_windows = [(i, int(y), int(x)) for i in self.planes for y in ys for x in xs]
        if len(all_windows) > limit:
            keep = self.rng.choice(len(all_windows), limit, replace=False)
            all_windows = [all_windows[k] for k in sorted(keep)]
        return all_windows


class PerceptualGuidance(_CellposeGuidance):
    """Cellpose-encoder feature distance on random windows."""

    name = "perceptual"
    description = "distance of frozen Cellpose encoder features (needs Cellpose + a model)"

    def loss(self, render: Render) -> torch.Tensor:
        h, w = self.win
        total = torch.zeros((), device=self.device)
        for _ in range(self.batch):
            index, y0, x0 = self._random_window(h, w)
            with torch.no_grad():
                target = self.net.features(self.original_input(index, y0, x0))
            feats = self.net.features(self.decoded_input(render, index, y0, x0))
            for f, t in zip(feats, target, strict=True):
                total = total + F.mse_loss(f, t) / (t.square().mean() + 1e-6)
        return total / self.batch


class SegmentationGuidance(_CellposeGuidance):
    """Cellpose flows + cell probability of decoded tiles against the original's."""

    name = "segmentation"
    description = "Cellpose flows and cell probability (needs Cellpose + a model)"

    def __init__(
        self,
        settings: GuidanceSettings,
        image: np.ndarray,
        device: torch.device,
        seed: int = 0,
        *,
        net: Any = None,
    ):
        super().__init__(settings, image, device, seed, net=net)
        self.windows = self._windows(self.max_windows)
        targets = []
        with torch.no_grad():
            for index, y0, x0 in self.windows:
                targets.append(self.net(self.original_input(index, y0, x0)))
        self.targets = torch.cat(targets).float()

    def loss(self, render: Render) -> torch.Tensor:
        n = min(self.batch, len(self.windows))
        picks = self.rng.choice(len(self.windows), n, replace=False)
        inputs = [self.decoded_input(render, *self.windows[k]) for k in picks]
        y = self.net(torch.cat(inputs)).float()
        t = self.targets[torch.as_tensor(picks, device=self.device)]
        return cellpose_loss(y, t)


def cellpose_loss(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cellpose's training loss against network outputs of the original, 0 when
    ``y == target``: flow MSE / 2 + KL divergence of the cell probability.

    Unlike in training, the flow error is weighted by the target's cell probability:
    Cellpose's dynamics only follow the flows of pixels inside cells, so background flows
    do not change any mask, while the flows between touching cells decide whether they
    are split.
    """
    p = torch.sigmoid(target[:, 2])
    err = (y[:, :2] - target[:, :2]).square().mean(dim=1)
    flows = (err * p).sum() / (2 * p.sum().clamp(min=1.0))
    prob = F.binary_cross_entropy_with_logits(y[:, 2], p) - F.binary_cross_entropy_with_logits(
        target[:, 2], p
    )
    return flows + prob


# -- registry ------------------------------------------------------------------------------


def register_guidance(cls: type[Guidance]) -> type[Guidance]:
    """Register a :class:`Guidance` subclass under ``cls.name`` (usable as a decorator)."""
    GUIDANCES.register(cls.name, cls, cls.description, needs_model=cls.needs_model)
    return cls


def guidance_names() -> list[str]:
    """Registered guidance names, ``"none"`` first."""
    return ["none", *sorted(k for k in GUIDANCES if k != "none")]


def make_guidance(
    settings: GuidanceSettings | CompressionConfig,
    image: np.ndarray,
    device: torch.device,
    seed: int = 0,
    **kw: Any,
) -> Guidance | None:
    """Build the guidance named in ``settings`` (a :class:`GuidanceSettings` or a config)
    for the canonical normalised ``image``; ``None`` for ``"none"``."""
    if not isinstance(settings, GuidanceSettings):
        settings = GuidanceSettings.from_config(settings)
    factory = GUIDANCES.get(settings.name)  # ValueError naming the registered ones
    if factory is None:
        return None
    return factory(settings, image, device, seed, **kw)


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def guidance_summary(record: Any) -> str:
    """One line about the guidance record of a header (``fit["guidance"]``), for
    ``inif info`` and the Inspect widget; tolerant of missing or malformed fields."""
    if not isinstance(record, dict):
        return "?"
    parts = [str(record.get("name", "?"))]
    if record.get("model"):
        parts.append(f"model {record['model']}")
    parts.append(f"weight {_fmt(record.get('weight'), 2)}")
    if record.get("diameter") is not None:
        parts.append(f"diameter {_fmt(record.get('diameter'), 1)} px")
    a = record.get("agreement")
    if isinstance(a, dict):
        parts.append(
            f"segmentation agreement F1 {_fmt(a.get('f1'))}, AP@0.5 {_fmt(a.get('ap'))}, "
            f"matched IoU {_fmt(a.get('mean_iou'))} ({_fmt(a.get('n_decoded'))} decoded / "
            f"{_fmt(a.get('n_original'))} original objects, {a.get('method', '?')})"
        )
    return "; ".join(parts)
