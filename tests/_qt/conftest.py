"""Fixtures for the napari widget tests (on the display there is, else Xvfb via pytest-xvfb).

* ``viewer``: a napari viewer from ``make_napari_viewer`` in strict mode, so a test that
  leaves top-level Qt widgets behind fails.
* every test must leave no worker thread running (checked after the test).
* ``notifications``: the messages napari notifications showed during the test.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.conftest import qt_unavailable

pytest.importorskip("napari")
pytest.importorskip("qtpy")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Skip every Qt test (one summary line) where Qt cannot open a window: without a
    display, creating the QApplication would abort the whole run. This runs before any
    fixture (``qapp``) and after pytest-xvfb has started Xvfb."""
    reason = qt_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def viewer(make_napari_viewer):
    """A hidden napari viewer; leaked top-level widgets fail the test."""
    return make_napari_viewer(strict_qt="raise")


@pytest.fixture(autouse=True)
def _no_workers_left_running(qtbot):
    """Fail a test that leaves napari thread workers running (and stop them).

    A worker still finishing its last request when the test ends (a viewport decode on a
    loaded machine) gets a few seconds; one that is still running then was left behind.
    """
    from superqt.utils._qthreading import WorkerBase

    yield
    with contextlib.suppress(Exception):  # qtbot's TimeoutError: checked just below
        qtbot.waitUntil(lambda: not any(w.is_running for w in WorkerBase._worker_set), timeout=5000)
    left = [w for w in WorkerBase._worker_set if w.is_running]
    for worker in left:
        worker.quit()
    qtbot.waitUntil(lambda: not any(w.is_running for w in WorkerBase._worker_set), timeout=30000)
    assert not left, f"the test left {len(left)} worker(s) running"


@pytest.fixture
def notifications():
    """Messages of the napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    messages: list[str] = []

    def record(notification) -> None:
        messages.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    yield messages
    notification_manager.notification_ready.disconnect(record)
