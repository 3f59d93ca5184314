"""The engine: ONE way to turn an image into an :class:`~napari_inif.core.codec.encoded.Encoded`.

:func:`fit` takes an image in memory (a numpy array) or an
:class:`~napari_inif.core.io.source.ArraySource` (TIFF / Zarr / OME-Zarr read box by box)
and an executor (``client=None``: this process; a ``distributed.Client``: local processes
or a cluster), and picks the path:

* **in memory, in this process** (:mod:`.local`): all blocks share one step loop, so every
  option works: ``time_limit``, ``target_psnr``, previews, guidance, hybrid mode;
* **block-streamed** (:mod:`.distributed`): a store that is not loaded whole, or a Dask
  client; blocks are fitted in tasks of bounded memory.  Options that need the whole
  image in one process are refused up front with one clear line (:func:`streamed_refusal`),
  never silently dropped.

Both paths share the codec: the same plan, normalisation, :class:`BlockFitter
<napari_inif.core.codec.fitter.BlockFitter>`, rate control and fit record.  The CLI, the
Compress widget, the writer and the benchmark all call :func:`fit` / :func:`compress`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_inif.core.config import CompressionConfig
from napari_inif.core.engine.progress import Progress, drive
from napari_inif.core.registry import field_kind

if TYPE_CHECKING:
    from napari_inif.core.codec.encoded import Encoded
    from napari_inif.core.codec.gridfile import GridEncoded
    from napari_inif.core.io.source import ArraySource

__all__ = ["Progress", "compress", "drive", "fit", "streamed_refusal"]


def streamed_refusal(config: CompressionConfig, *, preview: bool = False) -> str | None:
    """Why ``config`` cannot run block-streamed (one line), or ``None`` if it can."""
    if field_kind(config.architecture) == "grid":
        return (
            f"architecture {config.architecture!r} fits one field over the whole image in "
            "one process: drop --workers/--scheduler, or use a TIFF/.npy that fits in memory"
        )
    if config.mode != "field":
        return (
            f"mode {config.mode!r} needs the whole image in one process (its classic-codec "
            "prior is coded over the whole image): drop --workers/--scheduler, or use a "
            "TIFF/.npy that fits in memory"
        )
    if config.guidance != "none":
        return (
            f"guidance {config.guidance!r} needs the whole image in one process (it decodes "
            "windows across blocks): drop --workers/--scheduler, or use a TIFF/.npy that "
            "fits in memory"
        )
    if config.time_limit is not None or config.target_psnr is not None:
        return (
            "a time limit or target PSNR needs all blocks in one step loop; block-streamed "
            "compression takes a number of steps (--steps)"
        )
    if preview:
        return "previews need all blocks in one process"
    return None


def fit(
    data: np.ndarray | ArraySource,
    config: CompressionConfig | None = None,
    *,
    axes: str | None = None,
    scale: tuple[float, ...] | None = None,
    unit: str | None = None,
    metadata: dict[str, Any] | None = None,
    preview_every: float | None = None,
    client: Any = None,
    streamed: bool | None = None,
    quality: bool = True,
    task_voxels: int | None = None,
    torch_threads: int | None = None,
) -> Generator[Progress, None, Encoded | GridEncoded]:
    """Fit an image into a field; yields :class:`Progress`, returns ``Encoded`` (a
    :class:`~napari_inif.core.codec.gridfile.GridEncoded` for the grid architecture).

    Parameters
    ----------
    data
        A numpy array (1 to 5 dimensions, uint8, uint16 or float32) or an ``ArraySource``.
    config
        How to compress (ratio, steps, device, mode, guidance, ...).
    axes, scale, unit
        Axis letters (e.g. ``"TZYX"``, guessed if omitted) and physical pixel size of an
        array; a source carries its own.
    metadata
        Small JSON-serialisable dict stored in the header.
    preview_every
        Seconds between progress reports that carry a lazy preview of the field.
    client
        ``None`` to run in this process, or a ``distributed.Client``.
    streamed
        Force the block-streamed path (``True``) or the in-memory one (``False``); by
        default an array or in-memory source without a client is fitted in memory.
    quality, task_voxels, torch_threads
        Block-streamed path only: measure PSNR/SSIM afterwards, task size, torch threads
        per cluster task (see :func:`.distributed.fit_source`).

    Raises
    ------
    ValueError
        Unsupported input, or an option the chosen path cannot honour (one line);
        :class:`~napari_inif.core.errors.BudgetError` for an unreachable ratio.
    """
    from napari_inif.core.io.source import ArraySource

    config = config or CompressionConfig()
    source = data if isinstance(data, ArraySource) else None
    if streamed is None:
        streamed = client is not None or (source is not None and source.kind != "numpy")
    if not streamed:
        from napari_inif.core.engine.local import fit_array

        if source is not None:
            data = source.array
            axes, scale, unit = source.axes, source.scale, source.unit
            metadata = {"source": source.name, **(metadata or {})}
        if field_kind(config.architecture) == "grid":
            from napari_inif.core.engine.grid import fit_grid_array, grid_refusal

            why = grid_refusal(config)
            if why is not None:
                raise ValueError(why)  # now, not at the generator's first step
            return fit_grid_array(
                np.asarray(data), config, axes=axes, scale=scale, unit=unit, metadata=metadata
            )
        return fit_array(
            np.asarray(data),
            config,
            axes=axes,
            scale=scale,
            unit=unit,
            metadata=metadata,
            preview_every=preview_every,
        )
    why = streamed_refusal(config, preview=preview_every is not None)
    if why is not None:
        raise ValueError(why)
    from napari_inif.core.engine.distributed import fit_source

    if source is None:
        source = ArraySource.from_array(
            np.asarray(data),
            axes,
            scale=scale,
            unit=unit,
            name=(metadata or {}).get("source", "array"),
        )
    return fit_source(
        source,
        config,
        client=client,
        quality=quality,
        task_voxels=task_voxels,
        torch_threads=torch_threads,
        metadata=metadata,
    )


def compress(
    data: np.ndarray | ArraySource,
    config: CompressionConfig | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    **kw: Any,
) -> Encoded | GridEncoded:
    """Run :func:`fit` to the end (``kw`` are its keywords); ``cancel()`` is polled at every
    progress report and raises :class:`~napari_inif.core.errors.Cancelled` when true."""
    return drive(fit(data, config, **kw), on_progress, cancel)
