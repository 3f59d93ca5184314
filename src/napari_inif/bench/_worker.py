"""Subprocess that compresses one ``.npy`` array and reports time and peak memory.

Run as ``python -m napari_inif.bench._worker '<json settings>'``; prints one JSON line.
Peak memory is the process's ``ru_maxrss`` (resource.getrusage), measured once after
imports and loading the input (``rss_start_mib``) and once after compressing
(``rss_peak_mib``: the fit, quantisation and the final quality check included).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _maxrss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024  # bytes vs KiB


def main(argv: list[str]) -> int:
    """Compress ``settings["input"]`` and write ``settings["output"]``."""
    settings = json.loads(argv[0])
    import numpy as np
    import torch

    if settings.get("threads"):
        torch.set_num_threads(int(settings["threads"]))
    from napari_inif.core import CompressionConfig, compress

    data = np.load(settings["input"], allow_pickle=False)
    values = {"ratio": settings["ratio"], "device": settings["device"], "seed": settings["seed"]}
    if settings.get("steps"):
        values["steps"] = int(settings["steps"])
    config = CompressionConfig(**values)
    rss_start = _maxrss_mib()
    cuda = torch.cuda.is_available() and str(settings["device"]).startswith(("cuda", "auto"))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    encoded = compress(data, config, axes=settings["axes"])
    seconds = time.perf_counter() - start
    encoded.save(settings["output"])
    fit = encoded.header.fit
    out = {
        "seconds": seconds,
        "fit_seconds": fit.get("seconds"),
        "steps": fit.get("steps"),
        "psnr": fit.get("psnr"),
        "ssim": fit.get("ssim"),
        "nbytes": encoded.nbytes,
        "device": fit.get("device"),
        "rss_start_mib": rss_start,
        "rss_peak_mib": _maxrss_mib(),
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
