"""Benchmarks: napari-inif against plain SIREN and classic codecs, speed and memory.

Qt-free; run it with ``inif bench`` (see :func:`run_bench` and :class:`BenchSettings`).
Rows are registries by name: napari-inif configurations in :data:`METHODS`, classic
codecs in :data:`napari_inif.core.registry.CODECS` (the definitions of
:mod:`napari_inif.core.classic`, the same that hybrid priors use).
"""

from .cases import DEFAULT_CASES, QUICK_CASES, Case
from .methods import METHODS, Method, register_method
from .rd import RDRow
from .runner import BenchResult, BenchSettings, machine_info, quick_settings, run_bench
from .speed import SpeedRow

__all__ = [
    "DEFAULT_CASES",
    "METHODS",
    "QUICK_CASES",
    "BenchResult",
    "BenchSettings",
    "Case",
    "Method",
    "RDRow",
    "SpeedRow",
    "machine_info",
    "quick_settings",
    "register_method",
    "run_bench",
]
