"""What a running fit reports, and the one loop that drives a fit generator to its end."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from napari_inif.core.errors import Cancelled

if TYPE_CHECKING:
    from napari_inif.core.codec.decode import InifArray
    from napari_inif.core.codec.encoded import Encoded

__all__ = ["Progress", "drive"]


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


def drive(
    gen: Generator[Progress, None, Encoded],
    on_progress: Callable[[Progress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Encoded:
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
