"""Speed and memory: compression time, decode time of a volume, a viewport and an ROI.

- Compression to the default quality: ``CompressionConfig(ratio=64)`` (the CLI's
  default ratio) on a real stack, in a subprocess, with the benchmark's steps (the
  config's own default is slow on a CPU; the time at its step count is extrapolated).
- Decoding: a larger volume is made by mirror-tiling a real stack (``numpy.pad`` mode
  ``symmetric``); it is compressed with only a few steps, since decode cost depends on
  the architecture (blocks, widths, depth), not on how long it was fitted.  Then, each
  with a fresh decoder (cold caches): the full volume, a 512x512 viewport of one plane,
  and a 64^3 ROI.
- Memory: peak RSS (``resource.getrusage(...).ru_maxrss`` of a subprocess) while
  compressing that largest volume, and on a GPU ``torch.cuda.max_memory_allocated``.

Everything runs on the CPU, and again on CUDA when torch sees a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SpeedRow", "mirror_tile", "run_speed"]

NAN = float("nan")


@dataclass(frozen=True)
class SpeedRow:
    """One speed or memory measurement."""

    measure: str
    volume: str
    device: str
    seconds: float
    value: float  # in ``unit``
    unit: str
    note: str


def mirror_tile(data: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``data`` extended to ``shape`` by mirror reflection (no seams)."""
    pad = [(0, max(0, n - m)) for n, m in zip(shape, data.shape, strict=True)]
    out = np.pad(data, pad, mode="symmetric")
    return np.ascontiguousarray(out[tuple(slice(0, n) for n in shape)])


def _worker(
    data: np.ndarray,
    axes: str,
    *,
    ratio: float,
    steps: int | None,
    device: str,
    seed: int,
    threads: int | None,
    tmp: Path,
    name: str,
) -> tuple[dict, Path]:
    src, dst = tmp / f"{name}.npy", tmp / f"{name}.inif"
    np.save(src, data)
    settings = {
        "input": str(src),
        "output": str(dst),
        "axes": axes,
        "ratio": ratio,
        "steps": steps,
        "device": device,
        "seed": seed,
        "threads": threads,
    }
    env = dict(os.environ)
    src_dir = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src_dir, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "napari_inif.bench._worker", json.dumps(settings)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), dst


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_speed(
    stack: np.ndarray,
    axes: str,
    *,
    name: str,
    tiled_shape: Sequence[int],
    steps: int,
    tile_steps: int,
    ratio: float = 64.0,
    seed: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> list[SpeedRow]:
    """All speed rows (see the module docstring); ``steps=0``: the config's default steps."""
    from napari_inif.core.codec.decode import FieldDecoder, InifArray
    from napari_inif.core.codec.quant import dequantise

    from ..core import CompressionConfig, Encoded, load

    devices = ["cpu"] + (["cuda"] if _cuda_available() else [])
    tiled = mirror_tile(stack, tiled_shape)
    real_text = f"{name} {'x'.join(map(str, stack.shape))} (real)"
    tiled_text = (
        f"{name} mirror-tiled to {'x'.join(map(str, tiled.shape))} "
        f"({tiled.nbytes / 2**20:.0f} MiB, made from the real stack)"
    )
    rows: list[SpeedRow] = []
    with tempfile.TemporaryDirectory(prefix="inif-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for device in devices:
            info, _ = _worker(
                stack,
                axes,
                ratio=ratio,
                steps=steps or None,
                device=device,
                seed=seed,
                threads=threads,
                tmp=tmp,
                name=f"real-{device}",
            )
            default = CompressionConfig().steps
            note = f"{info['steps']} steps, {info['threads']} torch threads, SSIM {info['ssim']}"
            if info["steps"] != default:
                note += (
                    f"; the config default is {default} steps: about "
                    f"{info['seconds'] * default / info['steps']:.0f} s at this rate "
                    "(extrapolated)"
                )
            rows.append(
                SpeedRow(
                    f"compress {ratio:g}x, default config but steps",
                    real_text,
                    info["device"],
                    info["seconds"],
                    info["psnr"],
                    "dB PSNR",
                    note,
                )
            )
            log(
                f"  compress {real_text} on {info['device']}: {info['seconds']:.1f} s, "
                f"{info['steps']} steps, PSNR {info['psnr']} dB"
            )
            info, path = _worker(
                tiled,
                axes,
                ratio=ratio,
                steps=tile_steps,
                device=device,
                seed=seed,
                threads=threads,
                tmp=tmp,
                name=f"tiled-{device}",
            )
            rows.append(
                SpeedRow(
                    f"peak RSS, compress {ratio:g}x",
                    tiled_text,
                    info["device"],
                    info["seconds"],
                    info["rss_peak_mib"],
                    "MiB",
                    f"{tile_steps} steps; RSS {info['rss_start_mib']:.0f} MiB after imports + "
                    f"loading the input; raw input {tiled.nbytes / 2**20:.0f} MiB",
                )
            )
            log(
                f"  peak RSS compressing {tiled_text} on {info['device']}: "
                f"{info['rss_peak_mib']:.0f} MiB ({info['seconds']:.1f} s, {tile_steps} steps)"
            )
            if info.get("cuda_peak_mib") is not None:
                rows.append(
                    SpeedRow(
                        f"peak CUDA memory, compress {ratio:g}x",
                        tiled_text,
                        info["device"],
                        info["seconds"],
                        info["cuda_peak_mib"],
                        "MiB",
                        "torch.cuda.max_memory_allocated",
                    )
                )
            encoded = load(path)
            assert isinstance(encoded, Encoded)  # the SIREN file written above
            n_blocks = encoded.header.grid.n_blocks
            t, h, w = tiled.shape
            vp = (min(512, h), min(512, w))
            roi = tuple(min(64, n) for n in tiled.shape)
            at = [(n - k) // 2 for n, k in zip(tiled.shape, roi, strict=True)]
            selections = [
                ("decode full volume", (slice(None),) * 3, tiled.size),
                (
                    f"decode viewport {vp[0]}x{vp[1]} (one plane)",
                    (t // 2, slice(0, vp[0]), slice(0, vp[1])),
                    vp[0] * vp[1],
                ),
                (
                    f"decode ROI {'x'.join(map(str, roi))}",
                    tuple(slice(a, a + k) for a, k in zip(at, roi, strict=True)),
                    int(np.prod(roi)),
                ),
            ]
            for measure, key, voxels in selections:
                start = time.perf_counter()
                decoder = FieldDecoder(encoded.header, dequantise(encoded.weights), device)
                out = InifArray(decoder)[key]
                if device == "cuda":
                    import torch

                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                assert out.size == voxels
                rows.append(
                    SpeedRow(
                        measure,
                        tiled_text,
                        device,
                        seconds,
                        voxels / seconds / 1e6,
                        "Mvoxel/s",
                        f"{len(decoder.blocks_evaluated)}/{n_blocks} blocks evaluated",
                    )
                )
                log(
                    f"  {measure} on {device}: {seconds:.3f} s "
                    f"({len(decoder.blocks_evaluated)}/{n_blocks} blocks)"
                )
    return rows
