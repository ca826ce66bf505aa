"""A plain re-statement of the reference testing procedure: one triplet at a time, batch 1, fp32, full-slice
saliency, exact crop boxes, per-view averaging with /2 at the ends and /3 inside.

It shares no inference code with ``inference.py`` on purpose: it is the yardstick the batched engine is checked
against (tests) and timed against (benchmark)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .intensity import DEFAULT_WINDOW, HUWindow
from .metrics import dice
from .model import RSTN
from .postprocess import keep_large_components

_VIEW_AXIS = {"X": 0, "Y": 1, "Z": 2}


def _view_array(volume: np.ndarray, view: str) -> np.ndarray:
    return np.moveaxis(volume, _VIEW_AXIS[view], 0)


def _run_view(net: Callable[[int, np.ndarray], np.ndarray | None], length: int, slice_shape: tuple[int, int]) -> np.ndarray:
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


def reference_segment(
    models: dict[str, RSTN],
    volume_hu: np.ndarray,
    thr: float = 0.99,
    max_iter: int = 10,
    margin: int = 20,
    prob_threshold: float = 0.5,
    views: tuple[str, ...] = ("X", "Y", "Z"),
    window: HUWindow = DEFAULT_WINDOW,
    device: str = "cpu",
    oracle_mask: np.ndarray | None = None,
    probabilities: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Masks of round 0 (coarse) and of every fine round until convergence, canonical layout.

    ``oracle_mask`` (evaluation and benchmarks): crop by this mask instead of the previous prediction.
    ``probabilities``: if a list is given, each round's fused probability is appended to it."""
    image = window.apply(volume_hu)
    dev = torch.device(device)
    for m in models.values():
        m.to(dev).eval()

    def coarse_net(view: str, img_v: np.ndarray):
        def run(j: int, sid: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(img_v[sid]))[None].to(dev)
            with torch.inference_mode():
                return torch.sigmoid(models[view].coarse(x)).cpu().numpy()[0]
        return run

    def fine_net(view: str, img_v: np.ndarray, score_v: np.ndarray, mask_v: np.ndarray):
        model = models[view]

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

    def fuse(make_net) -> np.ndarray:
        total = np.zeros(volume_hu.shape, dtype=np.float32)
        for view in views:
            img_v = _view_array(image, view)
            pred_v = _run_view(make_net(view, img_v), img_v.shape[0], img_v.shape[1:])
            total += np.moveaxis(pred_v, 0, _VIEW_AXIS[view])
        return total / len(views)

    score = fuse(coarse_net)
    mask = score >= prob_threshold
    masks = [mask]
    if probabilities is not None:
        probabilities.append(score)
    for _ in range(max_iter):
        crop = mask if oracle_mask is None else oracle_mask
        if not crop.any():
            break
        new_score = fuse(lambda v, img_v, s=score, m=crop: fine_net(v, img_v, _view_array(s, v), _view_array(m, v)))
        new_mask = keep_large_components(new_score >= prob_threshold)
        converged = dice(mask, new_mask, empty=1.0) >= thr
        score, mask = new_score, new_mask
        masks.append(mask)
        if probabilities is not None:
            probabilities.append(score)
        if converged:
            break
    return masks
