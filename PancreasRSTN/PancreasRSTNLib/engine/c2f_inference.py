"""Inference of the stage-wise coarse-to-fine baseline (OrganSegC2F, seed paper 002), for comparisons.

Differences from RSTN (``inference.py``): no saliency transformation (the fine net sees the raw image), and the
fine crop is the 3-D bounding box of the previous mask plus a 15 px frame, the same box for every slice,
instead of a per-slice box. Rounds, view fusion, thresholding, post-processing and the stopping rule are the
same as RSTN's. Models are RSTNs trained with ``--method c2f`` (their saliency weights are unused).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..models.intensity import DEFAULT_WINDOW, HUWindow
from ..models.model import RSTN
from ..overlap import dice
from ..views import VIEW_AXES
from .boxes import bounding_box
from .postprocess import keep_large_components
from .results import RoundResult
from .triplets import triplet_indices


@dataclass(frozen=True)
class C2FSettings:
    """Parameters of a C2F run; defaults are the baseline's (thr and rounds as RSTN's)."""

    views: Sequence[str] = ("X", "Y", "Z")
    thr: float = 0.99
    max_iter: int = 10
    frame: int = 15  # voxels around the previous mask's 3-D box
    prob_threshold: float = 0.5
    device: str = "cpu"
    batch: int = 16
    window: HUWindow = DEFAULT_WINDOW


@dataclass
class C2FRound:
    index: int
    probability: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int, int, int] | None  # (r0, r1, c0, c1, s0, s1) the fine stage saw
    dsc_to_previous: float | None
    seconds: float

    def as_round_result(self, device: str) -> RoundResult:
        """The round in the engine's result contract, so that evaluation maps it onto the input like RSTN's."""
        return RoundResult(
            index=self.index, stage="coarse" if self.index == 0 else "fine", probability=self.probability,
            mask=self.mask, saliency={}, crop_boxes={}, dsc_to_previous=self.dsc_to_previous,
            seconds={"round": self.seconds}, device=device,
        )


def view_probability(net: Callable[[torch.Tensor], torch.Tensor], vol: torch.Tensor, axis: int,
                      batch: int) -> torch.Tensor:
    """Mean over the (up to 3) triplets containing each slice of ``net``'s sigmoid output; vol is (R, C, S).
    Shared by C2F, Cai et al.'s CNN and their end-to-end training (differentiable: no in-place op on ``prob``)."""
    v = vol.movedim(axis, 0)  # (n, a, b)
    n = v.shape[0]
    acc = torch.zeros_like(v)
    cnt = torch.zeros(n, dtype=v.dtype, device=v.device)
    centres = torch.arange(n, device=v.device)
    for start in range(0, n, batch):
        idx = triplet_indices(centres[start:start + batch], n)  # (B, 3)
        prob = torch.sigmoid(net(v[idx]).float())  # (B, 3, a, b)
        acc.index_add_(0, idx.reshape(-1), prob.reshape(-1, *v.shape[1:]))
        cnt.index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), dtype=v.dtype, device=v.device))
    return (acc / cnt.clamp(min=1)[:, None, None]).movedim(0, axis)


def box3d(mask: np.ndarray, frame: int) -> tuple[int, int, int, int, int, int] | None:
    """3-D bounding box of the mask plus ``frame`` voxels on every side, clamped (half-open)."""
    box = bounding_box(mask)
    if box is None:
        return None
    (r0, r1), (c0, c1), (s0, s1) = ((max(s.start - frame, 0), min(s.stop + frame, n)) for s, n in zip(box, mask.shape))
    return r0, r1, c0, c1, s0, s1


@torch.no_grad()
def run_c2f(models: dict[str, RSTN], volume_hu: np.ndarray, settings: C2FSettings | None = None,
            **overrides: object) -> Iterator[C2FRound]:
    """Yield the coarse round, then fine rounds on the framed 3-D box, until DSC(prev, new) >= thr.

    ``overrides`` replace fields of ``settings`` (e.g. ``max_iter=2``)."""
    s = replace(settings or C2FSettings(), **overrides)
    dev = torch.device(s.device)
    vol = s.window.apply(torch.from_numpy(np.ascontiguousarray(volume_hu)).to(dev))
    nets = {v: models[v].to(dev).eval() for v in s.views}
    t0 = time.perf_counter()
    prob = torch.stack([view_probability(nets[v].coarse, vol, VIEW_AXES[v], s.batch) for v in s.views]).mean(0)
    p = prob.cpu().numpy()
    mask = keep_large_components(p >= s.prob_threshold)
    yield C2FRound(0, p, mask, None, None, time.perf_counter() - t0)
    for r in range(1, s.max_iter + 1):
        t0 = time.perf_counter()
        box = box3d(mask, s.frame)
        if box is None:
            return
        r0, r1, c0, c1, s0, s1 = box
        sub = vol[r0:r1, c0:c1, s0:s1]
        fine = torch.stack([view_probability(nets[v].fine, sub, VIEW_AXES[v], s.batch) for v in s.views]).mean(0)
        full = torch.zeros_like(vol)
        full[r0:r1, c0:c1, s0:s1] = fine
        p = full.cpu().numpy()
        new = keep_large_components(p >= s.prob_threshold)
        d = dice(mask, new, empty=1.0)
        yield C2FRound(r, p, new, box, d, time.perf_counter() - t0)
        mask = new
        if d >= s.thr:
            return
