"""The Inspect dock widget: original vs decoded, side by side, metrics and ROI decoding.

* Metrics (PSNR, SSIM, max error from :mod:`napari_inif.core.metrics.quality`) for the current
  slice or the whole stack, computed in a worker thread.
* A lazy difference layer (original - decoded, float32, multiscale).
* Side by side: napari's grid mode with only the two layers shown (one camera, so
  pan and zoom stay linked), and back to the previous view.  A layer it hid that the
  user removes is shown invisibly first (napari's hidden-layer removal crash).
* Viewport sampling (on by default for every decoded layer): the decoded layer sampled
  at screen resolution when zoomed in; the box turns it off (or on) for the chosen layer.
* ROI decode: a rectangle of a Shapes layer (or the current view) decoded at the stored
  resolution or ``k`` times finer into a new layer placed over the decoded one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._layers import (
    ENCODED_KEY,
    INFO_KEY,
    compare,
    current_index,
    difference_levels,
    finer_region,
    layer_displayed,
    layer_shape,
    plane_dims,
    plane_psnr,
    visible_region,
)
from ._parts import DockWidget, LayerCombo, PsnrPlot, alive, show_before_removal, unwrap
from .viewport import _camera, auto_sample, sampler_of

__all__ = ["InspectWidget"]


def _is_plain_image(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image) and ENCODED_KEY not in layer.metadata


def _is_decoded(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image) and ENCODED_KEY in layer.metadata


def _is_shapes(layer: Any) -> bool:
    from napari.layers import Shapes

    return isinstance(layer, Shapes)


def _fmt(q: Any) -> str:
    return (
        f"PSNR {q.psnr:.2f} dB (dtype range {q.psnr_dtype:.2f}) · SSIM {q.ssim:.4f} · "
        f"max error {q.max_error:g}"
    )


class InspectWidget(DockWidget):
    """Dock widget: compare a decoded layer with its original (napari ``Inspect``)."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.auto = auto_sample(napari_viewer)
        self.last_metrics: dict[str, Any] = {}
        self._grid_saved: tuple[dict[str, Any], list[tuple[Any, bool]]] | None = None
        self._workers: list[Any] = []
        self._closed = False

        self.original = LayerCombo(napari_viewer, _is_plain_image, self)
        self.decoded = LayerCombo(napari_viewer, _is_decoded, self)
        self.slice_button = QPushButton("Metrics: current slice", self)
        self.stack_button = QPushButton("Metrics: whole stack", self)
        self.slice_label = QLabel("slice: -", self)
        self.stack_label = QLabel("stack: -", self)
        for label in (self.slice_label, self.stack_label):
            label.setWordWrap(True)
        self.planes_button = QPushButton("PSNR per plane (along T or Z)", self)
        self.planes_plot = PsnrPlot(
            self,
            tooltip="PSNR (dB) of each plane against the original, along the first axis",
            empty_text="PSNR per plane appears here",
        )
        self.planes_label = QLabel("", self)
        self.diff_button = QPushButton("Difference layer", self)
        self.side_button = QPushButton("Side by side", self)
        self.side_button.setCheckable(True)
        self.viewport_box = QCheckBox("Sample the field at screen resolution when zoomed in", self)
        self.shapes = LayerCombo(napari_viewer, _is_shapes, self, allow_none=True)
        self.zoom = QSpinBox(self)
        self.zoom.setRange(1, 16)
        self.zoom.setValue(4)
        self.zoom.setSuffix("x finer")
        self.all_planes = QCheckBox("all planes (whole stack)", self)
        self.roi_button = QPushButton("Decode ROI", self)

        form = QFormLayout()
        form.addRow("Original", self.original)
        form.addRow("Decoded", self.decoded)
        buttons = QGridLayout()
        buttons.addWidget(self.slice_button, 0, 0)
        buttons.addWidget(self.stack_button, 0, 1)
        buttons.addWidget(self.diff_button, 1, 0)
        buttons.addWidget(self.side_button, 1, 1)
        roi = QFormLayout()
        roi.addRow("ROI rectangle", self.shapes)
        roi.addRow("Resolution", self.zoom)
        roi.addRow("", self.all_planes)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.slice_label)
        layout.addWidget(self.stack_label)
        layout.addWidget(self.planes_button)
        layout.addWidget(self.planes_plot)
        layout.addWidget(self.planes_label)
        layout.addWidget(self.viewport_box)
        layout.addWidget(QLabel("<b>Region of interest</b> (a Shapes rectangle, or the view)"))
        layout.addLayout(roi)
        layout.addWidget(self.roi_button)

        self.slice_button.clicked.connect(self.slice_metrics)
        self.stack_button.clicked.connect(self.stack_metrics)
        self.planes_button.clicked.connect(self.plane_metrics)
        self.diff_button.clicked.connect(self.add_difference)
        self.side_button.toggled.connect(self.side_by_side)
        self.viewport_box.toggled.connect(self.set_viewport_sampling)
        self.roi_button.clicked.connect(self.decode_roi)
        self.decoded.currentIndexChanged.connect(self._match_original)
        self._match_original()

    # layer choice -----------------------------------------------------------------------
    def _pair(self) -> tuple[Any, Any] | None:
        original, decoded = self.original.current(), self.decoded.current()
        if original is None or decoded is None:
            _notify("Choose an original and a decoded layer first")
            return None
        return original, decoded

    def _match_original(self, *_: Any) -> None:
        """Pick the original the decoded layer came from, when it is in the viewer."""
        decoded = self.decoded.current()
        if decoded is None:
            return
        source = decoded.metadata.get(INFO_KEY, {}).get("source_layer")
        for layer in self.viewer.layers:
            if layer.name == source and _is_plain_image(layer):
                self.original.select(layer)
        self._show_sampling()

    def _index(self, layer: Any) -> tuple[Any, ...]:
        dims = self.viewer.dims
        return current_index(layer, dims.point, layer_displayed(layer, dims.displayed, dims.ndim))

    # metrics ----------------------------------------------------------------------------
    def slice_metrics(self) -> Any:
        """PSNR/SSIM/max error of the current slice, in a worker; returns the worker."""
        pair = self._pair()
        if pair is None:
            return None
        return self._run(compare, pair[0], pair[1], self._index(pair[1]), where="slice")

    def stack_metrics(self) -> Any:
        """PSNR/SSIM/max error of the whole stack, in a worker; returns the worker."""
        pair = self._pair()
        if pair is None:
            return None
        return self._run(compare, pair[0], pair[1], None, where="stack")

    def _run(self, func: Any, *args: Any, where: str) -> Any:
        from napari.qt.threading import create_worker

        label = self.slice_label if where == "slice" else self.stack_label
        label.setText(f"{where}: computing…")
        worker = create_worker(
            func,
            *args,
            _start_thread=False,
            _connect={
                "returned": lambda q: self._show_metrics(where, q),
                "errored": lambda exc: self._metrics_failed(where, exc),
            },
        )
        self._track(worker)
        worker.start()
        return worker

    def plane_metrics(self) -> Any:
        """PSNR of every plane along the first axis (T or Z), plotted; returns the worker."""
        from napari.qt.threading import create_worker

        pair = self._pair()
        if pair is None:
            return None
        self.planes_label.setText("PSNR per plane: computing…")
        worker = create_worker(
            plane_psnr,
            *pair,
            _start_thread=False,
            _connect={
                "returned": self._show_planes,
                "errored": lambda exc: self._metrics_failed("planes", exc),
            },
        )
        self._track(worker)
        worker.start()
        return worker

    def _show_planes(self, result: tuple[str, list[tuple[int, float]]]) -> None:
        self.last_metrics["planes"] = result
        if not alive(self):
            return
        axis, values = result
        self.planes_plot.clear()
        for i, value in values:
            self.planes_plot.add(i, value)
        worst = min(values, key=lambda iv: iv[1])
        self.planes_label.setText(
            f"PSNR per {axis} plane: {len(values)} planes, worst {worst[1]:.2f} dB at "
            f"{axis}={worst[0]}"
        )

    def _show_metrics(self, where: str, quality: Any) -> None:
        self.last_metrics[where] = quality
        if not alive(self):
            return
        label = self.slice_label if where == "slice" else self.stack_label
        label.setText(f"{where}: {_fmt(quality)}")

    def _metrics_failed(self, where: str, exc: BaseException) -> None:
        if not alive(self):
            return
        label = {"slice": self.slice_label, "stack": self.stack_label}.get(where, self.planes_label)
        label.setText(f"{where}: failed")
        _notify(f"Could not compare the layers: {exc}")

    # difference and side by side ------------------------------------------------------
    def add_difference(self) -> Any:
        """Add a lazy ``original - decoded`` layer; returns it."""
        pair = self._pair()
        if pair is None:
            return None
        original, decoded = pair
        try:
            levels = difference_levels(original, decoded)
        except ValueError as exc:
            _notify(f"Cannot make a difference layer: {exc}")
            return None
        lo, hi = original.contrast_limits
        span = max(abs(hi - lo) / 4, 1e-6)
        return self.viewer.add_image(
            levels,
            multiscale=True,
            name=f"{original.name} - {decoded.name}",
            colormap="PiYG",
            contrast_limits=[-span, span],
            scale=list(decoded.scale),
            translate=list(decoded.translate),
            metadata={"inif_difference_of": [original.name, decoded.name]},
        )

    def side_by_side(self, on: bool) -> None:
        """Grid mode with only the original and decoded layers visible (``False``: back)."""
        grid = self._grid()
        if on and self._grid_saved is None:
            pair = self._pair()
            if pair is None:
                self.side_button.setChecked(False)
                return
            shown = {id(unwrap(layer)) for layer in pair}
            camera = self.viewer.camera
            self._grid_saved = (
                {
                    "enabled": grid.enabled,
                    "shape": grid.shape,
                    "stride": grid.stride,
                    "center": camera.center,
                    "zoom": camera.zoom,
                },
                [(unwrap(layer), layer.visible) for layer in self.viewer.layers],
            )
            for layer in self.viewer.layers:
                layer.visible = id(unwrap(layer)) in shown
            # napari crashed drawing after a hidden layer was removed (see remove_layer):
            # a layer hidden here that the user removes is shown (invisibly) first.
            self.viewer.layers.events.removing.connect(self._removing)
            grid.stride = 1
            grid.shape = (1, 2)
            grid.enabled = True
            self.viewer.reset_view()
        elif not on and self._grid_saved is not None:
            settings, visibility = self._grid_saved
            self._grid_saved = None
            self.viewer.layers.events.removing.disconnect(self._removing)
            for layer, visible in visibility:
                if layer in self.viewer.layers:
                    layer.visible = visible
            grid.enabled = settings["enabled"]
            grid.shape = settings["shape"]
            grid.stride = settings["stride"]
            self.viewer.camera.center = settings["center"]
            self.viewer.camera.zoom = settings["zoom"]
        self.side_button.setChecked(self._grid_saved is not None)

    def _removing(self, event: Any) -> None:
        layer = unwrap(self.viewer.layers[event.index])
        saved = self._grid_saved
        if saved is not None and not layer.visible:  # hidden here (or before)
            show_before_removal(self.viewer, layer)

    def _grid(self) -> Any:
        canvas = getattr(self.viewer, "canvas", None)  # napari >= 0.9
        return canvas.grid if canvas is not None else self.viewer.grid

    # viewport sampling ------------------------------------------------------------------
    @property
    def sampler(self) -> Any:
        """The viewport sampler of the chosen decoded layer, or ``None`` (turned off)."""
        decoded = self.decoded.current()
        return None if decoded is None else sampler_of(self.viewer, decoded)

    def set_viewport_sampling(self, on: bool) -> None:
        """Turn sampling at screen resolution on or off for the chosen decoded layer."""
        decoded = self.decoded.current()
        if decoded is not None:
            self.auto.set_sampling(decoded, on)
        self._show_sampling()

    def _show_sampling(self) -> None:
        self.viewport_box.blockSignals(True)
        self.viewport_box.setChecked(self.sampler is not None)
        self.viewport_box.blockSignals(False)

    # ROI --------------------------------------------------------------------------------
    def roi_region(self) -> tuple[slice, ...] | None:
        """Level-0 region of the decoded layer: the ROI rectangle, or the visible view."""
        decoded = self.decoded.current()
        if decoded is None:
            return None
        dims = self.viewer.dims
        displayed = layer_displayed(decoded, dims.displayed, dims.ndim)
        plane = plane_dims(decoded)
        if len(displayed) != 2 or set(displayed) != set(plane):
            _notify("ROI decoding needs a 2D view of the decoded layer's Y and X axes")
            return None
        shape = layer_shape(decoded)
        box = self._shape_box(decoded, plane) or self._view_box(decoded, plane)
        index = current_index(decoded, dims.point, displayed)
        region = []
        for d, n in enumerate(shape):
            if d in plane:
                lo = int(np.clip(math.floor(box[0][plane.index(d)] + 0.5), 0, n - 1))
                hi = int(np.clip(math.ceil(box[1][plane.index(d)] + 0.5), lo + 1, n))
                region.append(slice(lo, hi))
            elif self.all_planes.isChecked():
                region.append(slice(0, n))
            else:
                region.append(slice(index[d], index[d] + 1))
        return tuple(region)

    def _shape_box(self, decoded: Any, plane: tuple[int, ...]) -> Any:
        """Bounding box (data coordinates of ``decoded``, plane dims) of the chosen rectangle."""
        shapes = self.shapes.current()
        if shapes is None or len(shapes.data) == 0:
            return None
        chosen = sorted(shapes.selected_data) or [len(shapes.data) - 1]
        vertices = np.concatenate([np.asarray(shapes.data[i]) for i in chosen])
        corners = np.array([decoded.world_to_data(shapes.data_to_world(v)) for v in vertices])[
            :, list(plane)
        ]
        return corners.min(axis=0), corners.max(axis=0)

    def _view_box(self, decoded: Any, plane: tuple[int, ...]) -> Any:
        """The part of ``decoded`` on screen (level-0 data coordinates) as a box: from
        the camera and the canvas size (``corner_pixels`` does not shrink on zoom)."""
        dims = self.viewer.dims
        displayed = layer_displayed(decoded, dims.displayed, dims.ndim)
        camera = _camera(self.viewer)
        region = visible_region(
            decoded, dims.point, displayed, camera.center, camera.zoom, self.viewer.canvas.size
        )
        lo = [region[d].start - 0.5 for d in plane]
        hi = [region[d].stop - 0.5 for d in plane]
        return np.array(lo), np.array(hi)

    def decode_roi(self) -> Any:
        """Decode the ROI (``zoom`` times finer) into a new layer, in a worker."""
        from napari.qt.threading import create_worker

        decoded = self.decoded.current()
        region = self.roi_region()
        if decoded is None or region is None:
            return None
        k = self.zoom.value()
        worker = create_worker(
            finer_region,
            decoded,
            region,
            k,
            _start_thread=False,
            _connect={
                "returned": lambda placed: self._add_roi(decoded, k, placed),
                "errored": lambda exc: _notify(f"ROI decoding failed: {exc}"),
            },
        )
        self._track(worker)
        worker.start()
        return worker

    def _add_roi(self, decoded: Any, k: int, placed: Any) -> None:
        if decoded not in self.viewer.layers:
            return
        self.viewer.add_image(
            placed.data,
            name=f"{decoded.name} [ROI {k}x]",
            scale=placed.scale,
            translate=placed.translate,
            colormap=decoded.colormap,
            contrast_limits=decoded.contrast_limits,
            metadata={"inif_roi_of": decoded.name, "zoom": k},
        )

    # cleanup ----------------------------------------------------------------------------
    def _track(self, worker: Any) -> None:
        self._workers.append(worker)
        worker.finished.connect(lambda: self._workers.remove(worker))

    def cleanup(self) -> None:
        """Stop the viewport sampler, restore the view, disconnect from the viewer (once)."""
        if self._closed:
            return
        self._closed = True
        if self._grid_saved is not None:
            self.side_by_side(False)
        for worker in list(self._workers):
            worker.quit()
        for combo in (self.original, self.decoded, self.shapes):
            combo.cleanup()


def _notify(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)
