"""The napari-inif rows of the benchmark, registered by name.

A :class:`Method` is a set of :class:`~napari_inif.core.CompressionConfig` fields on top
of the ratio, steps, seed and device the benchmark chooses.  Rows whose fields the
installed core does not have yet (hybrid mode, guidance) are listed as unavailable and
skipped with a message; once ``CompressionConfig`` gains those fields they simply run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["METHODS", "Method", "register_method"]


@dataclass(frozen=True)
class Method:
    """A napari-inif configuration compared in the benchmark.

    Attributes
    ----------
    name
        Registry key and the row name in tables.
    label
        Longer description for the docs.
    overrides
        ``CompressionConfig`` fields set for this row.
    guided
        Whether the row uses segmentation guidance (its segmentation agreement matters).
    cases
        Case names the row runs on (empty: all), e.g. nuclei images for a nuclei model.
    default
        Whether ``inif bench`` runs the row when no ``--methods`` are named.
    """

    name: str
    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    guided: bool = False
    cases: tuple[str, ...] = ()
    default: bool = True

    def runs_on(self, case: str) -> bool:
        """Whether this row is measured on the case named ``case``."""
        return not self.cases or case in self.cases

    def unavailable(self) -> str | None:
        """Why this row cannot run with the installed core, or ``None``."""
        from ..core import CompressionConfig

        known = {f.name for f in fields(CompressionConfig)}
        missing = sorted(set(self.overrides) - known)
        if missing:
            return f"CompressionConfig has no {', '.join(missing)} field(s) yet"
        try:
            self.config(ratio=16.0, steps=1, seed=0, device="cpu")
        except ValueError as exc:
            return str(exc)
        return None

    def config(
        self,
        *,
        ratio: float,
        steps: int,
        seed: int,
        device: str,
        extra: Mapping[str, Any] | None = None,
    ) -> Any:
        """The ``CompressionConfig`` of this row; ``extra`` fields apply on top of the row's."""
        from ..core import CompressionConfig

        values: dict[str, Any] = {"ratio": ratio, "steps": steps, "seed": seed, "device": device}
        values.update(self.overrides)
        values.update(extra or {})
        return CompressionConfig(**values)


#: napari-inif rows by name; ``inif`` is the reference whose file size sets every budget.
METHODS: dict[str, Method] = {}


def register_method(method: Method) -> None:
    """Add (or replace) a row in :data:`METHODS`."""
    METHODS[method.name] = method


for _method in (
    Method("inif", "napari-inif: SIREN with learnable frequencies (default config)"),
    Method(
        "siren",
        "plain SIREN: fixed w0 = 30, Adam, same parameter count and steps",
        {"architecture": "siren", "w0": 30.0, "w0_first": 30.0},
    ),
    # Extension points: these rows run once the core has the fields they pass.
    Method(
        "inif-hybrid",
        "napari-inif hybrid: classic codec prior + residual field",
        {"mode": "hybrid"},
    ),
    Method(
        "inif-guided",
        "napari-inif with segmentation guidance by the bundled small nuclei network",
        {"guidance": "segmentation", "guidance_model": "inif_nuclei_small"},
        guided=True,
        cases=("nuclei-2d", "cells-tyx-tiny"),
    ),
    # Not in the default run: at the bench's 1200 steps a grid fit of cells-tyx takes
    # ~8 minutes on 2 CPU cores (benchmarks/bench_grid.py measures it at fixed steps).
    Method(
        "grid",
        "latent-grid field: latent grids, tiny synthesis, context entropy coder",
        {"architecture": "grid"},
        default=False,
    ),
):
    register_method(_method)
