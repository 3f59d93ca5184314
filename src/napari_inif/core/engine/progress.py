"""What a running fit reports, and the one loop that drives a fit generator to its end."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from napari_inif.core.errors import Cancelled

T = TypeVar("T")

if TYPE_CHECKING:
    from napari_inif.core.codec.decode import InifArray

__all__ = ["QUALITY_SECONDS_PER_VOXEL", "QUANTISE_SECONDS", "Progress", "drive", "finish_seconds"]

#: Seconds of the phases after the last step, measured on the development CPU (one torch
#: thread, load ~2): rate control took 0.78 s for 7.6k weights, 1.24 s for 31k and 1.43 s
#: for 66k (a fixed part, then per weight); measuring the quality decodes every voxel
#: (0.16-0.46 s for 270k voxels).  An estimate for the ETA, not a promise.
QUANTISE_SECONDS = (0.7, 12e-6)  # fixed, per weight
QUALITY_SECONDS_PER_VOXEL = 1.5e-6


@dataclass(frozen=True)
class Progress:
    """One report of a running fit.

    ``psnr`` is measured on the step's random coordinates, against the data range, in
    dB; ``preview`` is a lazy view of the current (unquantised) field when asked for.
    """

    step: int
    steps: int
    loss: float
    psnr: float
    elapsed: float
    eta: float
    phase: str  # "read", "fit", "quantise", "quality", "done"
    preview: InifArray | None = None


def finish_seconds(n_weights: int, n_voxels: int) -> float:
    """Estimated seconds of quantisation, entropy coding and the quality measurement that
    follow the last fitting step (what the ETA adds to the steps left)."""
    fixed, per_weight = QUANTISE_SECONDS
    return fixed + per_weight * n_weights + QUALITY_SECONDS_PER_VOXEL * n_voxels


def drive(
    gen: Generator[Progress, None, T],
    on_progress: Callable[[Progress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> T:
    """Run a fit generator (:func:`napari_inif.core.engine.fit`) to the end; its result.

    ``cancel()`` is polled after every progress report; when it returns true the generator
    is closed (which cancels its pending work) and :class:`Cancelled` is raised.
    """
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            if on_progress is not None:
                on_progress(p)
            if cancel is not None and cancel():
                raise Cancelled("compression cancelled")
    finally:
        gen.close()
