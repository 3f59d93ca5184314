"""Registries: every pluggable piece of napari-inif is found by name here.

One small generic :class:`Registry` serves the field families (``architecture``),
the optimisers, the guidance losses and the classic codecs.  A name is registered with
its implementation or lazily with the implementation's import path
(``"package.module:attribute"``), a one-line description and optional metadata, so that
listing the names, validating a :class:`~napari_inif.core.config.CompressionConfig` or
building the CLI and the widget imports no implementation (and no torch).

The built-in names are registered at the bottom of this module; a plugin or a script adds
its own with ``ARCHITECTURES.register("mine", factory, "what it is")``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "ARCHITECTURES",
    "CODECS",
    "GUIDANCES",
    "OPTIMIZERS",
    "Entry",
    "Registry",
    "field_kind",
]

T = TypeVar("T")
_MISSING = object()


@dataclass
class Entry(Generic[T]):
    """One registered name: its implementation (or import path), description, metadata."""

    name: str
    target: T | str | None
    description: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> T | None:
        """The implementation, importing it on first use."""
        if isinstance(self.target, str):
            module, _, attribute = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attribute)
        return self.target  # type: ignore[return-value]


class Registry(Generic[T]):
    """Names -> implementations, in registration order.

    ``registry[name]`` (or :meth:`get`) loads and returns the implementation; ``name in
    registry``, :meth:`names`, :meth:`describe` and :meth:`meta` never import it.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, target: T | str | None, description: str = "", **meta: Any
    ) -> None:
        """Register ``target`` (an object or a ``"module:attribute"`` path) as ``name``."""
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.kind} name must be a non-empty string")
        self._entries[name] = Entry(name, target, description, dict(meta))

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests register throwaway names)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def entry(self, name: str) -> Entry[T]:
        """The entry of ``name``; ``ValueError`` naming the registered ones if unknown."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            ) from None

    def describe(self, name: str) -> str:
        """One line about ``name``, for help texts and tooltips."""
        return self.entry(name).description

    def meta(self, name: str) -> Mapping[str, Any]:
        """Metadata registered with ``name`` (e.g. ``needs_model`` of a guidance)."""
        return self.entry(name).meta

    def get(self, name: str, default: Any = _MISSING) -> T:
        """The implementation of ``name`` (imported on first use); ``default`` if given and
        ``name`` is unknown, else ``ValueError`` naming the registered ones."""
        if default is not _MISSING and name not in self._entries:
            return default
        return self.entry(name).load()  # type: ignore[return-value]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, target: T) -> None:
        """Replace the implementation of ``name``, keeping its description and metadata."""
        old = self._entries.get(name)
        self._entries[name] = Entry(
            name, target, old.description if old else "", dict(old.meta) if old else {}
        )

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


# -- the built-in names ----------------------------------------------------------------------

#: Field families.  ``kind="siren"`` (the default): per-block networks,
#: ``factory(arch, n_blocks, *, w0, w0_first, generator) -> BatchedSiren``;
#: ``kind="grid"``: one latent-grid field over the whole image (:mod:`.engine.grid`), the
#: target being its field class.
ARCHITECTURES: Registry[Any] = Registry("architecture")
_SIREN = "napari_inif.core.codec.siren"
ARCHITECTURES.register(
    "inif", f"{_SIREN}:inif", "SIREN, per-neuron frequencies learned in the first layer"
)
ARCHITECTURES.register(
    "inif-all", f"{_SIREN}:inif_all", "SIREN, per-neuron frequencies learned in every layer"
)
ARCHITECTURES.register("siren", f"{_SIREN}:siren", "plain SIREN, fixed frequencies")
ARCHITECTURES.register(
    "grid",
    "napari_inif.core.codec.grid:GridField",
    "quantised latent grids and a tiny synthesis network, entropy coded (as in C3)",
    kind="grid",
)


def field_kind(architecture: str) -> str:
    """``"siren"`` or ``"grid"``: which engine path and file an architecture takes."""
    if architecture not in ARCHITECTURES:
        return "siren"
    return str(ARCHITECTURES.meta(architecture).get("kind", "siren"))


#: Optimisers: ``factory(params, lr) -> torch.optim.Optimizer`` (a learned optimiser such
#: as the INIF paper's VeLO plugs in here).
OPTIMIZERS: Registry[Any] = Registry("optimizer")
_FITTER = "napari_inif.core.codec.fitter"
OPTIMIZERS.register("adam", f"{_FITTER}:adam", "Adam (foreach), cosine schedule")
OPTIMIZERS.register("adamax", f"{_FITTER}:adamax", "Adamax, cosine schedule")

#: Guidance losses: a :class:`~napari_inif.core.guidance.losses.Guidance` subclass, or
#: ``None`` for plain MSE.  ``needs_model``: the guidance needs a Cellpose model.
GUIDANCES: Registry[Any] = Registry("guidance")
_LOSSES = "napari_inif.core.guidance.losses"
GUIDANCES.register("none", None, "pixel MSE only", needs_model=False)
GUIDANCES.register(
    "ssim",
    f"{_LOSSES}:SSIMGuidance",
    "structural similarity on random windows (no model needed)",
    needs_model=False,
)
GUIDANCES.register(
    "perceptual",
    f"{_LOSSES}:PerceptualGuidance",
    "distance of frozen Cellpose encoder features (needs Cellpose + a model)",
    needs_model=True,
)
GUIDANCES.register(
    "segmentation",
    f"{_LOSSES}:SegmentationGuidance",
    "Cellpose flows and cell probability (needs Cellpose + a model)",
    needs_model=True,
)

#: Classic codecs (imagecodecs / ffmpeg): hybrid priors and benchmark baselines, a
#: :class:`~napari_inif.core.classic.codec.ClassicCodec` each.
CODECS: Registry[Any] = Registry("codec")
_IMAGES = "napari_inif.core.classic.images"
CODECS.register("jpegxl", f"{_IMAGES}:JPEGXL", "JPEG XL (libjxl, via imagecodecs)")
CODECS.register("jpeg2k", f"{_IMAGES}:JPEG2K", "JPEG 2000 (OpenJPEG, via imagecodecs)")
CODECS.register("htj2k", f"{_IMAGES}:HTJ2K", "High-throughput JPEG 2000 (OpenJPH, via imagecodecs)")
CODECS.register("avif", f"{_IMAGES}:AVIF", "AVIF 4:0:0 (libavif/libaom, via imagecodecs)")
CODECS.register(
    "hevc",
    "napari_inif.core.classic.hevc:HEVC",
    "HEVC video of neighbouring planes (ffmpeg + libx265)",
)
