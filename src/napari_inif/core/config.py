"""One validated configuration drives the CLI flags, the widget and the file header.

Torch-free: names are checked against :mod:`napari_inif.core.registry`, which lists them
without importing their implementations.

Each field carries its description in ``dataclasses.field(metadata=...)`` (made by
:func:`setting`): help text, group, where its choices come from (a fixed tuple or a
:class:`~napari_inif.core.registry.Registry`, read when asked, so a name registered later
is offered too), the allowed :class:`Range`, what ``None`` means and when the field
matters at all.  :func:`settings` reads that back as :class:`Setting` records; the CLI's
``inif compress`` flags and the Compress widget's controls are generated from them, and
:meth:`CompressionConfig.__post_init__` validates with the same ranges and choices.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from types import NoneType, UnionType
from typing import Any

from napari_inif.core.registry import ARCHITECTURES, CODECS, GUIDANCES, OPTIMIZERS, Registry

__all__ = ["GROUPS", "MODES", "CompressionConfig", "Range", "Setting", "setting", "settings"]

#: Compression modes: the field alone, or a classic-codec prior plus a residual field.
MODES = ("field", "hybrid")

#: Setting groups, in display order, with their titles (CLI argument groups, widget sections).
GROUPS: dict[str, str] = {
    "basic": "compression",
    "hybrid": "hybrid mode (a classic codec codes the image, the field its residual)",
    "guidance": "guidance (extra losses that protect segmentation)",
    "advanced": "advanced fitting",
}


@dataclass(frozen=True)
class Range:
    """Allowed numbers: from ``lo`` to ``hi`` (``None``: unbounded), ends closed unless open."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def __str__(self) -> str:
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"in {left}{lo:g}, {hi:g}{right}"
        if lo is not None:
            return f"above {lo:g}" if self.lo_open else f"at least {lo:g}"
        if hi is not None:
            return f"below {hi:g}" if self.hi_open else f"at most {hi:g}"
        return "any number"


def setting(
    default: Any,
    help: str,
    *,
    group: str = "advanced",
    choices: tuple[Any, ...] = (),
    suggestions: tuple[str, ...] = (),
    registry: Registry[Any] | None = None,
    range: Range | None = None,
    step: float | None = None,
    none: str | None = None,
    active: Callable[[Mapping[str, Any]], bool] | None = None,
    validate: Callable[[Any], object] | None = None,
) -> Any:
    """A config field with its description in ``metadata``.

    Parameters
    ----------
    default
        The field's default.
    help
        One line for the CLI help and the widget's tooltip.
    group
        One of :data:`GROUPS` (``"basic"`` controls are shown first, ``"advanced"`` last).
    choices
        The only values allowed.
    suggestions
        Usual values, others allowed (e.g. ``device``: ``cuda:1``).
    registry
        The registry whose names are the allowed values (read when asked).
    range
        The allowed numbers.
    step
        A sensible increment for interactive controls.
    none
        What ``None`` means (``"auto"``, ``"off"``), for optional fields.
    active
        Whether the field matters given all values (``False``: ignored, shown disabled).
    validate
        Check of the value instead of the registry's (raises ``ValueError``), run when active.
    """
    meta = {
        "help": help,
        "group": group,
        "choices": tuple(choices),
        "suggestions": tuple(suggestions),
        "registry": registry,
        "range": range,
        "step": step,
        "none": none,
        "active": active,
        "validate": validate,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Setting:
    """What :func:`settings` reports about one config field."""

    name: str
    type: type  # the value's type, without ``None``
    optional: bool  # ``None`` allowed
    default: Any
    help: str = ""
    group: str = "advanced"
    fixed_choices: tuple[Any, ...] = ()
    suggestions: tuple[str, ...] = ()
    registry: Registry[Any] | None = None
    range: Range | None = None
    step: float | None = None
    none: str | None = None
    active_when: Callable[[Mapping[str, Any]], bool] | None = None
    validate: Callable[[Any], object] | None = None

    def choices(self) -> tuple[Any, ...]:
        """The allowed values now (a registry's names at the time of the call), or ``()``."""
        if self.registry is not None:
            return tuple(self.registry.names())
        return self.fixed_choices

    def describe(self, value: Any) -> str:
        """One line about a registered ``value`` (``""`` if none)."""
        if self.registry is not None and value in self.registry:
            return self.registry.describe(value)
        return ""

    def is_active(self, values: Mapping[str, Any]) -> bool:
        """Whether this field matters when the config has ``values``."""
        return self.active_when is None or bool(self.active_when(values))

    def check(self, value: Any, values: Mapping[str, Any]) -> None:
        """``ValueError`` unless ``value`` is allowed (``values``: the whole config)."""
        if value is None:
            if not self.optional:
                raise ValueError(f"{self.name} must not be None")
            return
        if self.range is not None and value not in self.range:
            raise ValueError(f"{self.name} must be {self.range}, got {value!r}")
        if self.fixed_choices and value not in self.fixed_choices:
            options = ", ".join(map(str, self.fixed_choices))
            raise ValueError(f"{self.name} must be one of {options}, got {value!r}")
        if not self.is_active(values):
            return
        if self.validate is not None:
            self.validate(value)
        elif self.registry is not None:
            self.registry.entry(value)  # ValueError naming the registered ones


def settings(config_cls: type | None = None) -> tuple[Setting, ...]:
    """The fields of ``config_cls`` (default :class:`CompressionConfig`) as :class:`Setting`.

    Works for any dataclass, e.g. a subclass adding fields; a field made without
    :func:`setting` gets an empty help text and the ``"advanced"`` group.
    """
    config_cls = CompressionConfig if config_cls is None else config_cls
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in fields(config_cls):
        kind, optional = _base_type(hints[f.name])
        default = f.default if f.default is not MISSING else None
        meta = f.metadata
        out.append(
            Setting(
                name=f.name,
                type=kind,
                optional=optional,
                default=default,
                help=meta.get("help", ""),
                group=meta.get("group", "advanced"),
                fixed_choices=tuple(meta.get("choices", ())),
                suggestions=tuple(meta.get("suggestions", ())),
                registry=meta.get("registry"),
                range=meta.get("range"),
                step=meta.get("step"),
                none=meta.get("none"),
                active_when=meta.get("active"),
                validate=meta.get("validate"),
            )
        )
    return tuple(out)


def _base_type(hint: Any) -> tuple[type, bool]:
    """``float | None`` -> ``(float, True)``."""
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not NoneType]
        optional = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 else object), optional
    return hint, False


def _field_mode(values: Mapping[str, Any]) -> bool:
    return values.get("mode", "field") == "field"


def _guided(values: Mapping[str, Any]) -> bool:
    return _field_mode(values) and values.get("guidance", "none") != "none"


def _hybrid(values: Mapping[str, Any]) -> bool:
    return values.get("mode") == "hybrid"


def _check_prior(name: str) -> None:
    from napari_inif.core.hybrid.prior import get_prior  # torch-free

    get_prior(name)  # ValueError naming the priors usable here


_POSITIVE = Range(0, lo_open=True)


@dataclass(frozen=True)
class CompressionConfig:
    """Everything that decides how an image is compressed.

    Each field's help, group, choices and range are in its metadata; read them with
    :func:`settings` (``inif compress --help`` prints them).  Notes beyond one line are
    comments on the fields below.
    """

    ratio: float = setting(
        64.0,
        "compression ratio: raw bytes / file bytes, the whole file counted",
        group="basic",
        range=Range(1, lo_open=True),
        step=1.0,
    )
    architecture: str = setting(
        "inif", "network family of the field", group="basic", registry=ARCHITECTURES
    )
    steps: int = setting(
        4000,
        "optimisation steps (the fit may stop earlier on time_limit or target_psnr)",
        group="basic",
        range=Range(1),
        step=100,
    )
    time_limit: float | None = setting(
        None,
        "wall-clock budget of the fit in seconds",
        group="basic",
        range=_POSITIVE,
        step=10.0,
        none="off",
    )
    target_psnr: float | None = setting(
        None,
        "stop once the PSNR on the training batches (dB, data range) exceeds this",
        group="basic",
        range=_POSITIVE,
        step=0.5,
        none="off",
    )
    # Many cheap steps beat few large ones: at equal compute, 1200 steps of 8192 points gave
    # 29.9 dB where 300 steps of 32768 gave 27.7 dB (cancer-cell stack, 256x), and 41.8 vs
    # 39.1 dB on a BBBC034 image at 64x.
    batch_size: int = setting(
        8192,
        "coordinates sampled per step, over all blocks together (at least 256 per block)",
        range=Range(64),
        step=1024,
    )
    # Smaller per-block batches use lr * (points / 8192) ** 0.25
    # (napari_inif.core.codec.fitter.LR_REFERENCE_POINTS).
    lr: float = setting(
        1e-3,
        "peak learning rate (cosine decay to 5%) of a block trained on 8192 points per step",
        range=Range(0, 1, lo_open=True, hi_open=True),
        step=1e-4,
    )
    optimizer: str = setting("adam", "optimiser", registry=OPTIMIZERS)
    freq_lr_scale: float = setting(
        20.0, "learning-rate multiplier of the learnable log-frequencies", range=Range(0), step=1.0
    )
    w0: float = setting(30.0, "initial frequency of the hidden sine layers", range=_POSITIVE)
    w0_first: float = setting(30.0, "initial frequency of the first sine layer", range=_POSITIVE)
    depth: int | None = setting(
        None,
        "number of linear layers (auto: chosen from the budget)",
        range=Range(2, 16),
        none="auto",
    )
    params_per_block: int = setting(
        12000,
        "parameters a block aims at; decides how many blocks the image is split into",
        range=Range(100),
        step=1000,
    )
    max_block_voxels: int = setting(
        1 << 20, "upper bound on the pixels of one block (bounds memory)", range=Range(256)
    )
    allocation: str = setting(
        "content",
        "share of the budget per block: by block standard deviation (content) or equal",
        choices=("content", "uniform"),
    )
    # Keeps the fields' edge effects off the tile borders (no seams).
    block_margin: int = setting(
        2,
        "pixels beyond its tile, on each side, that each block's field is also fitted on",
        range=Range(0, 64),
    )
    # The rate control then picks the finest quantiser that fits the byte budget.
    bits: int = setting(8, "nominal bits per weight used to size the network", range=Range(4, 16))
    seed: int = setting(0, "seed of initialisation and coordinate sampling")
    device: str = setting(
        "auto",
        "where to fit: auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps",
        group="basic",
        suggestions=("auto", "cpu", "cuda", "mps"),
    )
    # See napari_inif.core.hybrid.
    mode: str = setting(
        "field",
        "field: the network codes the image; hybrid: a classic codec codes it and the "
        "network its residual (faster)",
        group="basic",
        choices=MODES,
    )
    prior: str = setting(
        "avif",
        "classic codec of the hybrid mode",
        group="hybrid",
        registry=CODECS,
        active=_hybrid,
        validate=_check_prior,
    )
    # Automatic: napari_inif.core.hybrid.prior.AUTO_PRIOR_FRACTION.
    prior_fraction: float | None = setting(
        None,
        "share of the file budget given to the codec prior",
        group="hybrid",
        range=Range(0, 1, lo_open=True, hi_open=True),
        step=0.05,
        none="auto",
        active=_hybrid,
    )
    guidance: str = setting(
        "none",
        "extra loss (field mode only)",
        group="guidance",
        registry=GUIDANCES,
        active=_field_mode,
    )
    guidance_weight: float = setting(
        1.0,
        "strength of the guidance; 1 is the recommended strength, 0 switches it off",
        group="guidance",
        range=Range(0, 100),
        step=0.1,
        active=_guided,
    )
    guidance_model: str | None = setting(
        None,
        "Cellpose model: built-in name (cyto3, nuclei, ...), weights file, or "
        "inif_nuclei_small (shipped with napari-inif)",
        group="guidance",
        none="none",
        active=_guided,
    )
    guidance_diameter: float | None = setting(
        None,
        "typical cell diameter in pixels",
        group="guidance",
        range=_POSITIVE,
        step=1.0,
        none="estimated",
        active=_guided,
    )
    guidance_channel: int = setting(
        0, "channel to segment", group="guidance", range=Range(0), active=_guided
    )
    # Automatic: CPU 128 every 2 steps; GPU 224, four windows, every step.
    guidance_patch: int | None = setting(
        None,
        "window edge of the guidance (network pixels)",
        group="guidance",
        range=Range(16),
        step=16,
        none="by device",
        active=_guided,
    )
    guidance_every: int | None = setting(
        None,
        "guide every K steps",
        group="guidance",
        range=Range(1),
        none="by device",
        active=_guided,
    )

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for s in settings(type(self)):
            s.check(values[s.name], values)
        if self.mode != "field" and self.guidance != "none":
            raise ValueError(
                "guidance works in mode 'field' only (in hybrid mode the field is a residual)"
            )
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
