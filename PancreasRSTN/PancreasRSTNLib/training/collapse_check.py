"""Did a training collapse? A finished view's coarse network on organ slices of its own training data, and the
mend of a collapsed one.

Why: one of the default recipe's five 6000-step validation folds ended with a coarse network whose largest
probability anywhere was 0.45 (its coarse loss had sat at 1, nothing predicted, for hundreds of steps of the joint
stage): every run of that model stops after an empty coarse round and finds nothing (docs/models.md). Its logits
still ranked the organ first, only under a ceiling below 0 (at most -0.11 on organ pixels), so one offset added to
them, chosen on its own training slices, gives it back its masks without another training.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch

from ..models.backbones import output_head
from ..models.model import RSTN
from .config import TrainConfig
from .step import window_and_augment
from .training_data import TrainCase, slice_pixels, triplet, view_axis

log = logging.getLogger(__name__)

#: how many organ slices are checked (evenly spread over the training cases' organ slices)
CHECKED_SLICES = 32
#: how many training slices (with and without the organ, evenly spread) choose a collapsed network's offset
CALIBRATION_SLICES = 96
#: the logit offsets tried, in order (the smallest of equally good ones wins)
CALIBRATION_OFFSETS = tuple(float(v) for v in np.arange(0.25, 8.01, 0.25))


def spread_slices(cases: Sequence[TrainCase], view: str, count: int, organ_only: bool = True
                  ) -> list[tuple[int, int]]:
    """(case index, slice index) of up to ``count`` slices of the view (only those holding the organ, with
    ``organ_only``), evenly spread over the training cases."""
    found = [(i, int(j)) for i, case in enumerate(cases) if view in case.views
             for j in (np.flatnonzero(slice_pixels(case.label, view)) if organ_only
                       else range(case.label.shape[view_axis(view)]))]
    if len(found) <= count:
        return found
    return [found[int(k)] for k in np.linspace(0, len(found) - 1, count).round()]


def organ_slices(cases: Sequence[TrainCase], view: str, count: int = CHECKED_SLICES) -> list[tuple[int, int]]:
    """(case index, slice index) of up to ``count`` slices of the view that hold the organ, evenly spread."""
    return spread_slices(cases, view, count)


@torch.no_grad()
def _coarse_logits(model: RSTN, cases: Sequence[TrainCase], cfg: TrainConfig, view: str,
                   chosen: Sequence[tuple[int, int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(coarse logits, organ mask) of each chosen slice triplet, windowed, not augmented, in eval mode."""
    plain = replace(cfg, augment=None)
    rng = np.random.default_rng(0)  # unused without augmentation; window_and_augment takes one
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for i, j in chosen:
            x, y = window_and_augment(triplet(cases[i].image, view, j), triplet(cases[i].label, view, j), plain, rng)
            yield model.coarse(x[None].to(device))[0].float(), y.to(device) > 0
    finally:
        model.train(was_training)


def coarse_check(model: RSTN, cases: Sequence[TrainCase], cfg: TrainConfig, view: str,
                 threshold: float = 0.5) -> dict:
    """On organ slices of the training data (windowed, not augmented): how many the coarse network marks at all
    (probability >= ``threshold`` on an organ pixel), and its largest probability there. ``collapsed``: none."""
    marked, largest = 0, 0.0
    chosen = organ_slices(cases, view)
    for logits, organ in _coarse_logits(model, cases, cfg, view, chosen):
        on_organ = torch.sigmoid(logits)[organ]
        top = float(on_organ.max()) if on_organ.numel() else 0.0
        largest = max(largest, top)
        marked += top >= threshold
    return {"organ_slices": len(chosen), "marked": int(marked), "largest_probability": round(largest, 4),
            "threshold": threshold, "collapsed": bool(chosen) and marked == 0}


def calibrate_coarse(model: RSTN, cases: Sequence[TrainCase], cfg: TrainConfig, view: str) -> dict:
    """Mend a collapsed coarse network in place: add to its output layer's bias the logit offset (of
    ``CALIBRATION_OFFSETS``) whose masks have the best pooled DSC on ``CALIBRATION_SLICES`` slices of its own
    training data; nothing changes when no offset beats none (or the backbone has no such layer)."""
    head = output_head(model.coarse_model)
    if head is None:
        return {"applied": False, "reason": f"backbone {model.config.backbone} does not end in a 1x1 convolution"}
    offsets = torch.tensor((0.0, *CALIBRATION_OFFSETS), device=head.bias.device)
    overlap, marked, truth = torch.zeros_like(offsets), torch.zeros_like(offsets), 0.0
    chosen = spread_slices(cases, view, CALIBRATION_SLICES, organ_only=False)
    for logits, organ in _coarse_logits(model, cases, cfg, view, chosen):
        masks = logits.reshape(1, -1) + offsets[:, None] >= 0  # (offsets, pixels)
        overlap += (masks & organ.reshape(1, -1)).sum(dim=1)
        marked += masks.sum(dim=1)
        truth += float(organ.sum())
    dsc = 2 * overlap / (marked + truth).clamp(min=1)
    best = int(torch.argmax(dsc))  # the first (smallest) of equal maxima
    result = {"slices": len(chosen), "training_dsc_before": round(float(dsc[0]), 4),
              "training_dsc_after": round(float(dsc[best]), 4), "offset": float(offsets[best])}
    if best == 0 or float(dsc[best]) <= 0.0:
        return {"applied": False, "reason": "no offset gives better masks", **result}
    with torch.no_grad():
        head.bias += offsets[best]
    return {"applied": True, **result}


def check_and_mend(model: RSTN, cases: Sequence[TrainCase], cfg: TrainConfig, view: str) -> dict:
    """The coarse check of a finished view; a collapsed network is calibrated (``calibrate_coarse``) and checked
    again. Logs a warning either way: a collapse means this training went wrong, mended or not."""
    check = coarse_check(model, cases, cfg, view)
    if not check["collapsed"]:
        return check
    check["calibration"] = mend = calibrate_coarse(model, cases, cfg, view)
    said = (f"view {view}: the training collapsed: its coarse network marked none of {check['organ_slices']} organ "
            f"slices of its own training data (largest probability {check['largest_probability']:.2f} < "
            f"{check['threshold']:.2f})")
    if mend["applied"]:
        check["after_calibration"] = after = coarse_check(model, cases, cfg, view)
        log.warning("%s. Mended: a logit offset of %+.2f, chosen on %d of its training slices (their coarse DSC "
                    "%.2f -> %.2f), now marks %d of %d. Training again with another --seed or a lower --lr may "
                    "still do better.", said, mend["offset"], mend["slices"], mend["training_dsc_before"],
                    mend["training_dsc_after"], after["marked"], after["organ_slices"])
    else:
        log.warning("%s, and could not be mended (%s), so the model will find nothing. Train again with another "
                    "--seed or a lower --lr.", said, mend["reason"])
    return check
