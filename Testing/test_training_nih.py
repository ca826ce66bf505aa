"""The trainer on real, expert-labelled anatomy (15 NIH Pancreas-CT slices): a short run must cut the loss.
The full over-fitting check (DSC >= 0.9 on the slices) is benchmarks/train_nih_slices.py."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from PancreasRSTNLib.models.intensity import DEFAULT_WINDOW
from PancreasRSTNLib.training.trainer import TrainCase, TrainConfig, train_view

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nih_pancreas_slices.npz"


@pytest.mark.skipif(not DATA.is_file(),
                    reason="../shared/data/nih_pancreas_slices.npz is absent (shared data not mounted)")
def test_short_training_on_nih_slices_lowers_the_loss(tmp_path):
    data = np.load(DATA)
    rows, cols = slice(200, 368), slice(212, 380)  # this 168 x 168 window holds every pancreas mask of the 15 slices
    cases = [TrainCase(f"s{k}", DEFAULT_WINDOW.apply(img[rows, cols])[..., None],
                       (m[rows, cols] > 0)[..., None].astype(np.uint8))
             for k, (img, m) in enumerate(zip(data["images"], data["masks"], strict=True))]
    cfg = TrainConfig(views=("Z",), backbone="light", backbone_kwargs={"widths": (8, 16, 32, 64)},
                      schedule=(("S", 60),), optimizer="adamw", lr=2e-3, coarse_lr_ratio=1.0, log_every=1, seed=0)
    _, summary = train_view(cases, cfg, "Z", tmp_path, progress=False)
    with open(tmp_path / "logs" / "train_log.csv") as f:
        fine = [float(r["fine_loss"]) for r in csv.DictReader(f)]
    assert summary["final_step"] == 60
    assert np.mean(fine[-15:]) < np.mean(fine[:15]) - 0.1  # it learns real pancreas from expert labels
