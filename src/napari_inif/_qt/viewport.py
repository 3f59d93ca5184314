"""Viewport sampling: show a decoded layer at screen resolution when zoomed past its pixels.

The field is continuous, so once one stored pixel covers several screen pixels the
visible region can be evaluated ``k`` times finer (:func:`napari_inif._layers.finer_region`).
The sampler follows the ndv pattern for requests while panning: camera and slider
events restart a short debounce timer; a request runs in a worker thread; at most one
runs at a time (the newest waiting request runs next); a result whose generation is not
the latest is dropped; results are applied on the main thread only.  The finer samples
go to one overlay layer, ``<name> [viewport]``, placed exactly over the decoded layer.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject, QTimer

from .._layers import FIELD_KEY, finer_region, layer_displayed, viewport_request
from ._parts import remove_layer, unwrap

__all__ = ["VIEWPORT_KEY", "ViewportSampler", "auto_sample", "sampler_of", "stop_all_samplers"]

#: ``layer.metadata`` key of a viewport overlay (the name of the layer it refines).
VIEWPORT_KEY = "inif_viewport_of"


def _camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


class ViewportSampler(QObject):
    """Keeps a ``[viewport]`` overlay of ``layer`` sampled at screen resolution.

    Parameters
    ----------
    viewer
        The napari viewer.
    layer
        A decoded INIF layer (from the reader or the Compress widget).
    delay_ms
        Debounce delay after the last camera or slider change.
    max_zoom
        Largest sampling factor (samples per stored pixel along Y and X).
    """

    def __init__(self, viewer: Any, layer: Any, *, delay_ms: int = 150, max_zoom: int = 8):
        super().__init__()
        self.viewer = viewer
        self.layer = unwrap(layer)
        self.max_zoom = max_zoom
        self.overlay: Any = None
        self.generation = 0
        self.applied = 0  # results shown (for tests and statistics)
        self.dropped = 0  # stale results thrown away
        self.busy = False  # a request is running
        self.worker: Any = None  # the running request's worker
        self._pending = False
        self._stopped = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self.request)
        camera = _camera(viewer)
        self._events = [
            camera.events.zoom,
            camera.events.center,
            viewer.canvas.events.size,
            viewer.dims.events.current_step,
            viewer.dims.events.ndisplay,
            viewer.dims.events.order,
        ]
        for emitter in self._events:
            emitter.connect(self.schedule)
        viewer.layers.events.removed.connect(self._on_removed)
        self.schedule()

    def schedule(self, event: Any = None) -> None:
        """Note a change of view: results of older requests become stale."""
        self.generation += 1
        self._timer.start()

    def request(self) -> None:
        """Decode the current view finer in a worker (or hide the overlay if not zoomed in)."""
        from napari.qt.threading import create_worker

        if self._stopped:
            return
        wanted = self.wanted()
        if wanted is None:
            if self.overlay is not None:
                self.overlay.opacity = 0.0  # not visible=False: see remove_layer
            return
        if self.busy:
            self._pending = True
            return
        self.busy = True
        generation = self.generation
        worker = create_worker(
            finer_region,
            self.layer,
            wanted.region,
            wanted.k,
            _start_thread=False,
            _connect={
                "returned": lambda placed: self._apply(generation, placed),
                "errored": self._failed,
                "finished": self._done,
            },
        )
        self.worker = worker
        worker.start()

    def wanted(self) -> Any:
        """The :class:`~napari_inif._layers.ViewRequest` of the current view, or ``None``."""
        viewer = self.viewer
        dims = viewer.dims
        camera = _camera(viewer)
        displayed = layer_displayed(self.layer, dims.displayed, dims.ndim)
        return viewport_request(
            self.layer,
            dims.point,
            displayed,
            center=camera.center,
            zoom=camera.zoom,
            canvas_size=tuple(viewer.canvas.size),
            max_k=self.max_zoom,
        )

    def _apply(self, generation: int, placed: Any) -> None:
        if generation != self.generation or self.layer not in self.viewer.layers:
            self.dropped += 1
            return
        if self.overlay is None or self.overlay not in self.viewer.layers:
            self.overlay = self._add_overlay(placed)
        else:
            self.overlay.data = placed.data
            self.overlay.scale = placed.scale
            self.overlay.translate = placed.translate
            self.overlay.contrast_limits = self.layer.contrast_limits
            self.overlay.opacity = self.layer.opacity
        self.applied += 1

    def _add_overlay(self, placed: Any) -> Any:
        layer = self.layer
        selection = self.viewer.layers.selection
        active = selection.active
        overlay = self.viewer.add_image(
            placed.data,
            name=f"{layer.name} [viewport]",
            scale=placed.scale,
            translate=placed.translate,
            colormap=layer.colormap,
            contrast_limits=layer.contrast_limits,
            rgb=layer.rgb,
            metadata={VIEWPORT_KEY: layer.name},
        )
        selection.active = active  # adding selected the overlay: keep the user's choice
        return unwrap(overlay)

    def _failed(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        show_error(f"Viewport decoding of {self.layer.name!r} failed: {exc}")

    def _done(self) -> None:
        self.busy = False
        self.worker = None
        if self._pending:
            self._pending = False
            self.request()

    def _on_removed(self, event: Any) -> None:
        if unwrap(event.value) is self.layer:
            self.stop()

    def stop(self) -> None:
        """Disconnect from the viewer and remove the overlay (a running request is dropped)."""
        if self._stopped:
            return
        self._stopped = True
        self._pending = False
        self._timer.stop()
        self.generation += 1
        for emitter in self._events:
            emitter.disconnect(self.schedule)
        self._events = []
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        if self.overlay is not None:
            remove_layer(self.viewer, self.overlay)  # it may be hidden: see remove_layer
        self.overlay = None


class _AutoSampler(QObject):
    """Starts a :class:`ViewportSampler` for every decoded layer added to one viewer."""

    def __init__(self, viewer: Any):
        super().__init__()
        self.viewer = viewer
        self.samplers: dict[int, ViewportSampler] = {}
        self.off: set[int] = set()  # layers the user turned sampling off for
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        for layer in list(viewer.layers):
            self._start(layer)

    def _start(self, layer: Any) -> None:
        layer = unwrap(layer)
        meta = layer.metadata if isinstance(layer.metadata, dict) else {}
        if meta.get(FIELD_KEY) is None or id(layer) in self.samplers or id(layer) in self.off:
            return
        self.samplers[id(layer)] = ViewportSampler(self.viewer, layer)

    def _on_inserted(self, event: Any) -> None:
        self._start(event.value)

    def _on_removed(self, event: Any) -> None:
        layer = unwrap(event.value)
        self.samplers.pop(id(layer), None)  # the sampler stops itself
        self.off.discard(id(layer))

    def set_sampling(self, layer: Any, on: bool) -> None:
        layer = unwrap(layer)
        if on:
            self.off.discard(id(layer))
            self._start(layer)
        else:
            self.off.add(id(layer))
            sampler = self.samplers.pop(id(layer), None)
            if sampler is not None:
                sampler.stop()

    def stop_all(self) -> list[Any]:
        """Stop every sampler; returns the workers of requests still running."""
        running = [s.worker for s in self.samplers.values() if s.worker is not None]
        for sampler in list(self.samplers.values()):
            sampler.stop()
        self.samplers.clear()
        return running


_AUTO: dict[int, _AutoSampler] = {}


def stop_all_samplers(wait_ms: int = 5000) -> None:
    """Stop the samplers of every viewer and wait for running requests (the application
    is quitting: a request finishing after Qt tore its signals down aborts Python)."""
    from qtpy.QtCore import QThreadPool

    running = [w for auto in list(_AUTO.values()) for w in auto.stop_all()]
    _AUTO.clear()
    pool = QThreadPool.globalInstance()
    if running and pool is not None:
        pool.waitForDone(wait_ms)


def auto_sample(viewer: Any) -> _AutoSampler:
    """Viewport sampling for every decoded layer of ``viewer``, on by default (once per
    viewer; forgotten when the viewer closes)."""
    viewer = unwrap(viewer)  # widgets get a PublicOnlyProxy: one sampler set per viewer
    key = id(viewer)
    auto = _AUTO.get(key)
    if auto is None or auto.viewer is not viewer:
        auto = _AUTO[key] = _AutoSampler(viewer)
        for dead in [k for k, a in _AUTO.items() if a is not auto and _closed(a.viewer)]:
            del _AUTO[dead]  # forget viewers closed since
    return auto


def _closed(viewer: Any) -> bool:
    """Whether a viewer's window was closed (napari 0.9 has no public signal for it)."""
    from napari import Viewer

    return isinstance(viewer, Viewer) and viewer not in Viewer._instances


def sampler_of(viewer: Any, layer: Any) -> ViewportSampler | None:
    """The running sampler of ``layer`` in ``viewer``, if any."""
    viewer = unwrap(viewer)
    auto = _AUTO.get(id(viewer))
    if auto is None or auto.viewer is not viewer:
        return None
    return auto.samplers.get(id(unwrap(layer)))
