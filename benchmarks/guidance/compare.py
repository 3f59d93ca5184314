"""Guided vs unguided fits at one ratio: PSNR, SSIM and segmentation agreement.

Each image of ``../shared/data`` listed in :data:`IMAGES` is compressed at the same ratio
with every guidance asked for; the decoded image is then segmented with the same Cellpose
network as the original (default: the bundled ``inif_nuclei_small``) and with the
classical segmentation, and the agreement (F1 / AP at IoU 0.5, mean IoU of matched
nuclei) is reported next to PSNR and SSIM.  Writes a JSON file and a Markdown table.

Usage (one torch thread; about ten minutes on a shared CPU core)::

    PYTHONPATH=src python benchmarks/guidance/compare.py --steps 800 --out /tmp/guidance
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"

#: name -> (file, plane selection, ratios), at ratios >= 128x where unguided fits start to
#: lose nuclei.  BBBC038 (41 nuclei) cannot be guided at 128x: its 512-byte file has no
#: room for the guidance record (largest ratio 113x); BBBC034's field holds ~20 nuclei.
IMAGES = {
    "BBBC022 nuclei (395x695 u16)": ("bbbc022_IXMtest_A02_s9_CYX.tif", lambda a: a[0], (256, 512)),
    "BBBC034 nuclei (1024x1024 u16)": ("bbbc034_AICS_12_134_C2.tif", lambda a: a, (1024,)),
}


def load_image(name: str, data: Path = DATA) -> tuple[np.ndarray, float]:
    """The image of :data:`IMAGES` called ``name`` and its nucleus diameter in pixels
    (from the classical labels)."""
    import tifffile
    from cellpose import utils

    from napari_inif.core.segmentation import segment_classical

    file, take, _ = IMAGES[name]
    image = take(tifffile.imread(Path(data) / file))
    return image, float(utils.diameters(segment_classical(image))[0])


def fit_row(
    name: str,
    image: np.ndarray,
    diameter: float,
    ratio: int,
    seed: int,
    guidance: str,
    *,
    steps: int,
    model: str,
    weight: float,
    device: str,
    net: Any,
) -> dict | None:
    """Compress ``image`` once and measure it; ``None`` (with a printed reason) when the
    ratio cannot be reached.  ``net`` segments original and decoded for the agreement."""
    from napari_inif.core import BudgetError, CompressionConfig, compress
    from napari_inif.core.segmentation import segmentation_agreement

    config = CompressionConfig(
        ratio=ratio,
        steps=steps,
        device=device,
        seed=seed,
        guidance=guidance,
        guidance_model=None if guidance in ("none", "ssim") else model,
        guidance_weight=weight,
        guidance_diameter=diameter,
    )
    start = time.perf_counter()
    try:
        encoded = compress(image, config)
    except BudgetError as exc:
        print(f"{name} {ratio}x {guidance}: {exc}", flush=True)
        return None
    seconds = time.perf_counter() - start
    decoded = encoded.array()[...]
    fit = encoded.header.fit
    cp = segmentation_agreement(
        image.astype(np.float32),
        decoded.astype(np.float32),
        lambda p: net.segment(p, diameter=diameter),
        method=f"cellpose:{net.name}",
    )
    classical = segmentation_agreement(
        image.astype(np.float32), decoded.astype(np.float32), diameter=diameter
    )
    return {
        "image": name,
        "asked_ratio": ratio,
        "guidance": guidance,
        "seed": seed,
        "weight": weight if guidance != "none" else 0,
        "ratio": round(encoded.ratio, 1),
        "psnr": fit["psnr"],
        "ssim": fit["ssim"],
        "f1": round(cp.f1, 3),
        "ap": round(cp.ap, 3),
        "mean_iou": round(cp.mean_iou, 3),
        "n_original": cp.n_original,
        "n_decoded": cp.n_decoded,
        "f1_classical": round(classical.f1, 3),
        "ap_classical": round(classical.ap, 3),
        "steps": fit["steps"],
        "fit_seconds": fit["seconds"],
        "total_seconds": round(seconds, 1),
        "diameter": round(diameter, 1),
        "header_agreement": fit.get("guidance", {}).get("agreement"),
        "device": device,
    }


def run(
    guidances: list[str],
    steps: int,
    model: str,
    names: list[str] | None,
    weight: float,
    seeds: list[int],
    device: str = "cpu",
) -> list[dict]:
    """Fit every image with every guidance; one result row per fit."""
    from napari_inif.core.cellpose_net import load_cellpose

    net = load_cellpose(model)
    rows = []
    for name, (_, _, ratios) in IMAGES.items():
        if names and not any(n in name for n in names):
            continue
        image, diameter = load_image(name)
        for ratio, seed, guidance in ((r, s, g) for r in ratios for s in seeds for g in guidances):
            row = fit_row(
                name,
                image,
                diameter,
                ratio,
                seed,
                guidance,
                steps=steps,
                model=model,
                weight=weight,
                device=device,
                net=net,
            )
            if row is not None:
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table: one line per fit, then the mean over seeds per image and guidance."""
    head = (
        "| image | guidance | seed | ratio | PSNR dB | SSIM | F1 | AP@0.5 | matched IoU "
        "| objects orig/dec | F1 classical | fit s |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['guidance']} | {r['seed']} | {r['ratio']} | {r['psnr']:.2f} "
            f"| {r['ssim']:.4f} | {r['f1']:.3f} | {r['ap']:.3f} | {r['mean_iou']:.3f} "
            f"| {r['n_original']}/{r['n_decoded']} | {r['f1_classical']:.3f} "
            f"| {r['fit_seconds']:.0f} |"
        )
    groups: dict[tuple[str, int, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["image"], r.get("asked_ratio", 0), r["guidance"]), []).append(r)
    for (image, _, guidance), rs in groups.items():
        mean = {
            k: float(np.mean([r[k] for r in rs]))
            for k in (
                "ratio",
                "psnr",
                "ssim",
                "f1",
                "ap",
                "mean_iou",
                "f1_classical",
                "fit_seconds",
            )
        }
        lines.append(
            f"| **{image}** | **{guidance}** | mean of {len(rs)} | {mean['ratio']:.0f} "
            f"| {mean['psnr']:.2f} | {mean['ssim']:.4f} | **{mean['f1']:.3f}** | {mean['ap']:.3f} "
            f"| {mean['mean_iou']:.3f} | | {mean['f1_classical']:.3f} | {mean['fit_seconds']:.0f} |"
        )
    lines += ["", paired(rows)]
    return "\n".join(lines)


def paired(rows: list[dict]) -> str:
    """Guided minus unguided, fit by fit (same image, ratio and seed)."""
    base = {
        (r["image"], r.get("asked_ratio"), r["seed"]): r for r in rows if r["guidance"] == "none"
    }
    head = (
        "| image | ratio | guidance | fits | ΔF1 | ΔAP | Δ matched IoU | ΔPSNR dB "
        "| guided F1 >= unguided |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    groups: dict[tuple[str, int, str], list[tuple[dict, dict]]] = {}
    for r in rows:
        key = (r["image"], r.get("asked_ratio"), r["seed"])
        if r["guidance"] != "none" and key in base:
            groups.setdefault((key[0], key[1], r["guidance"]), []).append((r, base[key]))
    every = []
    for (image, ratio, guidance), pairs in groups.items():
        every += pairs
        lines.append(_paired_line(f"{image} | {ratio}x | {guidance}", pairs))
    if len(groups) > 1:
        lines.append(_paired_line("**all** | | ", every))
    return "\n".join(lines)


def _paired_line(label: str, pairs: list[tuple[dict, dict]]) -> str:
    keys = ("f1", "ap", "mean_iou", "psnr")
    d = {k: float(np.mean([g[k] - u[k] for g, u in pairs])) for k in keys}
    wins = sum(g["f1"] >= u["f1"] for g, u in pairs)
    return (
        f"| {label} | {len(pairs)} | {d['f1']:+.3f} | {d['ap']:+.3f} | {d['mean_iou']:+.3f} "
        f"| {d['psnr']:+.2f} | {wins}/{len(pairs)} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--guidance", default="none,segmentation")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--model", default="inif_nuclei_small")
    p.add_argument("--images", default=None, help="comma-separated name fragments")
    p.add_argument("--seeds", default="2,3,4", help="seeds 0 and 1 were used to pick the weight")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="device of the fits (cpu, cuda): its preset")
    p.add_argument("--out", type=Path, default=Path("guidance_results"))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = run(
        args.guidance.split(","),
        args.steps,
        args.model,
        args.images.split(",") if args.images else None,
        args.weight,
        [int(v) for v in args.seeds.split(",")],
        args.device,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    (args.out / "table.md").write_text(table(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
