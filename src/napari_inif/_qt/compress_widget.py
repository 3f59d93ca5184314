"""The Compress dock widget: fit an image layer into a field in a background worker.

The widget only gathers a :class:`~napari_inif.core.CompressionConfig` and drives the
``core.fit`` generator in a napari ``thread_worker``; what the generator yields updates
the progress bar, the live PSNR plot and (every few seconds) a preview layer that
sharpens while the fit runs.  The result lands on a *new* layer tied to the source
layer, never on whatever layer is selected when the fit ends.  Cancel is
``worker.quit()``: the generator is abandoned between two steps and the preview layer
is removed, so nothing half-made stays in the viewer.  A new fit starts only once the
cancelled worker has stopped (never two at once), and layers are never hidden before
being removed (napari crashes on that; see :func:`._parts.remove_layer`).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from .._layers import (
    ENCODED_KEY,
    INFO_KEY,
    LAZY_KEY,
    decoded_layer_data,
    decoded_name,
    file_name,
    fit_layer,
    inif_info,
    is_rgb,
    layer_axes,
    layer_layout,
    lazy_levels,
    placeholder_levels,
)
from .._writer import CONFIG_KEY
from ._config_form import ConfigForm
from ._parts import DockWidget, LayerCombo, PsnrPlot, alive, remove_layer, unwrap

__all__ = ["PRESETS", "CompressWidget", "warm_up_fitting"]

#: Quality/speed presets: label -> steps (``None``: the time budget box decides).
PRESETS: dict[str, int | None] = {
    "Quick (1000 steps)": 1000,
    "Balanced (4000 steps)": 4000,
    "Best (16000 steps)": 16000,
    "Time budget": None,
}
RATIO_STEPS_PER_OCTAVE = 4  # the ratio slider moves in quarter octaves
RATIO_RANGE = (2.0, 10.0)  # log2: 4x .. 1024x
PREVIEW_EVERY = 2.0  # seconds between live previews of the field
PREVIEW_KEY = "inif_preview"  # metadata flag of the live preview layer
#: Config fields with their own controls here (ratio slider, presets / time budget).
OWN_CONTROLS = ("ratio", "steps", "time_limit")
#: Starting values of the form that differ from the config's defaults.
FORM_INITIAL = {"guidance_model": "inif_nuclei_small"}  # the shipped small Cellpose net


def _human(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""


def _eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class _Run:
    """One fit: the worker, the layer it reads and the preview layer it shows."""

    source: Any
    config: Any
    worker: Any = None
    preview: Any = None
    cancelled: bool = False
    encoded: Any = None
    shown: bool = False  # the preview layer shows a field (not the Start placeholder)


class CompressWidget(DockWidget):
    """Dock widget: compress an image layer into an INIF field (napari ``Compress``)."""

    def __init__(
        self, napari_viewer: Any, parent: QWidget | None = None, *, config_cls: type | None = None
    ):
        super().__init__(parent)
        from ..core.config import CompressionConfig  # torch-free
        from ._background import install
        from .viewport import auto_sample

        self.viewer = napari_viewer
        self.config_cls = config_cls or CompressionConfig
        warm_up_fitting()  # torch's import stalls the GUI thread: now, not during a fit
        self._decoder = install()  # previews and results decode off the GUI thread
        auto_sample(napari_viewer)  # results are sampled at screen resolution when zoomed
        self._run: _Run | None = None
        self._stopping: _Run | None = None  # a cancelled fit whose worker has not stopped
        self.result: tuple[Any, Any] | None = None  # (layer, Encoded) of the last fit
        self._asked_ratio: float | None = None  # the ratio asked for that fit
        self._max_ratio = math.inf
        self._closed = False
        self._chosen: Any = None  # the layer the axes field was filled for

        self.layer_combo = LayerCombo(napari_viewer, _is_candidate, self)
        self.axes_edit = QLineEdit(self)
        self.axes_edit.setToolTip(
            "One letter per layer dimension: T (time), C (channels), Z, Y, X. T and Z are "
            "both coordinates of the field but T is never mixed with Z (a time-lapse is not "
            "a volume); C is a channel, not a coordinate. Prefilled from the layer's axis "
            "labels."
        )
        self.ratio_slider = QSlider(Qt.Orientation.Horizontal, self)
        lo, hi = RATIO_RANGE
        self.ratio_slider.setRange(
            int(lo * RATIO_STEPS_PER_OCTAVE), int(hi * RATIO_STEPS_PER_OCTAVE)
        )
        self.ratio_slider.setValue(6 * RATIO_STEPS_PER_OCTAVE)  # 64x
        self.ratio_label = QLabel(self)
        self.ratio_label.setWordWrap(True)
        self.preset = QComboBox(self)
        self.preset.addItems(list(PRESETS))
        self.preset.setCurrentIndex(1)
        self.time_budget = QDoubleSpinBox(self)
        self.time_budget.setRange(1.0, 24 * 3600.0)
        self.time_budget.setValue(60.0)
        self.time_budget.setSuffix(" s")
        self.form = ConfigForm(
            self.config_cls, exclude=OWN_CONTROLS, initial=FORM_INITIAL, parent=self
        )
        self.start_button = QPushButton("Start", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.progress = QProgressBar(self)
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        self.plot = PsnrPlot(self)
        self.result_label = QLabel(self)
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.save_button = QPushButton("Save .inif…", self)

        own_rows = [
            ("Image layer", self.layer_combo),
            ("Axes", self.axes_edit),
            ("Ratio", self.ratio_slider),
            ("", self.ratio_label),
            ("Quality / speed", self.preset),
            ("Time budget", self.time_budget),
        ]
        for i, (label, control) in enumerate(own_rows):  # aligned with the basic settings
            self.form.layouts["basic"].insertRow(i, label, control)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.plot)
        layout.addWidget(self.result_label)
        layout.addWidget(self.save_button)

        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.axes_edit.textChanged.connect(self._update_ratio)
        self.ratio_slider.valueChanged.connect(self._update_ratio)
        self.preset.currentIndexChanged.connect(self._update_buttons)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(self._save_dialog)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        self._on_layer_changed()

    # settings ---------------------------------------------------------------------------
    @property
    def ratio(self) -> float:
        """The ratio the slider shows."""
        return 2.0 ** (self.ratio_slider.value() / RATIO_STEPS_PER_OCTAVE)

    def set_ratio(self, ratio: float) -> None:
        """Move the slider to the step nearest ``ratio``."""
        self.ratio_slider.setValue(round(math.log2(ratio) * RATIO_STEPS_PER_OCTAVE))

    def config(self) -> Any:
        """The :class:`~napari_inif.core.CompressionConfig` the controls describe."""
        steps = PRESETS[self.preset.currentText()]
        values: dict[str, Any] = {**self.form.values(), "ratio": self.ratio}
        if steps is None:
            values.update(steps=10**7, time_limit=self.time_budget.value())
        else:
            values["steps"] = steps
        return self.config_cls(**values)

    def axes(self) -> str | None:
        """The axis letters typed for the layer (``None``: the layer's own)."""
        return self.axes_edit.text().strip().upper() or None

    def _on_layer_changed(self, *_: Any) -> None:
        layer = self.layer_combo.current()
        if layer is self._chosen and layer is not None:
            return  # the list changed around it (a layer added): keep the typed axes
        self._chosen = layer
        text = ""
        if layer is not None and not _is_labels(layer):
            try:
                text = layer_axes(layer).removesuffix("S" if layer.rgb else "")
            except ValueError:
                text = ""
        self.axes_edit.blockSignals(True)
        self.axes_edit.setText(text)
        self.axes_edit.blockSignals(False)
        self._update_ratio()

    def _update_ratio(self, *_: Any) -> None:
        layer = self.layer_combo.current()
        self._max_ratio = math.inf
        text = f"{self.ratio:.0f}x"
        if layer is not None and _is_labels(layer):
            self._max_ratio = 0.0
            text = (
                "labels are not supported: a field approximates values, and a label image "
                "must stay exact. Save labels in a lossless format (TIFF, Zarr)."
            )
        elif layer is not None:
            try:
                from ..core import max_ratio

                layout = layer_layout(layer, self.axes())
                self._max_ratio = max_ratio(layout)
            except ValueError as exc:  # unsupported layer (dtype, axes)
                self._max_ratio = 0.0
                text = f"cannot compress this layer: {exc}"
            else:
                text += f" → {_human(layout.raw_bytes / self.ratio)} of {_human(layout.raw_bytes)}"
                if self.ratio > self._max_ratio:
                    text += (
                        f" — too high for this layer; the largest possible ratio is "
                        f"{self._max_ratio:.0f}x"
                    )
        self.ratio_label.setText(text)
        self._update_buttons()

    def _update_buttons(self, *_: Any) -> None:
        running = self._run is not None or self._stopping is not None
        ok = self.layer_combo.current() is not None and self.ratio <= self._max_ratio
        self.start_button.setEnabled(ok and not running)
        self.cancel_button.setEnabled(self._run is not None)
        self.time_budget.setEnabled(PRESETS[self.preset.currentText()] is None)
        self.save_button.setEnabled(self.result is not None and not running)

    # fitting ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start fitting the chosen layer in a worker thread."""
        from napari.qt.threading import create_worker

        source = self.layer_combo.current()
        if source is None or self._run is not None or self._stopping is not None:
            return
        if self.ratio > self._max_ratio:
            _notify_error(
                f"{self.ratio:.0f}x is too high for {source.name!r}; "
                f"the largest possible ratio is {self._max_ratio:.0f}x"
            )
            return
        try:
            config = self.config()
        except ValueError as exc:  # e.g. a guidance that needs a model, without one
            _notify_error(f"Cannot compress {source.name!r}: {exc}")
            return
        source.metadata[CONFIG_KEY] = config.to_dict()  # what File > Save as .inif will use
        run = self._run = _Run(source, config)
        self.result_label.setText("")  # the previous result is not this fit's
        run.worker = create_worker(
            fit_layer,
            source,
            config,
            preview_every=PREVIEW_EVERY,
            axes=self.axes(),
            _start_thread=False,
            _connect={
                "yielded": lambda p: self._on_progress(run, p),
                "returned": lambda e: self._on_returned(run, e),
                "errored": lambda exc: self._on_errored(run, exc),
                "finished": lambda: self._on_finished(run),
            },
        )
        self.plot.clear()
        self.progress.setRange(0, config.steps if config.time_limit is None else 1000)
        self.progress.setValue(0)
        self.progress.setFormat("reading the layer…")
        self._update_buttons()
        run.worker.start()
        self._add_placeholder(run)

    def cancel(self) -> None:
        """Stop the running fit (between two steps); its preview layer goes when it has."""
        run = self._run
        if run is None or run.cancelled:
            return
        run.cancelled = True
        run.worker.quit()  # the worker stops before its next step; its signals are ignored
        self._run = None
        self._stopping = run  # Start waits for it: never two fits at once
        if run.preview is not None and run.preview in self.viewer.layers:
            # Gone from the screen now, removed when the worker has stopped (_on_finished):
            # napari's layer removal runs a full gc.collect() that would hold the GIL the
            # worker needs to stop.  Opacity, not visibility: see remove_layer.
            run.preview.opacity = 0.0
        if alive(self):
            self.progress.setFormat("cancelling…")
            self.cancel_button.setEnabled(False)
            self.start_button.setEnabled(False)

    def _on_progress(self, run: _Run, p: Any) -> None:
        if run is not self._run or not alive(self):
            return
        if run.config.time_limit is None:
            self.progress.setValue(p.step)
        else:
            self.progress.setValue(int(1000 * min(1.0, p.elapsed / run.config.time_limit)))
        budget = run.config.time_limit
        if p.phase == "fit":
            self.plot.add(p.step, p.psnr)
            done = (
                f"step {p.step}/{p.steps}"
                if budget is None
                else (f"{_eta(p.elapsed)} of {_eta(budget)} · step {p.step}")
            )
            self.progress.setFormat(f"{done} · PSNR {p.psnr:.1f} dB · ETA {_eta(p.eta)}")
        else:
            phase = {"quantise": "quantising", "quality": "measuring"}.get(p.phase, p.phase)
            self.progress.setFormat(
                f"{phase}… {_eta(p.elapsed)} elapsed · PSNR {p.psnr:.1f} dB · ETA {_eta(p.eta)}"
            )
        if p.preview is not None:
            self._show_preview(run, p.preview)

    def _add_placeholder(self, run: _Run) -> None:
        """Add the preview layer at *Start*, empty and transparent (the click's response).

        Adding a napari layer holds the GUI thread 0.1-0.3 s (controls, visuals, first
        draw); done here, the fit itself only swaps the layer's data (previews, result).
        Per-channel previews (one layer per channel) are added with the first preview.
        """
        try:
            layout = layer_layout(run.source, self.axes())
        except ValueError:
            return
        if layout.channel_axis is not None and not is_rgb(layout):
            return
        meta = {
            "name": f"{decoded_name(run.source.name, run.config.ratio)} (fitting…)",
            "multiscale": True,
            "rgb": is_rgb(layout),
            "opacity": 0.0,  # shown by the first preview
            "cache": False,
            "metadata": {PREVIEW_KEY: True},
        }
        run.preview = self._add_beside(run.source, placeholder_levels(layout), meta)

    def _show_preview(self, run: _Run, preview: Any) -> None:
        # Decoded in the background (_qt/_background): handing it over costs no decoding.
        levels = lazy_levels(preview, self._decoder)
        layer = run.preview
        if layer is not None and layer in self.viewer.layers:
            if _same_levels(layer, levels):
                layer.metadata[LAZY_KEY] = preview
                layer.data = levels
                if not run.shown:
                    run.shown = True
                    layer.opacity = 1.0
                return
            remove_layer(self.viewer, layer)  # a placeholder of another shape
            run.preview = None
        if run.preview is not None:  # the user deleted the preview: do not bring it back
            return
        name = f"{decoded_name(run.source.name, run.config.ratio)} (fitting…)"
        meta = {
            "name": name,
            "multiscale": True,
            "cache": False,  # napari's dask cache would keep the stand-ins
            "metadata": {PREVIEW_KEY: True, LAZY_KEY: preview},
        }
        run.preview = self._add_beside(run.source, levels, meta)
        run.shown = True

    def _on_returned(self, run: _Run, encoded: Any) -> None:
        if run is not self._run or encoded is None:
            return
        run.encoded = encoded
        data, meta, _ = decoded_layer_data(
            encoded, name=decoded_name(run.source.name, run.config.ratio), source=run.source.name
        )
        layer = self._become_result(run, data, meta)
        if layer is None:
            self._drop_preview(run)
            layer = self._add_beside(run.source, data, meta)
        self.result = (layer, encoded)
        self._asked_ratio = run.config.ratio  # the file name says what was asked, like the layer
        self.result_label.setText(_summary(encoded))

    def _on_errored(self, run: _Run, exc: BaseException) -> None:
        if run is not self._run:
            return
        self._drop_preview(run)
        _notify_error(f"Compression of {run.source.name!r} failed: {exc}")

    def _on_finished(self, run: _Run) -> None:
        if run.cancelled:
            self._drop_preview(run)
            if run is self._stopping:
                self._stopping = None
                if alive(self):
                    self.progress.setFormat("cancelled")
                    self._update_buttons()
        if run is not self._run:
            return
        self._run = None
        if alive(self):
            self.progress.setFormat("done" if run.encoded is not None else "failed")
            self._update_buttons()

    # layers -----------------------------------------------------------------------------
    def _add_beside(self, source: Any, data: Any, meta: dict[str, Any]) -> Any:
        """Add image layer(s) just above ``source``; returns the first one."""
        kwargs = dict(meta)
        if kwargs.get("channel_axis") is None and not kwargs.get("rgb"):
            kwargs["contrast_limits"] = list(source.contrast_limits)
            kwargs["colormap"] = source.colormap
        kwargs.setdefault("scale", list(source.scale))
        kwargs["translate"] = list(source.translate)
        added = self.viewer.add_image(data, **kwargs)
        added = added if isinstance(added, list) else [added]
        layers = self.viewer.layers
        if source in layers:
            for layer in added:
                layers.move(layers.index(layer), layers.index(source) + 1)
        return unwrap(added[0])

    def _become_result(self, run: _Run, data: Any, meta: dict[str, Any]) -> Any:
        """Turn the preview layer into the result layer; ``None`` if it cannot be.

        Adding a napari layer (controls, visual, first slice) and removing one (a full
        ``gc.collect()``) each hold the GUI thread for a good fraction of a second on a
        CPU; the preview already sits where the result goes, with the same display.
        """
        preview = run.preview
        if preview is None or preview not in self.viewer.layers:
            return None
        if meta.get("channel_axis") is not None or bool(meta.get("rgb")) != preview.rgb:
            return None
        if not _same_levels(preview, data):
            return None
        metadata = meta["metadata"]
        preview.metadata.clear()
        preview.metadata.update(metadata)  # LAZY_KEY first: refreshes find the new field
        preview.data = data
        if not run.shown:  # no preview came (a short fit): the placeholder is transparent
            preview.opacity = 1.0
        preview.axis_labels = meta["axis_labels"]
        preview.name = meta["name"]
        run.preview = None
        return preview

    def _drop_preview(self, run: _Run) -> None:
        if run.preview is not None:
            remove_layer(self.viewer, run.preview)
        run.preview = None

    def _on_layer_removed(self, event: Any) -> None:
        run = self._run
        removed = unwrap(event.value)
        if run is not None and removed is run.source and not run.cancelled:
            self.cancel()
            _notify_info(f"{run.source.name!r} was removed: its compression was cancelled")
        if self.result is not None and removed is self.result[0]:
            self.result = None
            self._update_buttons()

    # saving -----------------------------------------------------------------------------
    def _save_dialog(self) -> None:
        if self.result is None:
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save INIF file", self.default_file_name(), "INIF files (*.inif)"
        )
        if not path:
            return
        final = _with_suffix(path)
        # The dialog asked about replacing ``path``; the name with .inif added is another file.
        asked = final == path
        if not asked and os.path.exists(final):
            if not self._confirm_overwrite(final):
                return
            asked = True
        self.save(final, overwrite=asked)

    def _confirm_overwrite(self, path: str) -> bool:
        """Ask whether to replace the existing file ``path``."""
        answer = QMessageBox.question(
            self,
            "Replace file?",
            f"{os.path.basename(path)} already exists in {os.path.dirname(path)}.\n"
            "Do you want to replace it?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def default_file_name(self) -> str:
        """``<source>_<ratio>x.inif`` for the last result with the asked ratio, e.g.
        ``nuclei_256x.inif`` (the layer is named with it too)."""
        if self.result is None:
            return "image.inif"
        layer, encoded = self.result
        source = layer.metadata[INFO_KEY].get("source_layer") or layer.name
        return file_name(str(source), self._asked_ratio or encoded.ratio)

    def save(self, path: str, *, overwrite: bool = False) -> str:
        """Write the last result to ``path`` (``.inif`` added if missing; atomically) and
        record it on its layer; returns the path, or ``""`` if nothing was written.

        An existing file is replaced only with ``overwrite`` (the user was asked).
        """
        if self.result is None:
            raise RuntimeError("nothing to save: run a compression first")
        layer, encoded = self.result
        path = _with_suffix(path)
        try:
            encoded.save(path, overwrite=overwrite)
        except FileExistsError:
            _notify_error(f"Not saved: {path} already exists (it was not replaced)")
            return ""
        except OSError as exc:
            _notify_error(f"Could not save {path}: {exc}")
            return ""
        info = inif_info(encoded, path=path, source=layer.metadata[INFO_KEY]["source_layer"])
        layer.metadata[INFO_KEY] = info
        self.result_label.setText(_summary(encoded, path))
        return path

    # cleanup ----------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Cancel a running fit and disconnect from the viewer (once)."""
        if self._closed:
            return
        self._closed = True
        self.cancel()
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        self.layer_combo.cleanup()


def _same_levels(layer: Any, levels: list[Any]) -> bool:
    """Whether a multiscale ``layer`` has levels of the shapes of ``levels``."""
    data = layer.data if layer.multiscale else [layer.data]
    return len(data) == len(levels) and all(
        tuple(a.shape) == tuple(b.shape) for a, b in zip(data, levels, strict=True)
    )


_WARMED = threading.Event()
_WARMING = False


def warm_up_fitting() -> None:
    """Import torch and the fitting code, and run a 2-step fit, in a background thread,
    once per process (``_WARMED`` is set when done).

    Importing torch holds the GIL for up to 0.2-0.4 s at a time (its C extension's
    initialisation), which freezes the GUI thread wherever the import runs; the first
    fit also imports sympy and more through torch.  Done when the dock opens, a moment the
    user spends choosing settings, the first fit does not stall the window.
    """
    global _WARMING
    if _WARMING:
        return
    _WARMING = True

    def work() -> None:
        try:
            import dask.array  # noqa: F401 - fit_layer's first import
            import numpy as np

            from ..core import CompressionConfig, compress

            tiny = np.random.default_rng(0).random((2, 32, 32), np.float32)
            compress(tiny, CompressionConfig(ratio=8, steps=2, device="cpu"), axes="TYX")
        except Exception:  # a warm-up only: the fit reports real errors
            pass
        finally:
            _WARMED.set()

    threading.Thread(target=work, name="inif-warm-up", daemon=True).start()


def _with_suffix(path: str) -> str:
    return path if path.lower().endswith(".inif") else path + ".inif"


def _is_labels(layer: Any) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


def _is_candidate(layer: Any) -> bool:
    """Image layers that are not ours, and Labels layers (listed, to say why not)."""
    from napari.layers import Image

    meta = layer.metadata
    if _is_labels(layer):
        return True
    return isinstance(layer, Image) and not meta.get(ENCODED_KEY) and not meta.get(PREVIEW_KEY)


def _summary(encoded: Any, path: str | None = None) -> str:
    fit = encoded.header.fit
    nan = float("nan")
    text = (
        f"{encoded.ratio:.1f}x ({_human(encoded.nbytes)}) · PSNR {fit.get('psnr', nan):.2f} dB"
        f" · SSIM {fit.get('ssim', nan):.3f} · max error {fit.get('max_error')}"
    )
    return text + (f"\nsaved to {path}" if path else "")


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def _notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)
