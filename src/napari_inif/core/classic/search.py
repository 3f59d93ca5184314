"""The size search: the best quality knob whose codestreams fit a byte budget."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["search_quality"]


def search_quality(
    size_at: Callable[[float], int],
    budget: int,
    *,
    snap: Callable[[float], float] = float,
    iterations: int = 12,
    close: float = 0.995,
    resolution: float = 2e-3,
) -> float | None:
    """Bisect a knob in ``[0, 1]`` for the largest ``size_at(q)`` that is ``<= budget``.

    ``size_at`` should cache its results (the chosen knob is asked for again); ``snap``
    maps a knob to a codec setting (discrete codecs), so that no setting is tried twice.
    Sizes are nearly, not strictly, monotone in the knob: of the settings tried, the one
    with the largest size under the budget wins (the higher knob on a tie).  Stops early
    once a size reaches ``close`` times the budget (1: only at the knob's ``resolution``
    or after ``iterations`` halvings).  Returns ``None`` if even ``q = 0`` is
    over the budget.
    """
    tried: dict[float, int] = {}

    def fits(q: float) -> bool:
        if q not in tried:
            tried[q] = size_at(q)
        return tried[q] <= budget

    lo, hi = snap(0.0), snap(1.0)
    if not fits(lo):
        return None
    if not fits(hi):
        for _ in range(iterations):
            mid = snap((lo + hi) / 2)
            if mid in (lo, hi) or hi - lo < resolution:
                break
            if fits(mid):
                lo = mid
                if tried[mid] >= close * budget:
                    break
            else:
                hi = mid
    return max((q for q, n in tried.items() if n <= budget), key=lambda q: (tried[q], q))
