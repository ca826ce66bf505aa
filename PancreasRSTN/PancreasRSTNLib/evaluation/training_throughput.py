"""Joint coarse+fine training throughput of both backbones, for the benchmark's report (samples/s)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ..models.model import RSTN, RSTNConfig
from .timing import median, sync


def training_throughput(size: int, steps: int, device: torch.device, log: Callable[[str], None]) -> list[dict]:
    """Samples/s at ``size``^2, batch 1 (the reference's), both backbones, through the trainer's own step;
    ``steps`` timed steps after one warm-up (half as many for FCN-8s on the CPU)."""
    from ..training.losses import get_loss
    from ..training.trainer import StepModule, TrainConfig, make_optimizer

    results = []
    for backbone in ("fcn8s", "light"):
        torch.manual_seed(0)
        model = RSTN(RSTNConfig(backbone=backbone)).to(device).train()
        step = StepModule(model, get_loss("dsc"), T=1)
        opt = make_optimizer(model, TrainConfig(backbone=backbone))
        x = torch.rand(1, 3, size, size, device=device)
        y = torch.zeros(1, 3, size, size, device=device)
        y[:, :, size // 3 : size // 2, size // 3 : size // 2] = 1
        margins = np.array([20, 20, 20, 20])
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
        times = []
        n = steps if backbone == "light" or device.type == "cuda" else max(2, steps // 2)
        for i in range(n + 1):
            sync(device)
            t0 = time.perf_counter()
            if amp:
                with amp:
                    loss = step(x, y, "J", margins)[0]
            else:
                loss = step(x, y, "J", margins)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync(device)
            if i:  # the first step is the warm-up
                times.append(time.perf_counter() - t0)
        sps = 1.0 / median(times)
        results.append({"backbone": backbone, "size": size, "samples_per_s": sps, "steps_timed": n})
        log(f"training {backbone} at {size}x{size}: {sps:.2f} samples/s")
        del model, opt, step
    return results
