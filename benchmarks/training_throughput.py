"""Training throughput (slices per second) of one RSTN training step (mode J, T=1, batch 1: coarse forward on
the full slice triplet, saliency, fine forward on the crop, backward, optimiser step) for each backbone.

    python benchmarks/training_throughput.py [--sizes 512,256,128] [--backbones light,fcn8s] [--steps 5]

FCN-8s is very slow on a CPU (about 379 GFLOP per 512x512 forward): measure it at smaller sizes there and say so.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from PancreasRSTNLib.models.model import RSTN, RSTNConfig
from PancreasRSTNLib.training.losses import soft_dsc_loss
from PancreasRSTNLib.training.trainer import StepModule, TrainConfig, make_optimizer


def measure(backbone: str, size: int, steps: int, device: str, warmup: int = 2) -> dict:
    torch.manual_seed(0)
    model = RSTN(RSTNConfig(backbone=backbone)).to(device)
    step = StepModule(model, soft_dsc_loss, T=1)
    opt = make_optimizer(model, TrainConfig(backbone=backbone, optimizer="sgd"))
    x = torch.rand(1, 3, size, size, device=device)
    y = torch.zeros_like(x)
    c = size // 2
    y[..., c - size // 10:c + size // 10, c - size // 8:c + size // 8] = 1  # a pancreas-sized target
    amp = device == "cuda"
    times = []
    for i in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss, _, _ = step(x, y, "J", np.full(4, 20))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    return {"backbone": backbone, "size": size, "device": device, "threads": torch.get_num_threads(),
            "seconds_per_step": round(s, 4), "slices_per_s": round(1.0 / s, 3), "steps": steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default="light,fcn8s")
    p.add_argument("--sizes", default="512,256,128")
    p.add_argument("--fcn8s-sizes", default="128", help="sizes for FCN-8s on CPU (it is slow)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for backbone in args.backbones.split(","):
        sizes = args.fcn8s_sizes if backbone == "fcn8s" and args.device == "cpu" else args.sizes
        for size in (int(s) for s in sizes.split(",")):
            rows.append(measure(backbone, size, args.steps, args.device))
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
