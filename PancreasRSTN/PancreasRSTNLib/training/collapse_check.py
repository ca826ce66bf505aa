"""Did a training collapse? A finished view's coarse network on organ slices of its own training data.

Why: one of the default recipe's five 6000-step validation folds ended with a coarse network whose largest
probability anywhere was 0.45 (its coarse loss had sat at 1, nothing predicted, for hundreds of steps of the joint
stage): every run of that model stops after an empty coarse round and finds nothing (docs/models.md). A model that
finds nothing on the very slices it learnt from must not be written out as if it had trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from ..models.model import RSTN
from .config import TrainConfig
from .step import window_and_augment
from .training_data import TrainCase, slice_pixels, triplet

#: how many organ slices are checked (evenly spread over the training cases' organ slices)
CHECKED_SLICES = 32


def organ_slices(cases: Sequence[TrainCase], view: str, count: int = CHECKED_SLICES) -> list[tuple[int, int]]:
    """(case index, slice index) of up to ``count`` slices of the view that hold the organ, evenly spread."""
    found = [(i, int(j)) for i, case in enumerate(cases) if view in case.views
             for j in np.flatnonzero(slice_pixels(case.label, view))]
    if len(found) <= count:
        return found
    return [found[int(k)] for k in np.linspace(0, len(found) - 1, count).round()]


@torch.no_grad()
def coarse_check(model: RSTN, cases: Sequence[TrainCase], cfg: TrainConfig, view: str,
                 threshold: float = 0.5) -> dict:
    """On organ slices of the training data (windowed, not augmented): how many the coarse network marks at all
    (probability >= ``threshold`` on an organ pixel), and its largest probability there. ``collapsed``: none."""
    plain = replace(cfg, augment=None)
    rng = np.random.default_rng(0)  # unused without augmentation; window_and_augment takes one
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    marked, largest = 0, 0.0
    chosen = organ_slices(cases, view)
    try:
        for i, j in chosen:
            x, y = window_and_augment(triplet(cases[i].image, view, j), triplet(cases[i].label, view, j), plain, rng)
            probability = torch.sigmoid(model.coarse(x[None].to(device)))[0]
            on_organ = probability[y.to(device) > 0]
            top = float(on_organ.max()) if on_organ.numel() else 0.0
            largest = max(largest, top)
            marked += top >= threshold
    finally:
        model.train(was_training)
    return {"organ_slices": len(chosen), "marked": int(marked), "largest_probability": round(largest, 4),
            "threshold": threshold, "collapsed": bool(chosen) and marked == 0}
