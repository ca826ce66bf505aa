"""Inference of the stage-wise coarse-to-fine baseline (OrganSegC2F, seed paper 002), for comparisons.

Differences from RSTN (``inference.py``): no saliency transformation (the fine net sees the raw image), and the
fine crop is the 3-D bounding box of the previous mask plus a 15 px frame, the same box for every slice,
instead of a per-slice box. Rounds, view fusion, thresholding, post-processing and the stopping rule are the
same as RSTN's. Models are RSTNs trained with ``--method c2f`` (their saliency weights are unused).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .intensity import DEFAULT_WINDOW, HUWindow
from .metrics import dice
from .model import RSTN
from .postprocess import keep_large_components

VIEW_AXES = {"X": 0, "Y": 1, "Z": 2}


@dataclass
class C2FRound:
    index: int
    probability: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int, int, int] | None  # (r0, r1, c0, c1, s0, s1) the fine stage saw
    dsc_to_previous: float | None
    seconds: float


def _view_probability(net, vol: torch.Tensor, axis: int, batch: int) -> torch.Tensor:
    """Mean over the (up to 3) triplets containing each slice of ``net``'s sigmoid output; vol is (R, C, S)."""
    v = vol.movedim(axis, 0)  # (n, a, b)
    n = v.shape[0]
    acc = torch.zeros_like(v)
    cnt = torch.zeros(n, dtype=v.dtype, device=v.device)
    centres = torch.arange(n, device=v.device)
    for start in range(0, n, batch):
        c = centres[start:start + batch]
        idx = (c[:, None] + torch.tensor([-1, 0, 1], device=v.device)).clamp(0, n - 1)  # (B, 3)
        prob = torch.sigmoid(net(v[idx]))  # (B, 3, a, b)
        acc.index_add_(0, idx.reshape(-1), prob.reshape(-1, *v.shape[1:]))
        cnt.index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), dtype=v.dtype, device=v.device))
    return (acc / cnt.clamp(min=1)[:, None, None]).movedim(0, axis)


def box3d(mask: np.ndarray, frame: int) -> tuple[int, int, int, int, int, int] | None:
    """3-D bounding box of the mask plus ``frame`` voxels on every side, clamped (half-open)."""
    if not mask.any():
        return None
    out = []
    for axis in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        out += [max(int(idx[0]) - frame, 0), min(int(idx[-1]) + frame + 1, mask.shape[axis])]
    return tuple(out)  # type: ignore[return-value]


@torch.no_grad()
def run_c2f(models: dict[str, RSTN], volume_hu: np.ndarray, views: Sequence[str] = ("X", "Y", "Z"),
            thr: float = 0.99, max_iter: int = 10, frame: int = 15, prob_threshold: float = 0.5,
            device: str = "cpu", batch: int = 16, window: HUWindow = DEFAULT_WINDOW) -> Iterator[C2FRound]:
    """Yield the coarse round, then fine rounds on the framed 3-D box, until DSC(prev, new) >= thr."""
    dev = torch.device(device)
    vol = window.apply(torch.from_numpy(np.ascontiguousarray(volume_hu)).to(dev))
    nets = {v: models[v].to(dev).eval() for v in views}
    t0 = time.perf_counter()
    prob = torch.stack([_view_probability(nets[v].coarse, vol, VIEW_AXES[v], batch) for v in views]).mean(0)
    p = prob.cpu().numpy()
    mask = keep_large_components(p >= prob_threshold)
    yield C2FRound(0, p, mask, None, None, time.perf_counter() - t0)
    for r in range(1, max_iter + 1):
        t0 = time.perf_counter()
        box = box3d(mask, frame)
        if box is None:
            return
        r0, r1, c0, c1, s0, s1 = box
        sub = vol[r0:r1, c0:c1, s0:s1]
        fine = torch.stack([_view_probability(nets[v].fine, sub, VIEW_AXES[v], batch) for v in views]).mean(0)
        full = torch.zeros_like(vol)
        full[r0:r1, c0:c1, s0:s1] = fine
        p = full.cpu().numpy()
        new = keep_large_components(p >= prob_threshold)
        d = dice(mask, new, empty=1.0)
        yield C2FRound(r, p, new, box, d, time.perf_counter() - t0)
        mask = new
        if d >= thr:
            return
