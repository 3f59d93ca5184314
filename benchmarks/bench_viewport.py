"""Panning a 3D decoded layer: time per refreshed 512x512 view vs decoding the whole plane.

    python benchmarks/bench_viewport.py [--size 2048] [--planes 6] [--ratio 256] [--steps 200]

The volume is made from real data: the three 1024x1024 channels of BBBC034 (hiPSC,
../shared/data) and their mirror images as 6 "Z" planes, each tiled 2x2 with mirroring
to 2048x2048 (so there are no seams; the content repeats, which does not change the
timing).  It is compressed once (few steps: only the network size matters here) and
then viewed the way napari views a multiscale layer:

* ``view``: what napari does on a pan of a 2D view at full resolution - index the
  visible 512x512 box of level 0 with every other axis whole, then the current plane,
  then ``np.asarray`` (``_ScalarFieldSliceRequest._call_multi_scale``).  Thanks to
  the dask array only the chunks of the 512x512 box of one plane is decoded.
* ``box, all planes``: the same box decoded eagerly in every plane (what indexing the
  ``InifArray`` directly in napari's first step would cost).
* ``plane``: the whole plane decoded (what a non-lazy reader must do per slice).
* ``napari``: a real napari ``ViewerModel`` refresh of a 512x512 canvas after a pan
  (no Qt; drives the layer's draw hook like the canvas does).
* ``viewport 2x``: the viewport sampler's request when zoomed in 2x past the pixels
  (256x256 stored pixels sampled 2x finer = a 512x512 screen).

Times are the median over pan positions, after one warm-up; CPU, ``--threads`` torch
threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VIEW = 512


def _volume(size: int, planes: int) -> np.ndarray:
    import tifffile

    channels = [tifffile.imread(SHARED / f"bbbc034_AICS_12_134_C{c}.tif") for c in range(3)]
    stack = channels + [c[:, ::-1] for c in channels]
    out = []
    for plane in stack[:planes]:
        row = np.concatenate([plane, plane[:, ::-1]], axis=1)
        tiled = np.concatenate([row, row[::-1]], axis=0)
        out.append(tiled[:size, :size])
    return np.ascontiguousarray(np.stack(out))


def _median_time(fn, positions) -> float:
    fn(*positions[0])  # warm-up (weights of the touched blocks are cached)
    times = []
    for pos in positions[1:]:
        start = time.perf_counter()
        fn(*pos)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--planes", type=int, default=6)
    p.add_argument("--ratio", type=float, default=256.0)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", type=Path, default=None, help="reuse/save the .inif here")
    args = p.parse_args(argv)

    import torch

    from napari_inif._layers import (
        FIELD_KEY,
        decoded_layer_data,
        finer_region,
        viewport_request,
    )
    from napari_inif.core import CompressionConfig, compress, load

    torch.set_num_threads(args.threads)
    if args.cache is not None and args.cache.exists():
        encoded = load(args.cache)
        print(f"loaded {args.cache}")
    else:
        volume = _volume(args.size, args.planes)
        start = time.perf_counter()
        encoded = compress(
            volume,
            CompressionConfig(ratio=args.ratio, steps=args.steps, device="cpu"),
            axes="ZYX",
        )
        print(f"compressed {volume.shape} {volume.dtype} in {time.perf_counter() - start:.0f} s")
        if args.cache is not None:
            encoded.save(args.cache)
    h = encoded.header
    print(
        f"field: {h.grid.n_blocks} blocks {h.grid_counts}, depth {h.depth}, widths "
        f"{min(h.widths)}-{max(h.widths)}, ratio {encoded.ratio:.0f}x, PSNR {h.fit['psnr']} dB"
    )
    levels, meta, _ = decoded_layer_data(encoded, name="bench")
    level0 = levels[0]
    field = meta["metadata"][FIELD_KEY]
    n_z, n_y, n_x = level0.shape
    z = n_z // 2
    # a pan: the view moves by a quarter view per refresh, across the plane
    ys = np.linspace(0, n_y - VIEW, 9).astype(int)
    xs = np.linspace(0, n_x - VIEW, 9).astype(int)
    positions = list(zip(ys, xs, strict=True))

    def view(y: int, x: int) -> np.ndarray:
        tile = level0[:, y : y + VIEW, x : x + VIEW]
        return np.asarray(tile[z])

    def box_all_planes(y: int, x: int) -> np.ndarray:
        return field[:, y : y + VIEW, x : x + VIEW]

    def plane(y: int, x: int) -> np.ndarray:
        return np.asarray(level0[z])

    layer = _NapariLayer(levels, meta, z)

    def napari_view(y: int, x: int) -> None:
        layer.pan(y, x)

    def viewport(y: int, x: int) -> np.ndarray:
        # What the sampler does for a 512x512 canvas zoomed 2x past the pixels: the
        # region from the camera and canvas size, then the samples.
        half = VIEW // 4
        request = viewport_request(
            layer.layer,
            [z, y + half, x + half],
            (1, 2),
            center=(z, y + half, x + half),
            zoom=2.0,
            canvas_size=(VIEW, VIEW),
        )
        assert request is not None and request.k == 2
        return finer_region(layer.layer, request.region, request.k).data

    rows = [
        ("view 512x512 (dask, 1 plane)", view, positions),
        (f"box 512x512, all {n_z} planes", box_all_planes, positions[:4]),
        (f"whole plane {n_y}x{n_x}", plane, positions[:3]),
        ("napari ViewerModel refresh 512x512", napari_view, positions),
        ("viewport 2x: 512x512 canvas, from the camera", viewport, positions),
    ]
    print(f"\n{'what':<40} {'median s':>9} {'Mpx/s':>7}   (CPU, {args.threads} torch thread(s))")
    results = {}
    for name, fn, pos in rows:
        t = _median_time(fn, pos)
        results[name] = t
        px = VIEW * VIEW if "whole" not in name and "all" not in name else None
        if "all" in name:
            px = n_z * VIEW * VIEW
        if "whole" in name:
            px = n_y * n_x
        print(f"{name:<40} {t:>9.3f} {px / t / 1e6:>7.2f}")
    whole = results[f"whole plane {n_y}x{n_x}"]
    lazy = results["view 512x512 (dask, 1 plane)"]
    print(f"\nwhole plane / lazy view = {whole / lazy:.1f}x")
    return 0


class _NapariLayer:
    """A napari ViewerModel (no Qt) showing the levels; ``pan`` refreshes like a canvas."""

    def __init__(self, levels, meta, z: int):
        from napari.components import ViewerModel

        self.viewer = ViewerModel()
        self.layer = self.viewer.add_image(levels, **meta)
        self.viewer.dims.set_current_step(0, z)

    def pan(self, y: int, x: int) -> None:
        corners = np.array([[y, x], [y + VIEW - 1, x + VIEW - 1]], float)
        # what QtViewer does on a draw: visible box in world coordinates + canvas size
        self.layer._update_draw(1.0, corners, (VIEW, VIEW))
        np.asarray(self.layer._slice.image.raw)


if __name__ == "__main__":
    sys.exit(main())
