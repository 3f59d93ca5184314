"""Longest GUI-thread freeze in a shown napari viewer: fitting, pan+zoom, Z-slider drag.

    xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/bench_gui_freeze.py \
        [--steps 300] [--planes 20] [--size 512] [--zsteps 40] [--label after]

A 20 ms ``QTimer`` heartbeat runs on the GUI thread; a freeze is the gap between two
beats minus the 20 ms period.  Each scenario reports the longest freeze, the 99th
percentile and the wall time:

* ``start`` / ``fit``: the Compress widget fits the packaged 16x130x130 time-lapse
  (``--steps``, live previews every 0.5 s): ``start`` is the click on Start and the
  0.5 s after it, ``fit`` the rest, to the result layer on screen.  The fit starts once
  the dock's warm-up (``compress_widget._WARMED``, where there is one) is done.
* ``open``: ``viewer.open`` of a ``--planes`` x ``--size`` x ``--size`` .inif (tiled
  from the same time-lapse, fitted in a few steps: only the network size matters for
  decoding time) until its first plane is on screen.
* ``pan+zoom``: 30 camera moves (zoom in 1x..6x and pan), 60 ms apart.
* ``Z drag``: ``--zsteps`` slider steps 30 ms apart (a user dragging the slider), and
  the time until the last plane is on screen (``settled``).

Run it against any checkout (``PYTHONPATH=<checkout>/src``) to compare before and after
on the same machine in the same minutes; ``--label`` names the row.  Prints one table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEARTBEAT_MS = 20


class Heartbeat:
    """Records the gaps between beats of a GUI-thread timer.

    With ``why_ms``, a watchdog thread prints where the GUI thread is whenever no beat
    came for that long (the innermost frames of napari-inif, napari, vispy or Qt code).
    """

    def __init__(self, why_ms: float | None = None) -> None:
        from qtpy.QtCore import QTimer

        self.why_ms = why_ms
        self.seen: set[str] = set()
        if why_ms:
            import threading

            main = threading.main_thread().ident
            threading.Thread(target=self._watch, args=(main,), daemon=True).start()
        self.beats: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(HEARTBEAT_MS)
        self.timer.timeout.connect(lambda: self.beats.append(time.perf_counter()))

    def _watch(self, main: int) -> None:
        import traceback

        while True:
            time.sleep(0.02)
            try:
                if not self.timer.isActive() or not self.beats:
                    continue
            except RuntimeError:  # Qt deleted the timer at exit
                return
            late = (time.perf_counter() - self.beats[-1]) * 1000
            if late < self.why_ms:
                continue
            frame = sys._current_frames().get(main)
            stack = traceback.extract_stack(frame)[-14:]
            where = " <- ".join(
                f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack)
            )
            if where not in self.seen:
                self.seen.add(where)
                print(f"  [{late:.0f} ms late] {where}", flush=True)

    def start(self) -> None:
        self.beats = [time.perf_counter()]
        self.timer.start()

    def stop(self) -> dict[str, float]:
        self.timer.stop()
        self.beats.append(time.perf_counter())
        gaps = np.diff(self.beats) * 1000 - HEARTBEAT_MS
        gaps = np.clip(gaps, 0, None)
        return {
            "max_ms": float(gaps.max(initial=0.0)),
            "p99_ms": float(np.percentile(gaps, 99)) if len(gaps) else 0.0,
            "wall_s": self.beats[-1] - self.beats[0],
        }


def _wait(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def _wait_until(app, condition, timeout: float) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.002)
    return False


def _big_inif(path: Path, planes: int, size: int) -> None:
    import tifffile

    from napari_inif._sample_data import SAMPLE_TIFF
    from napari_inif.core import CompressionConfig, compress

    cells = tifffile.imread(SAMPLE_TIFF)
    reps = -(-size // cells.shape[1])
    stack = np.stack(
        [np.tile(cells[i % len(cells)], (reps, reps))[:size, :size] for i in range(planes)]
    )
    encoded = compress(stack, CompressionConfig(ratio=64, steps=5, device="cpu"), axes="TYX")
    encoded.save(path)


def _settled(viewer, layer) -> bool:
    """Whether the layer's slice on screen is the one of the current dims."""
    sliced = getattr(layer, "_slice_input", None)
    point = tuple(viewer.dims.point)
    if sliced is None:
        return True
    loaded = getattr(layer, "loaded", True)
    return bool(loaded) and tuple(sliced.world_slice.point) == point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--planes", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--zsteps", type=int, default=40)
    parser.add_argument("--label", default=os.environ.get("BENCH_LABEL", "this checkout"))
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--why", type=float, default=None, help="print stacks of freezes > ms")
    args = parser.parse_args(argv)

    import napari
    import tifffile
    from qtpy.QtWidgets import QApplication

    import napari_inif
    from napari_inif._qt import compress_widget
    from napari_inif._qt.compress_widget import PRESETS, CompressWidget
    from napari_inif._sample_data import SAMPLE_TIFF

    print(f"napari-inif from {Path(napari_inif.__file__).parent}", flush=True)
    print(f"load: {os.getloadavg()}", flush=True)
    tmp = Path(tempfile.mkdtemp())
    big = tmp / "big.inif"
    _big_inif(big, args.planes, args.size)

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    app = QApplication.instance()
    beat = Heartbeat(args.why)
    rows: dict[str, dict[str, float]] = {}
    _wait(app, 1.0)

    if not args.skip_fit:
        viewer.add_image(tifffile.imread(SAMPLE_TIFF), name="cells", axis_labels=list("TYX"))
        widget = CompressWidget(viewer)
        viewer.window.add_dock_widget(widget)
        compress_widget.PREVIEW_EVERY = 0.5
        PRESETS["Quick (1000 steps)"] = args.steps
        widget.preset.setCurrentText("Quick (1000 steps)")
        widget.set_ratio(16)
        warmed = getattr(compress_widget, "_WARMED", None)  # the dock's warm-up (if any)
        _wait_until(app, lambda: warmed is None or warmed.is_set(), 60)
        _wait(app, 0.5)
        beat.start()
        widget.start()  # the click on Start, and what it shows within 0.5 s
        _wait(app, 0.5)
        rows["start"] = beat.stop()
        beat.start()
        _wait_until(app, lambda: widget._run is None and widget.result is not None, 600)
        _wait(app, 1.0)  # the result layer's first draw
        rows["fit"] = beat.stop()
        viewer.window.remove_dock_widget(widget)
        viewer.layers.clear()
        _wait(app, 0.5)

    beat.start()
    [layer] = viewer.open(str(big), plugin=None)
    _wait_until(app, lambda: _settled(viewer, layer), 120)
    _wait(app, 0.5)
    rows["open"] = beat.stop()

    def browse(layer, tag: str) -> None:
        viewer.reset_view()
        _wait(app, 0.5)
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        base_zoom = camera.zoom
        center = np.asarray(camera.center, float)
        beat.start()
        for i in range(30):
            camera.zoom = base_zoom * (1 + 5 * i / 29)
            offset = 0.3 * args.size * np.array([np.sin(i / 4), np.cos(i / 5)])
            camera.center = (*center[:-2], *(center[-2:] + offset))
            _wait(app, 0.06)
        _wait(app, 0.5)
        rows[f"pan+zoom{tag}"] = beat.stop()
        viewer.reset_view()
        _wait(app, 0.5)
        beat.start()
        for i in range(args.zsteps):
            viewer.dims.set_current_step(0, (i + 1) % args.planes)
            _wait(app, 0.03)
        drag = time.perf_counter()
        _wait_until(app, lambda: _settled(viewer, layer), 120)
        settled = time.perf_counter() - drag
        _wait(app, 0.3)
        rows[f"Z drag{tag}"] = {**beat.stop(), "settled_s": settled}

    browse(layer, "")
    # The floor on this machine: the same browsing of the decoded stack held in memory
    # (napari and software OpenGL alone, nothing to decode).
    plain = viewer.add_image(np.asarray(layer.metadata["inif_field"]), name="numpy")
    layer.visible = False
    _wait(app, 0.5)
    browse(plain, " (numpy)")

    print(
        f"\nlongest GUI-thread freeze ({args.label}; heartbeat {HEARTBEAT_MS} ms; "
        f"{args.planes}x{args.size}x{args.size} .inif; load {os.getloadavg()[0]:.2f})"
    )
    print(f"{'scenario':<10} {'max ms':>8} {'p99 ms':>8} {'wall s':>8}  extra")
    for name, r in rows.items():
        extra = f"settled {r['settled_s']:.2f} s after the drag" if "settled_s" in r else ""
        print(f"{name:<10} {r['max_ms']:8.0f} {r['p99_ms']:8.0f} {r['wall_s']:8.2f}  {extra}")
    viewer.close()
    from qtpy.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(10_000)  # no request outlives Qt at exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
