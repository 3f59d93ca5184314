"""Train the small Cellpose network shipped as ``napari_inif/_data/cpnet_nuclei_small.pt``.

Why: Cellpose's own weights (cyto3, nuclei, cpsam) cannot be downloaded in the build
environment and no package ships them, yet tests and benchmarks of segmentation guidance
need a network that really segments.  This script trains one with Cellpose's own code
(``cellpose.resnet_torch.CPnet`` + ``cellpose.train.train_seg``), small enough to ship
(``nbase = [2, 16, 32, 64]``, about 0.4 M parameters, stored as float16).

Data: the nuclei channels in ``../shared/data`` (BBBC034 C2, BBBC022 channel 0, BBBC038),
each split into a training part (left 75 % of the columns) and a held-out part (right 25 %).

Labels: NOT human annotation.  They come from the classical segmentation
:func:`napari_inif.core.segmentation.segment_classical` (Otsu threshold + distance
transform watershed).  The network therefore learns to imitate that segmentation; its
quality numbers below are agreement with those labels on the held-out parts.

Usage (2 CPU threads, a few minutes)::

    PYTHONPATH=src python benchmarks/guidance/train_nuclei_net.py --epochs 150
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "src" / "napari_inif" / "_data" / "cpnet_nuclei_small.pt"

#: (file, how to take the nuclei plane)
SOURCES = {
    "BBBC034": ("bbbc034_AICS_12_134_C2.tif", lambda a: a),
    "BBBC022": ("bbbc022_IXMtest_A02_s9_CYX.tif", lambda a: a[0]),
    "BBBC038": ("bbbc038_0bf4b1_nuclei.tif", lambda a: a),
}


def load_sets(train_fraction: float = 0.75):
    """``{name: (image, labels, diameter, split column)}`` with classical labels."""
    import tifffile
    from cellpose import utils

    from napari_inif.core.segmentation import segment_classical

    sets = {}
    for name, (file, take) in SOURCES.items():
        image = take(tifffile.imread(DATA / file)).astype(np.float32)
        labels = segment_classical(image)
        diameter = float(utils.diameters(labels)[0])
        split = round(image.shape[1] * train_fraction)
        sets[name] = (image, labels, diameter, split)
    return sets


def train(epochs: int, nbase: list[int], bsize: int, lr: float, seed: int, out: Path) -> dict:
    """Train, save float16 weights to ``out``, and return a report."""
    import torch
    from cellpose import resnet_torch
    from cellpose import train as cp_train

    torch.manual_seed(seed)
    np.random.seed(seed)
    sets = load_sets()
    two = lambda img: np.stack([img, np.zeros_like(img)])  # noqa: E731 - (nuclei, empty)
    train_data = [two(img[:, :s]) for img, _, _, s in sets.values()]
    train_labels = [lab[:, :s] for _, lab, _, s in sets.values()]
    test_data = [two(img[:, s:]) for img, _, _, s in sets.values()]
    test_labels = [lab[:, s:] for _, lab, _, s in sets.values()]
    net = resnet_torch.CPnet([2, *nbase], 3, sz=3, mkldnn=False, max_pool=True, diam_mean=30.0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cp_train.train_seg(
            net,
            train_data=train_data,
            train_labels=train_labels,
            test_data=test_data,
            test_labels=test_labels,
            batch_size=8,
            learning_rate=lr,
            n_epochs=epochs,
            weight_decay=1e-5,
            normalize=True,
            save_path=tmp,
            save_every=10_000,
            nimg_per_epoch=24,
            bsize=bsize,
            min_train_masks=1,
            model_name="nuclei_small",
        )
    seconds = time.perf_counter() - start
    state = {
        k: v.detach().to(torch.float16) if v.is_floating_point() else v
        for k, v in net.state_dict().items()
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    report = {
        "epochs": epochs,
        "nbase": [2, *nbase],
        "bsize": bsize,
        "lr": lr,
        "train_seconds": round(seconds, 1),
        "file_bytes": out.stat().st_size,
        "n_params": sum(v.numel() for v in net.state_dict().values()),
    }
    report["quality"] = evaluate(out, sets)
    return report


def evaluate(path: Path, sets: dict) -> dict:
    """AP/F1 at IoU 0.5 against the classical labels, on the training and held-out parts."""
    from napari_inif.core.cellpose_net import load_cellpose
    from napari_inif.core.segmentation import agreement

    net = load_cellpose(path)
    result = {}
    for name, (image, labels, diameter, split) in sets.items():
        for part, cols in (("train", slice(0, split)), ("heldout", slice(split, None))):
            masks = net.segment(image[:, cols], diameter=diameter)
            a = agreement(labels[:, cols], masks, method=net.name)
            result[f"{name}/{part}"] = {**a.as_dict(), "diameter": round(diameter, 1)}
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line entry."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--nbase", default="16,32,64")
    p.add_argument("--bsize", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--evaluate-only", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.evaluate_only:
        report = {"quality": evaluate(args.out, load_sets())}
    else:
        nbase = [int(v) for v in args.nbase.split(",")]
        report = train(args.epochs, nbase, args.bsize, args.lr, args.seed, args.out)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
