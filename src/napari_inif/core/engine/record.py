"""The fit record: what a file's header says about how it was fitted, on either path."""

from __future__ import annotations

from typing import Any

from napari_inif.core.config import CompressionConfig
from napari_inif.core.metrics.quality import Quality
from napari_inif.core.registry import field_kind

__all__ = ["PLACEHOLDER_QUALITY", "fit_record"]

#: Metrics of full printed length: the header is sized with them before the fit.
PLACEHOLDER_QUALITY = Quality(99.9999, 99.9999, 0.9999, 65535.0)


def fit_record(
    config: CompressionConfig,
    *,
    steps: int,
    seconds: float,
    device: str,
    metrics: Quality | None,
    engine: str | None = None,
    tasks: int | None = None,
    guidance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The header's ``fit`` entry.

    ``engine``/``tasks`` are recorded for block-streamed fits, whose SSIM is the
    voxel-weighted mean of per-block SSIMs (``ssim_per_block``); ``metrics=None`` records
    that the quality pass was skipped.
    """
    record: dict[str, Any] = {
        "architecture": config.architecture,
        "steps": steps,
        "seconds": round(seconds, 2),
        "device": device,
        "seed": config.seed,
    }
    if field_kind(config.architecture) == "siren":  # the grid field has no frequencies
        record |= {"w0": config.w0, "w0_first": config.w0_first}
    if engine is not None:
        record |= {"engine": engine, "tasks": tasks}
    if metrics is None:
        record["quality"] = "skipped"
    else:
        record |= metrics.as_dict()
        if engine is not None:
            record["ssim_per_block"] = True
    if guidance is not None:
        record["guidance"] = guidance
    return record
