"""The optimiser of a view's RSTN: the reference's parameter groups (per-part and per-kind learning rates).

Why groups: the reference trains the coarse net ten times slower than the fine net and saliency, and biases
twice as fast without weight decay; the FCN-8s's bilinear upsampling stays frozen.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.model import RSTN
from .config import TrainConfig


def param_groups(model: RSTN, cfg: TrainConfig) -> list[dict]:
    """The reference's groups: coarse (lr x coarse_lr_ratio) vs saliency+fine (lr); weights with decay vs
    biases and norm parameters (lr x bias_lr_ratio, no decay). Frozen (bilinear) weights are left out."""
    groups: dict[tuple[str, str], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "coarse" if name.startswith("coarse_model.") else "fine"
        kind = "bias" if p.ndim <= 1 else "weight"
        groups.setdefault((part, kind), []).append(p)
    out = []
    for (part, kind), params in sorted(groups.items()):
        part_ratio = cfg.coarse_lr_ratio if part == "coarse" else 1.0
        kind_ratio = cfg.bias_lr_ratio if kind == "bias" else 1.0
        out.append({"params": params, "lr": cfg.lr * part_ratio * kind_ratio,
                    "weight_decay": cfg.weight_decay if kind == "weight" else 0.0, "name": f"{part}_{kind}"})
    return out


def make_optimizer(model: RSTN, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)
