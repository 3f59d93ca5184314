"""Hybrid mode vs pure field vs the codec alone, on the real data in ../shared/data.

Three measurements, all in one run on the CPU, each against a baseline measured in the
same run:

1. **Time to quality.**  Pure-field mode at its default budget (default
   :class:`CompressionConfig`, the asked ratio) reaches some PSNR in some time.  Hybrid
   mode at the same ratio is run with 0, 25, 50, 100, ... steps until its file reaches that
   PSNR; the time of that run (prior search + fit + quantisation) is compared with the
   pure run's time.  The first moment the pure fit's *training* PSNR passes its own final
   PSNR is reported too, as a lower bound for pure mode.
2. **Hybrid vs the codec alone at the same file size.**  Hybrid files at several budget
   splits; the same codec given the whole hybrid file size (no header, so the codec is
   favoured slightly).
3. **Codec priors side by side** at the asked budget, prior alone (incl. HEVC on stacks).

Usage (with the package installed, or ``PYTHONPATH=src``)::

    python benchmarks/bench_hybrid.py            # the full run (~30 min on a shared CPU)
    python benchmarks/bench_hybrid.py --quick    # small crops and few steps (~3 min)

Data: ../shared/data (see its README for provenance; cite the sources with numbers).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Case:
    """One image of the benchmark."""

    name: str
    file: str
    axes: str
    crop: tuple[slice, ...]
    prior: str  # the prior the hybrid runs use


def _cases(quick: bool, prior: str, stack_prior: str) -> list[Case]:
    if quick:
        return [
            Case(
                "AICS hiPSC C0 256x256",
                "bbbc034_AICS_12_134_C0.tif",
                "YX",
                (slice(384, 640), slice(384, 640)),
                prior,
            ),
            Case(
                "cancer cells 8x130x130 TYX",
                "cancer_cell_migration_crop_TYX.tif",
                "TYX",
                (slice(0, 8),),
                stack_prior,
            ),
        ]
    return [
        Case(
            "AICS hiPSC C0 512x512",
            "bbbc034_AICS_12_134_C0.tif",
            "YX",
            (slice(256, 768), slice(256, 768)),
            prior,
        ),
        Case("HeLa 3ch 512x672", "hela_cells_3ch.tif", "YXC", (), prior),
        Case(
            "cancer cells 48x130x130 TYX",
            "cancer_cell_migration_crop_TYX.tif",
            "TYX",
            (),
            stack_prior,
        ),
    ]


def _load(case: Case) -> np.ndarray:
    import tifffile

    return np.ascontiguousarray(tifffile.imread(DATA / case.file)[case.crop])


def _run(data, config, axes, log=None):
    from napari_inif.core import drive, fit

    t0 = time.perf_counter()
    enc = drive(fit(data, config, axes=axes), log)
    return enc, time.perf_counter() - t0


def _prior_alone(data, axes, codec, nbytes) -> tuple[float, int, float]:
    """PSNR, bytes and seconds of the codec alone in at most ``nbytes``."""
    from napari_inif.core.codec.fitter import normalise
    from napari_inif.core.hybrid import prior as hybrid
    from napari_inif.core.layout import Layout
    from napari_inif.core.metrics.quality import psnr

    layout = Layout.of(data, axes)
    norm, lo, hi = normalise(layout.to_canonical(data))
    t0 = time.perf_counter()
    p = hybrid.encode_prior(norm, layout, codec, nbytes)
    seconds = time.perf_counter() - t0
    lo_, hi_ = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    canon = (p.decoded + 1) / 2 * (hi_ - lo_) + lo_
    dec = layout.from_canonical(canon)
    if data.dtype.kind == "u":
        dec = np.clip(np.rint(dec), 0, np.iinfo(data.dtype).max)
    return psnr(data, dec), p.nbytes, seconds


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


def time_to_quality(cases, ratio, quick) -> None:
    """Part 1: hybrid vs pure, time to the pure mode's PSNR at its default budget."""
    from napari_inif.core import CompressionConfig

    ladder = (1, 10, 25, 50, 100) if quick else (1, 25, 50, 100, 200, 400, 800, 1500)
    rows = []
    for case in cases:
        data = _load(case)
        pure_cfg = CompressionConfig(ratio=ratio, device="cpu")
        if quick:
            pure_cfg = CompressionConfig(ratio=ratio, device="cpu", steps=200)
        trace: list[tuple[float, float]] = []

        def record(p, trace=trace):
            if p.phase == "fit":
                trace.append((p.elapsed, p.psnr))

        pure, pure_s = _run(data, pure_cfg, case.axes, record)
        goal = pure.header.fit["psnr"]
        # Training PSNR is per channel range; it matches the file's PSNR (data range) only
        # for one channel, so the lower bound is given for single-channel images only.
        single = pure.header.layout.channels == 1
        first = next((t for t, q in trace if q >= goal), float("nan")) if single else float("nan")
        print(
            f"[{case.name}] pure: {pure_cfg.steps} steps, {goal:.2f} dB, {pure_s:.1f} s "
            f"(training PSNR first >= that at {first:.1f} s), ratio {pure.ratio:.1f}",
            flush=True,
        )
        hyb, hyb_s, used = None, float("nan"), None
        for steps in ladder:
            cfg = CompressionConfig(
                ratio=ratio, device="cpu", mode="hybrid", prior=case.prior, steps=steps
            )
            enc, seconds = _run(data, cfg, case.axes)
            print(
                f"[{case.name}] hybrid {case.prior} {steps} steps: "
                f"{enc.header.fit['psnr']:.2f} dB, {seconds:.1f} s, ratio {enc.ratio:.1f}",
                flush=True,
            )
            if enc.header.fit["psnr"] >= goal:
                hyb, hyb_s, used = enc, seconds, steps
                break
        rows.append(
            [
                case.name,
                f"{ratio:g}",
                f"{pure.ratio:.1f}",
                f"{goal:.2f}",
                f"{pure_s:.1f}",
                f"{first:.1f}" if first == first else "n/a",
                f"{hyb.ratio:.1f}" if hyb else "-",
                case.prior,
                f"{used}" if used else "not reached",
                f"{hyb.header.fit['psnr']:.2f}" if hyb else "-",
                f"{hyb_s:.1f}",
                f"{pure_s / hyb_s:.1f}x",
                f"{first / hyb_s:.1f}x" if first == first else "n/a",
            ]
        )
    _table(
        "Time to the pure field's PSNR at its default budget (same ratio, same run)",
        [
            "image",
            "asked",
            "pure ratio",
            "pure PSNR dB",
            "pure s",
            "pure s (train PSNR first)",
            "hybrid ratio",
            "prior",
            "hybrid steps",
            "hybrid PSNR dB",
            "hybrid s",
            "speed-up",
            "speed-up vs lower bound",
        ],
        rows,
    )


def same_size(cases, ratio, quick) -> None:
    """Part 2: hybrid vs the codec alone given the hybrid file's size."""
    from napari_inif.core import BudgetError, CompressionConfig

    steps = 100 if quick else 300
    rows = []
    for case in cases:
        data = _load(case)
        for fraction in (0.5, 0.75, None):
            cfg = CompressionConfig(
                ratio=ratio,
                device="cpu",
                mode="hybrid",
                prior=case.prior,
                prior_fraction=fraction,
                steps=steps,
            )
            try:
                enc, seconds = _run(data, cfg, case.axes)
            except BudgetError as exc:
                rows.append([case.name, f"{fraction or 'auto'}", "-", "-", "-", "-", "-", str(exc)])
                continue
            prior_only, _, _ = _prior_alone(data, case.axes, case.prior, enc.header.prior["nbytes"])
            alone, alone_bytes, _ = _prior_alone(data, case.axes, case.prior, enc.nbytes)
            hyb = enc.header.fit["psnr"]
            rows.append(
                [
                    case.name,
                    f"{fraction or 'auto'}",
                    f"{enc.nbytes}",
                    f"{prior_only:.2f}",
                    f"{hyb:.2f}",
                    f"{alone:.2f} ({alone_bytes} B)",
                    f"{hyb - alone:+.2f}",
                    f"{seconds:.1f} s",
                ]
            )
            print(
                f"[{case.name}] split {fraction or 'auto'}: " + " | ".join(rows[-1][2:]), flush=True
            )
    _table(
        f"Hybrid ({steps} steps) vs the codec alone at the same file size",
        [
            "image",
            "prior share",
            "file bytes",
            "its prior alone dB",
            "hybrid dB",
            "codec alone at the file size dB",
            "hybrid - codec dB",
            "hybrid time",
        ],
        rows,
    )


def codecs(cases, ratio) -> None:
    """Part 3: every available codec prior alone at the budget."""
    from napari_inif.core import BudgetError
    from napari_inif.core.hybrid.prior import available_priors

    names = available_priors()
    rows = []
    for case in cases:
        data = _load(case)
        budget = int(data.nbytes / ratio)
        row = [case.name, str(budget)]
        for name in names:
            try:
                q, nbytes, seconds = _prior_alone(data, case.axes, name, budget)
                row.append(f"{q:.2f} ({nbytes} B, {seconds:.1f} s)")
            except BudgetError:
                row.append("does not fit")
        rows.append(row)
    _table(
        f"Codec priors alone at ratio {ratio:g} (PSNR dB, bytes, search time)",
        ["image", "budget B", *names],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints markdown tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small crops and few steps")
    p.add_argument("--ratio", type=float, default=64.0)
    p.add_argument("--prior", default="avif", help="prior for 2-D images")
    p.add_argument("--stack-prior", default=None, help="prior for stacks (default hevc/avif)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--parts", default="123", help="which parts to run, e.g. 13")
    args = p.parse_args(argv)

    import torch

    from napari_inif.core.registry import CODECS

    torch.set_num_threads(args.threads)
    stack_prior = args.stack_prior or ("hevc" if CODECS["hevc"].available() else args.prior)
    cases = _cases(args.quick, args.prior, stack_prior)
    print(
        f"CPU run: torch {torch.__version__}, {args.threads} thread(s), "
        f"{os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.1f}"
    )
    start = time.perf_counter()
    if "3" in args.parts:
        codecs(cases, args.ratio)
    if "1" in args.parts:
        time_to_quality(cases, args.ratio, args.quick)
    if "2" in args.parts:
        same_size(cases, args.ratio, args.quick)
    print(
        f"\ntotal {time.perf_counter() - start:.0f} s; load average at end {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
