"""A plain re-statement of the reference testing procedure: one triplet at a time, batch 1, fp32, full-slice
saliency, exact crop boxes, per-view averaging with /2 at the ends and /3 inside.

It shares no inference code with ``inference.py`` on purpose: it is the yardstick the batched engine is checked
against (tests) and timed against (benchmark)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..models.intensity import DEFAULT_WINDOW, HUWindow
from ..models.model import RSTN
from ..overlap import dice
from ..views import VIEW_AXES
from .postprocess import keep_large_components

#: (centre slice j, its triplet's slice indices) -> the triplet's (3, H, W) probabilities, or None (skipped)
TripletNet = Callable[[int, np.ndarray], np.ndarray | None]


@dataclass(frozen=True)
class ReferenceSettings:
    """The reference testing procedure's parameters (its defaults)."""

    thr: float = 0.99
    max_iter: int = 10
    margin: int = 20
    prob_threshold: float = 0.5
    views: tuple[str, ...] = ("X", "Y", "Z")
    window: HUWindow = DEFAULT_WINDOW
    device: str = "cpu"


def _view_array(volume: np.ndarray, view: str) -> np.ndarray:
    return np.moveaxis(volume, VIEW_AXES[view], 0)


def _run_view(net: TripletNet, length: int, slice_shape: tuple[int, int]) -> np.ndarray:
    """Average each slice over the triplets that predict it, as the reference's coarse/fine testing does."""
    pred = np.zeros((length, *slice_shape), dtype=np.float32)
    for j in range(length):
        sid = [max(0, j - 1), j, min(length - 1, j + 1)]
        out = net(j, np.array(sid))
        if out is None:
            continue
        if length == 1:
            pred[0] += out[1]
        elif j == 0:
            pred[0:2] += out[1:3]
        elif j == length - 1:
            pred[length - 2 : length] += out[0:2]
        else:
            pred[j - 1 : j + 2] += out
    if length == 1:
        return pred
    pred[0] /= 2
    pred[1 : length - 1] /= 3
    pred[length - 1] /= 2
    return pred


def _coarse_net(model: RSTN, img_v: np.ndarray, dev: torch.device) -> TripletNet:
    """The coarse net on whole slices of one view."""

    def run(j: int, sid: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(img_v[sid]))[None].to(dev)
        with torch.inference_mode():
            return torch.sigmoid(model.coarse(x)).cpu().numpy()[0]

    return run


def _fine_net(model: RSTN, img_v: np.ndarray, score_v: np.ndarray, mask_v: np.ndarray, margin: int,
              dev: torch.device) -> TripletNet:
    """The fine net of one view: full-slice saliency of the previous score, the triplet's crop box of the
    previous mask plus ``margin``, pasted into -9999999 logits; triplets with an empty mask are skipped."""

    def run(j: int, sid: np.ndarray) -> np.ndarray | None:
        m = mask_v[sid]
        if not m.any():
            return None
        rows = np.nonzero(m.any(axis=(0, 2)))[0]
        cols = np.nonzero(m.any(axis=(0, 1)))[0]
        h, w = m.shape[1:]
        r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)
        c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)
        with torch.inference_mode():
            score = torch.from_numpy(np.ascontiguousarray(score_v[sid]))[None].to(dev)
            sal = model.saliency(score)
            x = torch.from_numpy(np.ascontiguousarray(img_v[sid]))[None].to(dev) * sal
            logit = model.fine(x[:, :, r0:r1, c0:c1])
            out = torch.full((1, 3, h, w), -9999999.0, device=dev)
            out[:, :, r0:r1, c0:c1] = logit
            return torch.sigmoid(out).cpu().numpy()[0]

    return run


def _fuse(image: np.ndarray, views: tuple[str, ...], make_net: Callable[[str, np.ndarray], TripletNet]) -> np.ndarray:
    """The mean over ``views`` of each view's per-slice averaged prediction."""
    total = np.zeros(image.shape, dtype=np.float32)
    for view in views:
        img_v = _view_array(image, view)
        pred_v = _run_view(make_net(view, img_v), img_v.shape[0], img_v.shape[1:])
        total += np.moveaxis(pred_v, 0, VIEW_AXES[view])
    return total / len(views)


def reference_segment(
    models: dict[str, RSTN],
    volume_hu: np.ndarray,
    settings: ReferenceSettings | None = None,
    *,
    oracle_mask: np.ndarray | None = None,
    probabilities: list[np.ndarray] | None = None,
    **overrides: object,
) -> list[np.ndarray]:
    """Masks of round 0 (coarse) and of every fine round until convergence, canonical layout.

    ``overrides`` replace fields of ``settings`` (e.g. ``max_iter=2``).
    ``oracle_mask`` (evaluation and benchmarks): crop by this mask instead of the previous prediction.
    ``probabilities``: if a list is given, each round's fused probability is appended to it."""
    s = replace(settings or ReferenceSettings(), **overrides)
    image = s.window.apply(volume_hu)
    dev = torch.device(s.device)
    for m in models.values():
        m.to(dev).eval()
    score = _fuse(image, s.views, lambda view, img_v: _coarse_net(models[view], img_v, dev))
    mask = score >= s.prob_threshold
    masks = [mask]
    if probabilities is not None:
        probabilities.append(score)
    for _ in range(s.max_iter):
        crop = mask if oracle_mask is None else oracle_mask
        if not crop.any():
            break
        new_score = _fuse(image, s.views, lambda v, img_v, sc=score, m=crop: _fine_net(
            models[v], img_v, _view_array(sc, v), _view_array(m, v), s.margin, dev))
        new_mask = keep_large_components(new_score >= s.prob_threshold)
        converged = dice(mask, new_mask, empty=1.0) >= s.thr
        score, mask = new_score, new_mask
        masks.append(mask)
        if probabilities is not None:
            probabilities.append(score)
        if converged:
            break
    return masks
