"""Cost of one guided step: Cellpose network forward + backward to its input, by size.

Compares the full Cellpose 3 architecture (``nbase = [2, 32, 64, 128, 256]``, what cyto3
and nuclei use; random weights: the timing does not depend on them) with the bundled
small network, at the window sizes the CPU and GPU presets use, and reports what the
guidance costs per fit step with the CPU preset (one window every fourth step).

Usage::

    PYTHONPATH=src python benchmarks/guidance/cost.py --threads 1 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time


def time_net(net, size: int, device: str, repeats: int = 3) -> dict:
    """Median seconds of forward and of forward + backward to the input."""
    import torch

    x = torch.rand(1, 2, size, size, device=device, requires_grad=True)
    net(x).square().mean().backward()  # warm-up
    fwd, both = [], []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            net(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        fwd.append(time.perf_counter() - t)
        t = time.perf_counter()
        net(x).square().mean().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        both.append(time.perf_counter() - t)
    return {
        "forward_s": round(sorted(fwd)[len(fwd) // 2], 4),
        "forward_backward_s": round(sorted(both)[len(both) // 2], 4),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="128,224,256")
    args = p.parse_args(argv)
    import torch
    from cellpose.resnet_torch import CPnet

    from napari_inif.core.cellpose_net import BUNDLED_MODEL, CellposeNet, load_cellpose

    torch.set_num_threads(args.threads)
    nets = {
        "cellpose3 full [2,32,64,128,256] (cyto3 architecture)": CellposeNet.from_module(
            CPnet([2, 32, 64, 128, 256], 3, 3, mkldnn=False).to(args.device), "full"
        ),
        f"{BUNDLED_MODEL} [2,16,32,64]": load_cellpose(BUNDLED_MODEL, device=args.device),
    }
    rows = []
    for name, net in nets.items():
        for size in (int(s) for s in args.sizes.split(",")):
            row = {
                "network": name,
                "window": size,
                "device": args.device,
                "threads": args.threads,
                **time_net(net, size, args.device),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
