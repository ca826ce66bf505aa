"""BatchNorm recalibration: replace each BatchNorm's running mean/var by the exact average of its per-sample
batch statistics over a pass of training samples.

Why: the trainer runs at batch size 1 (as the reference), so BatchNorm normalises every training slice by its own
statistics while the running averages (momentum 0.1) trail the weights and are dominated by the last ~10 steps.
Eval-mode predictions then use statistics the final weights never saw. One no-grad pass with cumulative
averaging (``momentum=None``) over training samples, run the way the model is used at inference (coarse on the
full triplet; fine on the crop of the coarse prediction, saliency-weighted, as in mode J), gives eval mode the
statistics of the final weights. Only BatchNorm buffers change; weights are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..models.intensity import DEFAULT_WINDOW, HUWindow
from ..models.model import RSTN
from .training_data import bounding_box, epoch_order, labels_for_view, triplet, view_samples

_BN = nn.modules.batchnorm._BatchNorm
SampleStream = Iterable[tuple[torch.Tensor, torch.Tensor | None]]


class _Case(Protocol):
    image: np.ndarray
    label: np.ndarray


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer (1-D/2-D/3-D, SyncBatchNorm) that tracks running statistics."""
    return [m for m in module.modules() if isinstance(m, _BN) and m.track_running_stats]


def has_batchnorm(module: nn.Module) -> bool:
    return bool(batchnorm_layers(module))


def recalibration_samples(cases: Sequence[_Case], view: str, n: int, slice_threshold: float = 0.98, seed: int = 0,
                          window: HUWindow = DEFAULT_WINDOW) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(image triplet, label triplet) pairs, (1, 3, H, W) float32, of ``n`` training slices of one view (the
    trainer's slice selection; all of them if ``n`` <= 0 or larger), in a fixed seeded order: deterministic."""
    samples = view_samples(labels_for_view(cases, view), view, slice_threshold)
    order = epoch_order(len(samples), seed, 0)
    if 0 < n < len(order):
        order = np.sort(order[:n])  # a seeded subset, visited in a fixed order
    for i in order:
        s = samples[int(i)]
        x_np = triplet(cases[s.case].image, view, s.j)
        x_np = window.apply(x_np) if x_np.dtype != np.float32 else x_np  # HU (int16 cache) -> [0, 1]
        x = torch.from_numpy(np.ascontiguousarray(x_np, dtype=np.float32))[None]
        y = torch.from_numpy(np.ascontiguousarray(triplet(cases[s.case].label, view, s.j), dtype=np.float32))[None]
        yield x, y


def _set_bn_mode(layers: Iterable[nn.Module], train: bool) -> None:
    for m in layers:
        m.train(train)


@torch.no_grad()
def recalibrate_batchnorm(model: RSTN, samples: SampleStream | Callable[[], SampleStream],
                          rounds: int = 1, margin: int = 20) -> dict:
    """Recompute every BatchNorm's running statistics of ``model`` from ``samples`` ((1, 3, H, W) image triplet,
    label triplet or None; a sequence, or a function returning a fresh iterable, read twice), in place; returns a
    summary for model.json.

    Two passes, so that the fine crops come from the coarse prediction as it will be at inference: pass 1 feeds
    the coarse net the full triplets (its BatchNorms average their batch statistics); pass 2 runs the coarse net
    in eval mode with the new statistics, crops its prediction (>= 0.5, ``margin`` on each side; the label box if
    the prediction is empty, the sample skipped if there is no label either) and feeds the fine net the
    saliency-weighted crop for ``rounds`` rounds (each later round cropped by the previous fine prediction, as in
    mode J). Each layer's running mean/var become the plain average over its forward calls; momentum, the
    model's train/eval modes and every parameter are restored/untouched."""
    passes = samples if callable(samples) else (lambda: samples)
    coarse_bn = batchnorm_layers(model.coarse_model)
    fine_bn = batchnorm_layers(model.fine_model)
    layers = coarse_bn + fine_bn
    if not layers:
        return {"applied": False, "reason": "no BatchNorm layers"}
    was_training = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    dev = next(model.parameters()).device
    fine_calls = 0
    try:
        model.eval()
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: running = mean over the forward calls since the reset
        _set_bn_mode(coarse_bn, True)
        n_samples = 0
        for x, _ in passes():
            model.coarse(x.to(dev))
            n_samples += 1
        _set_bn_mode(coarse_bn, False)
        _set_bn_mode(fine_bn, True)
        for x, y in passes():
            x = x.to(dev)
            prev = torch.sigmoid(model.coarse(x).float())
            label_box = None if y is None else bounding_box(y[0].cpu().numpy() > 0.5, (margin,) * 4)
            for _ in range(max(rounds, 1)):
                box = bounding_box(prev[0].cpu().numpy() >= 0.5, (margin,) * 4) or label_box
                if box is None:
                    break
                a0, a1, b0, b1 = box
                inp = (x * model.saliency(prev))[..., a0:a1, b0:b1]
                prob = torch.sigmoid(model.fine(inp).float())
                fine_calls += 1
                prev = torch.zeros_like(prev)
                prev[..., a0:a1, b0:b1] = prob
    finally:
        for m in layers:
            m.momentum = momenta[m]
        for m, t in was_training.items():
            m.train(t)
    return {"applied": True, "samples": n_samples, "fine_crops": fine_calls, "rounds": max(rounds, 1),
            "margin": margin, "layers": len(layers),
            "method": "running mean/var = average of per-sample batch statistics (momentum=None), no grad; "
                      "coarse on full triplets, fine on saliency-weighted crops of the coarse prediction"}


@dataclass(frozen=True)
class RecalibrationOptions:
    """How ``recalibrate_view`` picks and runs its slices: the trainer's slice selection (``slice_threshold``),
    the seed of their order, the fine rounds and crop margin of the inference-like pass, and the HU window of
    HU cases. The defaults are the trainer's (seed: the view's seed, ``cfg.seed * 1000 + view axis``)."""

    slice_threshold: float = 0.98
    seed: int = 0
    rounds: int = 1
    margin: int = 20
    window: HUWindow = DEFAULT_WINDOW


def recalibrate_view(model: RSTN, cases: Sequence[_Case], view: str, n: int = 500, *,
                     options: RecalibrationOptions | None = None) -> dict:
    """Recalibrate one view's RSTN on ``n`` of its training slices (see ``recalibrate_batchnorm``)."""
    opt = options or RecalibrationOptions()

    def samples() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return recalibration_samples(cases, view, n, opt.slice_threshold, opt.seed, opt.window)

    info = recalibrate_batchnorm(model, samples, opt.rounds, opt.margin)
    info.update({"requested_samples": n, "seed": opt.seed, "slice_threshold": opt.slice_threshold})
    return info
