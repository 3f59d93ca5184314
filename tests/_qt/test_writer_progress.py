"""Saving an uncompressed layer as .inif from napari: the fit runs on the GUI thread (npe2
writers are synchronous), so it shows a progress dialog, keeps the window painted and can
be cancelled without leaving a file."""

from __future__ import annotations

import numpy as np
import pytest

from napari_inif._writer import CONFIG_KEY, SaveCancelled, write_image
from napari_inif.core import load


def _meta(steps: int, **extra: object) -> dict:
    config = {"ratio": 8.0, "steps": steps, "device": "cpu", **extra}
    return {"name": "noise", "metadata": {CONFIG_KEY: config}}


def _image() -> np.ndarray:
    return (np.random.default_rng(0).random((96, 120)) * 200).astype(np.uint8)


def _visible_progress_dialogs() -> list:
    from qtpy.QtWidgets import QApplication, QProgressDialog

    widgets = QApplication.topLevelWidgets()
    return [w for w in widgets if isinstance(w, QProgressDialog) and w.isVisible()]


def test_saving_shows_progress_and_writes_the_file(qtbot, tmp_path):
    from qtpy.QtCore import QTimer

    seen: list[str] = []
    poll = QTimer()
    poll.timeout.connect(lambda: seen.extend(d.labelText() for d in _visible_progress_dialogs()))
    poll.start(10)
    [path] = write_image(str(tmp_path / "noise.inif"), _image(), _meta(steps=300))
    poll.stop()
    assert load(path).header.fit["steps"] == 300
    assert any("Compressing noise" in text and "dB" in text for text in seen), seen
    assert not _visible_progress_dialogs()  # closed when done


def test_cancelling_the_save_writes_nothing(qtbot, tmp_path):
    from qtpy.QtCore import QTimer

    def cancel() -> None:
        for dialog in _visible_progress_dialogs():
            dialog.cancel()

    QTimer.singleShot(300, cancel)
    target = tmp_path / "noise.inif"
    # time_limit: if cancel were ignored, the fit would still end (and the test fail).
    with pytest.raises(SaveCancelled, match="no file was written"):
        write_image(str(target), _image(), _meta(steps=100_000, time_limit=30))
    assert not target.exists() and not list(tmp_path.iterdir())
    assert not _visible_progress_dialogs()


def test_saving_from_a_worker_thread_makes_no_widgets(qtbot, tmp_path):
    import threading

    result: list = []
    worker = threading.Thread(
        target=lambda: result.append(
            write_image(str(tmp_path / "noise.inif"), _image(), _meta(steps=5))
        )
    )
    worker.start()
    worker.join(timeout=120)
    assert result and load(result[0][0]).header.fit["steps"] == 5
    assert not _visible_progress_dialogs()
