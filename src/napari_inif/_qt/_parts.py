"""Small Qt parts shared by the dock widgets: a layer picker and a live PSNR plot."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QPointF, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QComboBox, QWidget

__all__ = ["LayerCombo", "PsnrPlot", "alive", "remove_layer", "show_before_removal", "unwrap"]


def alive(widget: Any) -> bool:
    """Whether the Qt object behind ``widget`` still exists (closing a viewer deletes its
    docks while a worker may still report to them)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


def unwrap(obj: Any) -> Any:
    """The napari object behind a plugin ``PublicOnlyProxy`` (identity checks need it)."""
    return getattr(obj, "__wrapped__", obj)


#: Longest wait for the canvas to draw a re-shown layer before it is removed anyway.
REMOVE_FALLBACK_MS = 3000


def _scene_canvas(viewer: Any) -> Any:
    """The vispy ``SceneCanvas`` of a shown viewer, or ``None`` (``ViewerModel``, closed)."""
    import warnings

    with warnings.catch_warnings():
        # napari warns about private access from plugins; there is no public way to
        # know when the canvas drew, which the crash workaround needs.
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return unwrap(viewer).window._qt_viewer.canvas._scene_canvas  # napari 0.9
        except (AttributeError, RuntimeError):
            return None


def remove_layer(viewer: Any, layer: Any) -> None:
    """Remove ``layer`` from ``viewer`` without tripping napari's hidden-layer crash.

    napari 0.9 (vispy, software OpenGL) segfaults in ``glDrawArrays`` on the next draw
    after a layer that was *hidden* is removed and another image is added (reproducer
    in docs/napari.md).  A visible layer is removed at once.  A hidden one is made
    visible at opacity 0 (nothing changes on screen) and removed once the canvas has
    drawn it, which is the state napari removes layers from safely.
    """
    layer = unwrap(layer)
    if layer not in viewer.layers:
        return
    canvas = _scene_canvas(viewer)
    if layer.visible or canvas is None:
        viewer.layers.remove(layer)
        return
    done = False

    def finish(*_: Any) -> None:
        nonlocal done
        if done:
            return
        done = True
        canvas.events.draw.disconnect(drawn)
        if layer in viewer.layers:
            viewer.layers.remove(layer)

    def drawn(event: Any = None) -> None:
        QTimer.singleShot(0, finish)  # not from inside the draw

    layer.opacity = 0.0
    layer.visible = True
    canvas.events.draw.connect(drawn)
    QTimer.singleShot(REMOVE_FALLBACK_MS, finish)


def show_before_removal(viewer: Any, layer: Any) -> None:
    """Call from ``layers.events.removing`` for a layer *we* hid that the user removes.

    The removal cannot wait for a draw (:func:`remove_layer`), so the layer is made
    visible at opacity 0 and the canvas repainted at once, before napari removes it: the
    state napari removes layers from safely.  Its settings are put back afterwards.
    """
    layer = unwrap(layer)
    if layer.visible:
        return
    canvas = _scene_canvas(viewer)
    opacity = layer.opacity
    layer.opacity = 0.0
    layer.visible = True
    if canvas is not None:
        canvas.native.repaint()  # QOpenGLWidget: paintGL now, not at the next frame

    def restore() -> None:
        layer.visible = False
        layer.opacity = opacity

    QTimer.singleShot(0, restore)  # after the removal: the layer object is as it was


class DockWidget(QWidget):
    """A dock widget that calls ``self.cleanup()`` once it is closed or taken off napari."""

    def cleanup(self) -> None:  # pragma: no cover - overridden
        """Quit workers and disconnect viewer events."""

    def closeEvent(self, event: Any) -> None:
        """Qt close: clean up first."""
        self.cleanup()
        super().closeEvent(event)

    def event(self, event: Any) -> bool:
        """Clean up when napari removes the dock (it un-parents the widget, no close)."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.cleanup()
        return super().event(event)


class LayerCombo(QComboBox):
    """A combo box listing the viewer's layers that pass ``accept``, kept in sync.

    The selection follows the layer object, not its position or name, so renaming or
    reordering layers never silently switches the choice.
    """

    def __init__(
        self,
        viewer: Any,
        accept: Callable[[Any], bool],
        parent: QWidget | None = None,
        *,
        allow_none: bool = False,
    ):
        super().__init__(parent)
        self._viewer = viewer
        self._accept = accept
        self._allow_none = allow_none
        self._layers: list[Any] = []
        self._named: list[Any] = []
        events = viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered"):
            getattr(events, name).connect(self.refresh)
        self.refresh()

    def current(self) -> Any:
        """The chosen layer (the napari object itself) or ``None``."""
        i = self.currentIndex() - (1 if self._allow_none else 0)
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def select(self, layer: Any) -> None:
        """Choose ``layer`` if it is listed."""
        layer = unwrap(layer)
        for i, candidate in enumerate(self._layers):
            if candidate is layer:
                self.setCurrentIndex(i + (1 if self._allow_none else 0))

    def refresh(self, event: Any = None) -> None:
        """Rebuild the list from the viewer, keeping the current choice if it is still there."""
        keep = self.current()
        for layer in self._named:
            layer.events.name.disconnect(self.refresh)
        layers = [unwrap(lay) for lay in self._viewer.layers]
        self._named = layers
        for layer in layers:
            layer.events.name.connect(self.refresh)
        self._layers = [lay for lay in reversed(layers) if self._accept(lay)]  # top first
        self.blockSignals(True)
        self.clear()
        if self._allow_none:
            self.addItem("(none)")
        self.addItems([lay.name for lay in self._layers])
        self.blockSignals(False)
        if keep is not None and any(keep is lay for lay in self._layers):
            self.select(keep)
        self.currentIndexChanged.emit(self.currentIndex())

    def cleanup(self) -> None:
        """Disconnect from the viewer (call when the owning widget closes)."""
        events = self._viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered"):
            getattr(events, name).disconnect(self.refresh)
        for layer in self._named:
            layer.events.name.disconnect(self.refresh)
        self._named = []


class PsnrPlot(QWidget):
    """A tiny line plot of PSNR (dB) against step, drawn with QPainter (no matplotlib)."""

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        tooltip: str = "PSNR on the training batches (dB) against step",
        empty_text: str = "PSNR (dB) appears here while fitting",
    ):
        super().__init__(parent)
        self.points: list[tuple[float, float]] = []
        self.empty_text = empty_text
        self.setMinimumHeight(70)
        self.setToolTip(tooltip)

    def clear(self) -> None:
        """Forget all points."""
        self.points = []
        self.update()

    def add(self, step: float, psnr: float) -> None:
        """Append one point (non-finite values are skipped)."""
        if math.isfinite(psnr):
            self.points.append((float(step), float(psnr)))
            self.update()

    def paintEvent(self, event: Any) -> None:
        """Draw the curve, with its range in a margin on the right (never over the curve)."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        painter.setPen(QPen(QColor(128, 128, 128), 1))
        painter.drawRect(0, 0, w - 1, h - 1)
        if len(self.points) < 2:
            painter.drawText(6, h // 2, self.empty_text)
            return
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        x0, x1 = min(xs), max(xs) or 1.0
        y0, y1 = min(ys), max(ys)
        if y1 - y0 < 1e-6:
            y1 = y0 + 1.0
        labels = (f"{y1:.1f} dB", f"{y0:.1f} dB")
        metrics = painter.fontMetrics()
        margin = max(metrics.horizontalAdvance(t) for t in labels) + 10
        pad = 4
        right = max(w - margin, 2 * pad + 10)  # the curve ends where the labels start

        def to_px(x: float, y: float) -> QPointF:
            u = pad + (x - x0) / max(x1 - x0, 1e-9) * (right - 2 * pad)
            v = h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)
            return QPointF(u, v)

        painter.setPen(QPen(QColor(0, 170, 255), 2))
        painter.drawPolyline(QPolygonF([to_px(x, y) for x, y in self.points]))
        painter.setPen(QPen(QColor(200, 200, 200), 1))
        flags = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop
        painter.drawText(0, 2, w - 6, h, flags, labels[0])
        flags = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom
        painter.drawText(0, 0, w - 6, h - 2, flags, labels[1])
