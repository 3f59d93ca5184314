"""Benchmarks: napari-inif against plain SIREN and classic codecs, speed and memory.

Qt-free; run it with ``inif bench`` (see :func:`run_bench` and :class:`BenchSettings`).
Rows are registries by name: napari-inif configurations in :data:`METHODS`, classic
codecs in :data:`CODECS`.
"""

from .cases import DEFAULT_CASES, QUICK_CASES, Case
from .codecs import CODECS, ClassicCodec, match_size, register_codec
from .methods import METHODS, Method, register_method
from .rd import RDRow
from .runner import BenchResult, BenchSettings, machine_info, quick_settings, run_bench
from .speed import SpeedRow

__all__ = [
    "CODECS",
    "DEFAULT_CASES",
    "METHODS",
    "QUICK_CASES",
    "BenchResult",
    "BenchSettings",
    "Case",
    "ClassicCodec",
    "Method",
    "RDRow",
    "SpeedRow",
    "machine_info",
    "match_size",
    "quick_settings",
    "register_codec",
    "register_method",
    "run_bench",
]
