"""Tables, CSV files and plots of benchmark results."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import NamedTuple

from .rd import RDRow
from .speed import SpeedRow

__all__ = [
    "Headline",
    "diagnosis_table",
    "headline",
    "headline_table",
    "markdown_report",
    "plot_rd",
    "plot_speed",
    "rd_table",
    "speed_table",
    "write_csv",
]


def write_csv(path: str | os.PathLike[str], rows: Sequence[object], kind: type) -> Path:
    """Write dataclass ``rows`` of type ``kind`` as CSV (header from its fields)."""
    path = Path(path)
    names = [f.name for f in fields(kind)]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in asdict(row).items()})  # type: ignore[call-overload]
    return path


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _f(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def rd_table(rows: Sequence[RDRow]) -> str:
    """Markdown table of the rate-distortion rows."""
    lines = [
        "| case | crop | ratio | method | layout | bytes | actual ratio | PSNR dB | SSIM "
        "| Dice | encode s | decode s | setting / note |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.status == "ok":
            setting = r.setting
            if r.family == "inif":
                setting += (
                    f"; unquantised {_f(r.psnr_float)} dB; {r.levels} levels, "
                    f"{_f(r.bits_per_param)} bits/param; {r.overhead_bytes} B header"
                )
            lines.append(
                f"| {r.case} | {r.crop} | {r.ratio:g}x | {r.method} | {r.layout} | {r.nbytes} "
                f"| {r.ratio_actual:.1f} | {_f(r.psnr)} | {_f(r.ssim, 4)} | {_f(r.dice, 3)} "
                f"| {_f(r.encode_s, 2)} | {_f(r.decode_s, 3)} | {setting} |"
            )
        else:
            lines.append(
                f"| {r.case} | {r.crop} | {r.ratio:g}x | {r.method} | {r.layout} | - | - | - "
                f"| - | - | - | - | {r.status}: {r.note} |"
            )
    return "\n".join(lines)


class Headline(NamedTuple):
    """napari-inif against the best classic codec at one ratio (``nan``: missing)."""

    case: str
    ratio: float
    inif_psnr: float
    best_classic: str
    best_psnr: float
    delta_db: float  # inif - best
    siren_psnr: float


def headline(rows: Sequence[RDRow], min_ratio: float = 128.0) -> list[Headline]:
    """For stacks at ``ratio >= min_ratio``: inif PSNR against the best classic codec.

    When no stack was run at such a ratio (``--quick``), all stack ratios are listed.
    """
    out = []
    stacks = {(r.case, r.ratio) for r in rows if r.shape.count("x") == 2}
    keys = sorted(k for k in stacks if k[1] >= min_ratio) or sorted(stacks)
    for case, ratio in keys:
        here = [r for r in rows if r.case == case and r.ratio == ratio and r.status == "ok"]
        inif = next((r.psnr for r in here if r.method == "inif"), math.nan)
        siren = next((r.psnr for r in here if r.method == "siren"), math.nan)
        classic = [r for r in here if r.family == "classic"]
        if classic:
            best = max(classic, key=lambda r: r.psnr)
            name, best_psnr = f"{best.method}/{best.layout}", best.psnr
        else:
            name, best_psnr = "none reaches the size", math.nan
        out.append(Headline(case, ratio, inif, name, best_psnr, inif - best_psnr, siren))
    return out


def headline_table(items: Sequence[Headline]) -> str:
    """Markdown table of :func:`headline`."""
    lines = [
        "| case | ratio | inif PSNR dB | best classic at equal size | its PSNR dB "
        "| inif - best (dB) | plain SIREN PSNR dB |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for case, ratio, inif, name, best, delta, siren in items:
        lines.append(
            f"| {case} | {ratio:g}x | {_f(inif)} | {name} | {_f(best)} | "
            f"{_f(delta)} | {_f(siren)} |"
        )
    return "\n".join(lines)


def diagnosis_table(rows: Sequence[RDRow], items: Sequence[Headline]) -> str:
    """Where the napari-inif rows of the headline lose: steps, quantisation, overhead."""
    lines = [
        "| case | ratio | method | PSNR dB | unquantised field dB | quantisation loss dB "
        "| training PSNR at 25/50/75/100% of steps | params | bits/param | header bytes "
        "(% of file) |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    wanted = {(h.case, h.ratio) for h in items}
    for r in rows:
        if (r.case, r.ratio) not in wanted or r.family != "inif" or r.status != "ok":
            continue
        lines.append(
            f"| {r.case} | {r.ratio:g}x | {r.method} | {_f(r.psnr)} | {_f(r.psnr_float)} "
            f"| {_f(r.psnr_float - r.psnr)} | {r.fit_curve} | {r.params} "
            f"| {_f(r.bits_per_param)} | {r.overhead_bytes} "
            f"({100 * r.overhead_bytes / r.nbytes:.0f}%) |"
        )
    return "\n".join(lines)


def speed_table(rows: Sequence[SpeedRow]) -> str:
    """Markdown table of the speed rows."""
    lines = ["| measure | volume | device | seconds | value | note |", "|---|---|---|---:|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.measure} | {r.volume} | {r.device} | {r.seconds:.3f} "
            f"| {r.value:.4g} {r.unit} | {r.note} |"
        )
    return "\n".join(lines)


def markdown_report(
    rd: Sequence[RDRow],
    speed: Sequence[SpeedRow],
    machine: dict,
    command: str,
    plots: Sequence[str],
) -> str:
    """The generated ``results.md``."""
    parts = [
        "# Benchmark results (generated)",
        "",
        f"Command: `{command}`",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()),
        "",
        "## napari-inif vs the best classic codec at equal size (stacks, 128x and above)",
        "",
        headline_table(headline(rd)),
        "",
        "Where the napari-inif bytes and error go at those points:",
        "",
        diagnosis_table(rd, headline(rd)),
        "",
        "## Rate-distortion",
        "",
        rd_table(rd),
        "",
    ]
    if speed:
        parts += ["## Speed and memory", "", speed_table(speed), ""]
    if plots:
        parts += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(parts)


_STYLE = {
    "inif": ("C3", "o", "-"),
    "siren": ("C7", "s", "--"),
    "inif-hybrid": ("C1", "D", "-"),
    "inif-guided": ("C6", "P", "-"),
    "jpegxl": ("C0", "v", ":"),
    "jpeg2k": ("C2", "^", ":"),
    "htj2k": ("C8", "<", ":"),
    "avif": ("C4", ">", ":"),
    "hevc": ("C5", "x", ":"),
}


def plot_rd(rows: Sequence[RDRow], out_dir: str | os.PathLike[str]) -> list[str]:
    """One PNG per case: PSNR and SSIM against the actual ratio; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for case in dict.fromkeys(r.case for r in rows):
        ok = [r for r in rows if r.case == case and r.status == "ok"]
        if not ok:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for key in dict.fromkeys((r.method, r.layout) for r in ok):
            pts = sorted(
                (r for r in ok if (r.method, r.layout) == key), key=lambda r: r.ratio_actual
            )
            colour, marker, line = _STYLE.get(key[0], ("k", ".", "-"))
            if key[1] == "mosaic":
                line = "-."
            label = key[0] if key[1] in ("field", "image") else f"{key[0]} ({key[1]})"
            for ax, metric in zip(axes, ("psnr", "ssim"), strict=True):
                ax.plot(
                    [r.ratio_actual for r in pts],
                    [getattr(r, metric) for r in pts],
                    marker=marker,
                    linestyle=line,
                    color=colour,
                    label=label,
                )
        first = ok[0]
        for ax, metric in zip(axes, ("PSNR (dB, data range)", "SSIM"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("compression ratio (raw bytes / file bytes)")
            ax.set_ylabel(metric)
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=7, ncol=2)
        fig.suptitle(f"{case}: {first.file} {first.crop} {first.shape} {first.dtype}", fontsize=9)
        fig.tight_layout()
        name = f"rd_{case}.png"
        fig.savefig(Path(out_dir) / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def plot_speed(rows: Sequence[SpeedRow], out_dir: str | os.PathLike[str]) -> list[str]:
    """Bar chart of the decode times; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    decode = [r for r in rows if r.measure.startswith("decode")]
    if not decode:
        return []
    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels = [f"{r.measure} [{r.device}]" for r in decode]
    ax.barh(labels, [r.seconds for r in decode], color="C0")
    ax.set_xscale("log")
    ax.set_xlabel("seconds (cold decoder)")
    ax.set_title(decode[0].volume, fontsize=8)
    fig.tight_layout()
    name = "speed_decode.png"
    fig.savefig(Path(out_dir) / name, dpi=110)
    plt.close(fig)
    return [name]
