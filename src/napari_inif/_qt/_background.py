"""GUI side of background decoding: refresh the layers whose tiles arrived.

:class:`napari_inif._layers.BackgroundDecoder` decodes in its own thread and calls a
refresher from there.  :func:`install` makes that refresher a Qt signal, so the refresh
runs on the GUI thread, coalesced: tiles arriving within :data:`COALESCE_MS` cost one
refresh of each layer that shows them.  The layers are found in every open napari
viewer by the field in their metadata (``LAZY_KEY``); nothing else is held.  A tile
that cannot be decoded shows as zeros and is reported once per field in a napari warning
naming its layers (it is not asked for again).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

from .._layers import LAZY_KEY, BackgroundDecoder, set_refresher

__all__ = ["COALESCE_MS", "install", "install_if_windowed"]

COALESCE_MS = 30


class _Refresher(QObject):
    arrived = Signal(object)
    failed = Signal(object, str)

    def __init__(self) -> None:
        super().__init__()
        self._owners: dict[int, Any] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(COALESCE_MS)
        self._timer.timeout.connect(self._flush)
        self.arrived.connect(self._collect)  # queued: emitted from the decoding thread
        self.failed.connect(self._warn)

    def report(self, owner: Any, exc: BaseException) -> None:
        """From the decoding thread: a tile of ``owner`` could not be decoded."""
        self.failed.emit(owner, f"{type(exc).__name__}: {exc}")

    def _warn(self, owner: Any, message: str) -> None:
        from napari.utils.notifications import show_warning

        names = [layer.name for layer in _layers_of({id(owner): owner})]
        what = ", ".join(repr(n) for n in names) or "an INIF layer"
        show_warning(f"Part of {what} could not be decoded and shows as zeros: {message}")

    def _collect(self, owner: Any) -> None:
        self._owners[id(owner)] = owner
        if not self._timer.isActive():
            self._timer.start()

    def _flush(self) -> None:
        owners, self._owners = self._owners, {}
        for layer in _layers_of(owners):
            layer.refresh(extent=False, highlight=False, force=True)


def _layers_of(owners: dict[int, Any]) -> list[Any]:
    """The layers of every open viewer that show one of ``owners`` (by ``LAZY_KEY``)."""
    from napari import Viewer

    found = []
    for viewer in list(Viewer._instances):
        for layer in list(viewer.layers):
            owner = layer.metadata.get(LAZY_KEY) if isinstance(layer.metadata, dict) else None
            if owner is not None and owners.get(id(owner)) is owner:
                found.append(layer)
    return found


_REFRESHER: _Refresher | None = None


def install() -> BackgroundDecoder:
    """Decode new INIF layers in the background from now on (call on the GUI thread)."""
    global _REFRESHER
    if _REFRESHER is None:
        from qtpy.QtWidgets import QApplication

        _REFRESHER = _Refresher()
        app = QApplication.instance()
        if app is not None:  # no signal into a QObject Qt is tearing down
            app.aboutToQuit.connect(_uninstall)
    return set_refresher(_REFRESHER.arrived.emit, _a_window_is_open, _REFRESHER.report)


def _uninstall() -> None:
    from .viewport import stop_all_samplers

    global _REFRESHER
    stop_all_samplers()
    set_refresher(None, lambda: False)
    _REFRESHER = None


def _a_window_is_open() -> bool:
    from napari import Viewer

    return bool(Viewer._instances)


def install_if_windowed() -> None:
    """:func:`install` and viewport sampling when a napari window is open (readers call
    this: a bare ``ViewerModel`` or a script keeps decoding on demand)."""
    import sys

    if "napari" in sys.modules and _a_window_is_open():
        from napari import current_viewer

        from .viewport import auto_sample

        install()
        viewer = current_viewer()
        if viewer is not None:  # the window the file is opened into
            auto_sample(viewer)
