"""npe2 reader: ``*.inif`` files open as lazy multiscale image layers.

``napari_get_reader`` only looks at the path (suffix and magic bytes): it never raises
and imports neither torch nor the codec, so napari stays quick to start and to probe
files.  A damaged ``.inif`` file is reported in a napari notification that names the
problem (and opens no layer) instead of an exception inside napari.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["napari_get_reader", "read_inif"]

SUFFIX = ".inif"

LayerData = tuple[Any, dict[str, Any], str]


def _inif_path(path: Any) -> str | None:
    """``path`` as a string if it names a ``.inif`` file, else ``None``."""
    try:
        text = os.fspath(path)
    except TypeError:
        return None
    if isinstance(text, bytes) or not text.lower().endswith(SUFFIX):
        return None
    return text


def napari_get_reader(path: Any) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_layers` for a ``.inif`` path (or a list of them), else ``None``.

    Looks only at the names (and whether they are folders); never raises.
    """
    try:
        paths = [path] if isinstance(path, str | os.PathLike) else list(path)
        texts = [_inif_path(p) for p in paths]
        if not texts or any(t is None or os.path.isdir(t) for t in texts):
            return None
    except Exception:  # a path-like that fails to convert is simply not ours
        return None
    return read_layers


def read_inif(path: str | os.PathLike[str]) -> list[LayerData]:
    """Layer data of one ``.inif`` file; raises ``InifFormatError`` if it is invalid."""
    from ._layers import decoded_layer_data
    from .core import load

    encoded = load(path)
    name = Path(path).name[: -len(SUFFIX)]
    return [decoded_layer_data(encoded, name=name, path=os.path.abspath(path))]


def read_layers(path: Any) -> list[LayerData]:
    """The napari reader: a notification naming the problem for a file that cannot be read."""
    paths: Sequence[Any] = [path] if isinstance(path, str | os.PathLike) else list(path)
    _background_decoding()
    layers: list[LayerData] = []
    for p in paths:
        try:
            layers += read_inif(p)
        except (ValueError, OSError) as exc:  # InifFormatError is a ValueError
            _notify_error(f"Cannot open {Path(p).name}: {exc}")
        except MemoryError:
            _notify_error(f"Cannot open {Path(p).name}: out of memory")
    # napari's "read, but nothing to add" sentinel: no second reader, no traceback.
    return layers or [(None,)]  # type: ignore[list-item]


def _background_decoding() -> None:
    """In a napari window, decode the layers' tiles off the GUI thread (_qt/_background)."""
    try:
        from ._qt._background import install_if_windowed
    except ImportError:  # no Qt binding: napari without a window
        return
    install_if_windowed()


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)
