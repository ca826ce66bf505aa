"""The stage-wise C2F baseline at test time: fine stage on the previous mask's 3-D box plus a 15 px frame."""

from __future__ import annotations

import numpy as np
import torch

from PancreasRSTNLib.engine.c2f_inference import box3d, run_c2f
from PancreasRSTNLib.models.model import RSTN, RSTNConfig
from PancreasRSTNLib.phantom import make_phantom_canonical


class _Bright(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.99) * 100.0


def test_box3d_adds_the_frame_and_clamps():
    m = np.zeros((50, 60, 40), bool)
    m[20:25, 30:33, 5:9] = True
    assert box3d(m, 15) == (5, 40, 15, 48, 0, 24)
    assert box3d(np.zeros((4, 4, 4), bool), 15) is None


def test_c2f_rounds_crop_by_the_framed_box():
    torch.manual_seed(0)
    cfg = RSTNConfig(backbone="light", backbone_kwargs={"widths": (4, 8)})
    models = {v: RSTN(cfg) for v in "XYZ"}
    for m in models.values():  # a coarse stage that fires on bright voxels only (bone, vessels): a local mask
        m.coarse_model = _Bright()
    hu, _ = make_phantom_canonical((48, 48, 24), seed=1)
    rounds = list(run_c2f(models, hu, max_iter=2, thr=1.0, batch=8))
    assert rounds[0].index == 0 and rounds[0].box is None and rounds[0].mask.any()
    assert len(rounds) >= 2
    for prev, cur in zip(rounds, rounds[1:], strict=False):
        assert cur.box == box3d(prev.mask, 15)
        r0, r1, c0, c1, s0, s1 = cur.box
        outside = np.ones(hu.shape, bool)
        outside[r0:r1, c0:c1, s0:s1] = False
        assert not cur.probability[outside].any()  # nothing outside the framed box


def test_c2f_evaluation_path():
    from PancreasRSTNLib.evaluation.cases import EvalCase, evaluate_case

    torch.manual_seed(0)
    cfg = RSTNConfig(backbone="light", backbone_kwargs={"widths": (4, 8)})
    models = {v: RSTN(cfg) for v in "XYZ"}
    for m in models.values():
        m.coarse_model = _Bright()
    hu, _ = make_phantom_canonical((48, 48, 24), seed=2)
    truth = hu > 240  # the coarse stage's own target: round 0 is exact
    r = evaluate_case(models, EvalCase("bright", hu, truth), max_iter=1, device="cpu", method="c2f")
    assert r.coarse_dsc > 0.9 and len(r.dsc_per_round) == 2
