"""npe2 writer: an image layer saved as ``.inif``.

A layer decoded from an ``.inif`` (it carries its :class:`~napari_inif.core.Encoded` in
``metadata``) is written as it is, without fitting again.  Any other image layer is
fitted with the settings the Compress widget recorded in its metadata (``inif_config``)
or with the default :class:`~napari_inif.core.CompressionConfig`.  The file is written
atomically: a failed fit never leaves a partial file.

napari calls writers on its GUI thread and waits for them, and a fit takes from seconds
to minutes.  With a Qt application running, the fit therefore runs behind a modal
progress dialog (step, PSNR, time left) that keeps the window painted and has a Cancel
button; cancelling raises :class:`SaveCancelled` and writes nothing.  Without Qt (scripts,
``npe2`` calls) the fit simply runs.  The Compress widget stays the way to compress in the
background while working on.

Replacing files: napari's Save dialog (``QFileDialog.getSaveFileName`` without
``DontConfirmOverwrite``) already asks before replacing the name the user typed.  It does
not know that this writer appends ``.inif`` to a name without it, so when that longer name
exists the writer asks itself (a Qt question on the GUI thread; refused without Qt).  The
target folder is checked to be writable before fitting, so a read-only or missing folder
is reported at once, not after the fit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from types import SimpleNamespace
from typing import Any

__all__ = ["CONFIG_KEY", "SaveCancelled", "write_image"]

#: ``layer.metadata`` key holding a dict of CompressionConfig values for this layer.
CONFIG_KEY = "inif_config"
#: Seconds between repaints of the window while a fit runs on the GUI thread.
REPAINT_EVERY = 0.05


class SaveCancelled(RuntimeError):
    """The user cancelled saving; no file was written."""


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer to ``path`` (``.inif`` is appended if missing)."""
    from napari_inif.core.codec.container import check_writable

    from ._layers import ENCODED_KEY, layer_image
    from .core import CompressionConfig

    if not path.lower().endswith(".inif"):
        path += ".inif"  # a name the Save dialog did not confirm replacing
        if os.path.exists(path) and not _confirm_replace(path):
            raise SaveCancelled(f"{path} exists and was not replaced")
    check_writable(path)  # before a fit of minutes, not after it
    metadata = meta.get("metadata") or {}
    encoded = metadata.get(ENCODED_KEY)
    if encoded is None:
        multiscale = bool(meta.get("multiscale"))
        level0 = data[0] if multiscale else data
        rgb = bool(meta.get("rgb"))
        layer = SimpleNamespace(
            data=data,
            multiscale=multiscale,
            ndim=len(level0.shape) - (1 if rgb else 0),
            rgb=rgb,
            axis_labels=meta.get("axis_labels") or (),
            scale=meta.get("scale") if meta.get("scale") is not None else [1.0] * len(level0.shape),
            units=meta.get("units"),
        )
        image = layer_image(layer)
        config = CompressionConfig.from_dict(dict(metadata.get(CONFIG_KEY) or {}))
        name = str(meta.get("name") or os.path.basename(path))
        fitting = image.fit(config, name)
        encoded = _drive_with_progress(fitting, f"Compressing {name} to {os.path.basename(path)}")
    encoded.save(path)
    return [path]


def _confirm_replace(path: str) -> bool:
    """Ask whether to replace ``path`` (GUI thread with Qt); ``False`` when nobody can be
    asked."""
    app = _qt_application()
    if app is None:
        return False
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        None,
        "napari-inif: replace file?",
        f"{path} already exists.\nReplace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def _drive_with_progress(fitting: Generator[Any, None, Any], title: str) -> Any:
    """Run a fit generator to its end; behind a progress dialog when Qt is running."""
    from napari_inif.core.errors import Cancelled

    from .core import drive

    app = _qt_application()
    if app is None:
        return drive(fitting)
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QProgressDialog

    dialog = QProgressDialog(title, "Cancel", 0, 1000)
    dialog.setWindowTitle("napari-inif: saving")
    dialog.setWindowModality(Qt.WindowModality.ApplicationModal)
    dialog.setMinimumDuration(0)
    dialog.setAutoClose(False)
    dialog.setAutoReset(False)
    dialog.show()
    last = [0.0]

    def progress(p: Any) -> None:
        dialog.setValue(int(1000 * min(p.step, p.steps) / max(p.steps, 1)))
        if p.phase == "fit":
            dialog.setLabelText(
                f"{title}\nstep {p.step} of {p.steps}, {p.psnr:.1f} dB, about {p.eta:.0f} s left"
            )
        else:
            dialog.setLabelText(f"{title}\n{p.phase}")
        if time.monotonic() - last[0] >= REPAINT_EVERY:
            last[0] = time.monotonic()
            app.processEvents()

    try:
        return drive(fitting, progress, cancel=dialog.wasCanceled)
    except Cancelled:
        raise SaveCancelled("saving cancelled: no file was written") from None
    finally:
        dialog.close()
        dialog.deleteLater()


def _qt_application() -> Any:
    """The running Qt application when called on its GUI thread, else ``None`` (no Qt
    binding, none started, or a worker thread, where widgets must not be made)."""
    try:
        from qtpy.QtCore import QThread
        from qtpy.QtWidgets import QApplication
    except ImportError:  # no Qt binding installed (qtpy's error is an ImportError too)
        return None
    app = QApplication.instance()
    if app is None or QThread.currentThread() is not app.thread():
        return None
    return app
