"""Run the whole benchmark: rate-distortion, speed and memory, tables, CSV and plots."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_inif.core.registry import CODECS

from .cases import DEFAULT_CASES, QUICK_CASES, Case, find_data_dir
from .methods import METHODS
from .rd import RDRow, run_case
from .report import (
    diagnosis_table,
    headline,
    headline_table,
    markdown_report,
    plot_rd,
    plot_speed,
    rd_table,
    speed_table,
    write_csv,
)
from .speed import SpeedRow, run_speed

__all__ = ["BenchResult", "BenchSettings", "machine_info", "quick_settings", "run_bench"]

DEFAULT_RATIOS = (16.0, 64.0, 128.0, 256.0, 512.0)


@dataclass(frozen=True)
class BenchSettings:
    """What to run.  The defaults are the full benchmark (about 30 min on two cores).

    Attributes
    ----------
    out
        Folder for ``rd.csv``, ``speed.csv``, ``machine.json``, ``results.md`` and plots.
    data_dir
        Folder of the real images (``None``: :func:`~.cases.find_data_dir`).
    cases
        Images and crops.
    ratios
        Asked ratios; a ratio a file cannot reach is skipped with a message.
    steps
        Fitting steps of every napari-inif row (the same for plain SIREN).
    methods, codecs
        Names from :data:`~.methods.METHODS` and :data:`napari_inif.core.registry.CODECS`.
    seed
        Seed of every fit.
    device
        Device of the rate-distortion fits (``auto``: CUDA when available).
    threads
        ``torch.set_num_threads`` for this process and the speed subprocesses.
    speed
        Whether to run the speed and memory section.
    speed_case, tiled_shape
        Stack of the speed section and the shape it is mirror-tiled to for decoding.
    speed_steps
        Steps of the compression timing with the otherwise default config (``None``: the
        same as ``steps``; ``0``: the config's own default, which is slow on a CPU).
    tile_steps
        Steps of the fit on the tiled volume (only its decode speed and memory matter).
    speed_ratio
        Ratio of the speed and memory fits.
    config
        Extra ``CompressionConfig`` fields for every napari-inif row (``--set KEY=VALUE``),
        e.g. ``{"lr": 5e-4}``; recorded in ``machine.json``.
    plots
        Whether to write PNG plots (matplotlib).
    """

    out: Path = Path("docs/benchmarks")
    data_dir: Path | None = None
    cases: tuple[Case, ...] = DEFAULT_CASES
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    steps: int = 1200
    methods: tuple[str, ...] = field(
        default_factory=lambda: tuple(name for name, m in METHODS.items() if m.default)
    )
    codecs: tuple[str, ...] = field(default_factory=lambda: tuple(CODECS))
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    speed: bool = True
    speed_case: Case = DEFAULT_CASES[0]
    tiled_shape: tuple[int, ...] = (96, 520, 520)
    speed_steps: int | None = None
    tile_steps: int = 20
    speed_ratio: float = 64.0
    plots: bool = True
    config: Mapping[str, Any] = field(default_factory=dict)


def quick_settings(**overrides: object) -> BenchSettings:
    """The ``--quick`` preset: one tiny crop, two ratios, 200 steps, a small speed volume."""
    values: dict[str, object] = {
        "cases": QUICK_CASES,
        "ratios": (16.0, 64.0),
        "steps": 200,
        "speed_case": QUICK_CASES[0],
        "tiled_shape": (64, 128, 128),
        "speed_steps": 200,
        "tile_steps": 5,
    }
    values.update(overrides)
    return replace(BenchSettings(), **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BenchResult:
    """Everything a run produced."""

    rd: list[RDRow]
    speed: list[SpeedRow]
    machine: dict[str, object]
    files: list[Path]
    problems: list[str]  # non-finite numbers, budget overruns: empty when all is well
    seconds: float

    @property
    def ok(self) -> bool:
        """No problems found."""
        return not self.problems


def _first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "absent"
    return out.splitlines()[0] if out else "absent"


def machine_info() -> dict[str, object]:
    """Where and with what the numbers were measured."""
    import imagecodecs
    import torch

    from .. import __version__

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for fn in ("jpegxl_version", "jpeg2k_version", "htj2k_version", "avif_version"):
        try:
            versions.append(getattr(imagecodecs, fn)())
        except (AttributeError, RuntimeError):
            pass
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "torch threads": torch.get_num_threads(),
        "load average at start": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "napari-inif": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "imagecodecs": f"{imagecodecs.__version__} ({', '.join(versions)})",
        "ffmpeg": _first_line(["ffmpeg", "-version"]),
    }


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (a shared machine's honest clock)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _problems(rd: Sequence[RDRow], speed: Sequence[SpeedRow]) -> list[str]:
    problems = []
    ok = [r for r in rd if r.status == "ok"]
    if not ok:
        problems.append("no rate-distortion row was produced")
    for r in ok:
        tag = f"{r.case} {r.ratio:g}x {r.method}/{r.layout}"
        for name in ("psnr", "psnr_dtype", "ssim", "dice", "ratio_actual", "encode_s", "decode_s"):
            if not math.isfinite(getattr(r, name)):
                problems.append(f"{tag}: {name} is {getattr(r, name)}")
        if r.nbytes <= 0:
            problems.append(f"{tag}: no bytes")
        if r.family == "classic" and r.nbytes > r.budget:
            problems.append(f"{tag}: {r.nbytes} bytes over the budget of {r.budget}")
    for s in speed:
        if not (math.isfinite(s.seconds) and math.isfinite(s.value)):
            problems.append(f"speed {s.measure} on {s.device}: not finite")
    return problems


def run_bench(
    settings: BenchSettings,
    *,
    command: str = "inif bench",
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Run the benchmark and write its files into ``settings.out``."""
    import torch

    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    data_dir = find_data_dir(settings.data_dir)
    unknown = [m for m in settings.methods if m not in METHODS]
    unknown += [c for c in settings.codecs if c not in CODECS]
    if unknown:
        raise ValueError(
            f"unknown methods/codecs: {', '.join(unknown)} (methods: "
            f"{', '.join(METHODS)}; codecs: {', '.join(CODECS)})"
        )
    methods = [METHODS[m] for m in settings.methods]
    codecs = []
    machine = machine_info()
    skipped = []
    for name in settings.codecs:
        reason = CODECS[name].unavailable()
        if reason:
            log(f"codec {name} skipped: {reason}")
            skipped.append(f"{name} ({reason})")
        else:
            codecs.append(CODECS[name])
    for method in methods:
        reason = method.unavailable()
        if reason:
            log(f"method {method.name} skipped: {reason}")
            skipped.append(f"{method.name} ({reason})")
    if skipped:
        machine["skipped"] = "; ".join(skipped)
    if settings.config:
        machine["config overrides"] = dict(settings.config)
    log(
        f"benchmark: {len(settings.cases)} case(s), ratios "
        f"{', '.join(f'{r:g}x' for r in settings.ratios)}, {settings.steps} steps, "
        f"device {settings.device}, data {data_dir}"
    )
    rd: list[RDRow] = []
    for case in settings.cases:
        data = case.load(data_dir)
        log(
            f"{case.name}: {case.file} {case.crop_text} -> {data.shape} {data.dtype} "
            f"({data.nbytes} bytes)"
        )
        t0 = time.perf_counter()
        rd += run_case(
            case,
            data,
            ratios=settings.ratios,
            steps=settings.steps,
            methods=methods,
            codecs=codecs,
            seed=settings.seed,
            device=settings.device,
            extra=settings.config,
            log=log,
        )
        log(f"{case.name}: done in {time.perf_counter() - t0:.0f} s")
    speed: list[SpeedRow] = []
    if settings.speed:
        log("speed and memory:")
        case = settings.speed_case
        speed = run_speed(
            case.load(data_dir),
            case.axes,
            name=case.name,
            tiled_shape=settings.tiled_shape,
            steps=settings.steps if settings.speed_steps is None else settings.speed_steps,
            tile_steps=settings.tile_steps,
            ratio=settings.speed_ratio,
            seed=settings.seed,
            threads=settings.threads,
            log=log,
        )
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = time.perf_counter() - start
    machine["bench seconds"] = round(seconds, 1)
    machine["bench CPU seconds"] = round(_cpu_seconds() - cpu_start, 1)
    files = [write_csv(out / "rd.csv", rd, RDRow)]
    if speed:
        files.append(write_csv(out / "speed.csv", speed, SpeedRow))
    plots = (plot_rd(rd, out) + plot_speed(speed, out)) if settings.plots else []
    files += [out / p for p in plots]
    (out / "machine.json").write_text(json.dumps({"command": command, **machine}, indent=2) + "\n")
    (out / "results.md").write_text(markdown_report(rd, speed, machine, command, plots))
    files += [out / "machine.json", out / "results.md"]
    print(rd_table(rd))
    print()
    print(headline_table(headline(rd)))
    print()
    print(diagnosis_table(rd, headline(rd)))
    if speed:
        print()
        print(speed_table(speed))
    problems = _problems(rd, speed)
    for p in problems:
        log(f"problem: {p}")
    log(
        f"benchmark finished in {seconds:.0f} s ({machine['bench CPU seconds']:.0f} CPU s); "
        f"files in {out}"
    )
    return BenchResult(rd, speed, machine, files, problems, seconds)
