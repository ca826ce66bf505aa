"""Losses, slice triplets, the reference's slice selection and crop margins, and the folds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from PancreasRSTNLib.errors import DatasetError
from PancreasRSTNLib.training.losses import jaccard_loss, joint_weights, soft_dsc_loss
from PancreasRSTNLib.training.training_data import (
    bounding_box,
    crop_margins,
    epoch_order,
    kfold_split,
    select_slices,
    triplet,
    view_samples,
)


def test_soft_dsc_and_jaccard_losses():
    y = torch.zeros(2, 3, 8, 8)
    y[:, :, 2:5, 2:6] = 1
    assert soft_dsc_loss(y, y).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dsc_loss(1 - y, y).item() == pytest.approx(1.0, abs=1e-6)
    p = torch.rand(2, 3, 8, 8)
    d = 1 - soft_dsc_loss(p[:1], y[:1]).item()
    j = 1 - jaccard_loss(p[:1], y[:1]).item()
    assert j == pytest.approx(d / (2 - d), rel=1e-4)  # J = D / (2 - D) for the same soft sums
    # per-sample average: a perfect sample and a wrong one give 0.5
    mixed = torch.stack([y[0], 1 - y[1]])
    assert soft_dsc_loss(mixed, y).item() == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize("loss", [soft_dsc_loss, jaccard_loss])
def test_an_empty_target_pulls_the_prediction_to_zero(loss):
    """With the reference's eps = 1e-6 an organ-free target gave loss 1 and no gradient for any prediction; it
    now gives sum(p) / (sum(p) + k), k = 1 % of the pixels: 0 for silence, and a gradient toward it that does not
    vanish for a large false positive."""
    empty = torch.zeros(1, 3, 64, 64)
    k = 0.01 * 3 * 64 * 64
    assert loss(torch.zeros(1, 3, 64, 64), empty).item() == pytest.approx(0.0)
    p = torch.full((1, 3, 64, 64), 0.05, requires_grad=True)
    value = loss(p, empty)
    assert value.item() == pytest.approx(614.4 / (614.4 + k), rel=1e-5)
    value.backward()
    assert p.grad is not None and (p.grad > 1e-5).all()
    large = torch.zeros(1, 3, 64, 64)
    large[..., :20, :20] = 0.9  # a large false positive keeps a useful gradient (it saturated with k = 1)
    large.requires_grad_(True)
    loss(large, empty).backward()
    saturated = 1.0 / (float(large.sum()) + 1.0) ** 2  # the gradient of sum(p) / (sum(p) + 1)
    assert large.grad.max() > 50 * saturated
    # a sample with organ voxels keeps the reference's formula exactly
    y = torch.zeros(1, 3, 8, 8)
    y[..., 2:4, 2:4] = 1
    q = torch.rand(1, 3, 8, 8)
    inter, total = (q * y).sum(), q.sum() + y.sum()
    expected = 1 - (2 * inter + 1e-6) / (total + 1e-6) if loss is soft_dsc_loss else \
        1 - (inter + 1e-6) / (total - inter + 1e-6)
    assert loss(q, y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_joint_weights_match_the_paper():
    w0, wt = joint_weights(1)
    assert w0 == pytest.approx(1 / 3) and wt == pytest.approx([2 / 3])
    for T in range(1, 6):
        w0, wt = joint_weights(T)
        assert 2 * w0 == pytest.approx(wt[0]) and len(wt) == T
        assert w0 + sum(wt) == pytest.approx(1.0)


def test_triplet_replicates_edges_along_each_view():
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    t = triplet(vol, "X", 0)
    assert t.shape == (3, 5, 6)
    assert np.array_equal(t[0], vol[0]) and np.array_equal(t[2], vol[1])
    t = triplet(vol, "Y", 4)
    assert t.shape == (3, 4, 6) and np.array_equal(t[2], vol[:, 4, :]) and np.array_equal(t[0], vol[:, 3, :])
    t = triplet(vol, "Z", 2)
    assert t.shape == (3, 4, 5) and np.array_equal(t[1], vol[:, :, 2]) and np.array_equal(t[2], vol[:, :, 3])


def test_slice_threshold_drops_the_smallest_two_percent():
    label = np.zeros((4, 4, 100), dtype=np.uint8)
    for j in range(100):  # slice j has j organ pixels (capped at 16), slice 0 is empty
        label.reshape(16, 100)[: min(j, 16), j] = 1
    label = label.reshape(4, 4, 100)
    chosen = select_slices(label, "Z", 0.98)
    # 99 non-empty slices -> keep floor(99*0.98)=97 largest: slices 1 and 2 drop out
    assert chosen.tolist() == list(range(3, 100))
    assert select_slices(label, "Z", 10).tolist() == list(range(10, 100))
    samples = view_samples([label], "Z", 0.98, negative_fraction=0.0)
    assert len(samples) == 97
    assert len(view_samples([label], "Z", 0.98, negative_fraction=1.0)) == 98  # only one empty slice exists


def test_crop_margins_follow_the_reference_distribution():
    rng = np.random.default_rng(0)
    draws = np.array([crop_margins(rng) for _ in range(4000)])
    fixed = np.all(draws == 20, axis=1)
    assert 0.45 < fixed.mean() < 0.56
    rand = draws[~fixed]
    assert rand.min() == 0 and rand.max() == 40
    assert abs(rand.mean() - 20) < 1.0


def test_bounding_box_with_margins_is_clamped():
    m = np.zeros((3, 20, 30), bool)
    m[1, 5:8, 10:12] = True
    assert bounding_box(m, (2, 3, 4, 5)) == (3, 11, 6, 17)
    assert bounding_box(m, (40, 40, 40, 40)) == (0, 20, 0, 30)
    assert bounding_box(np.zeros((3, 4, 4), bool), (1, 1, 1, 1)) is None


def test_epoch_order_is_deterministic_and_sharded():
    a = epoch_order(10, 3, 1)
    assert np.array_equal(a, epoch_order(10, 3, 1)) and not np.array_equal(a, epoch_order(10, 3, 2))
    r0, r1 = epoch_order(11, 3, 1, 0, 2), epoch_order(11, 3, 1, 1, 2)
    assert len(r0) == len(r1) == 5 and not set(r0) & set(r1)


def test_folds_nih82_and_sorted():
    names = [f"PANCREAS_{i:04d}" for i in range(82, 0, -1)]
    tests = [kfold_split(names, 4, k, convention="nih82")[1] for k in range(4)]
    assert [len(t) for t in tests] == [20, 20, 21, 21]
    assert tests[0][0] == "PANCREAS_0001" and tests[3][-1] == "PANCREAS_0082"
    train, test = kfold_split(names, 4, 2, convention="nih82")
    assert not set(train) & set(test) and len(train) + len(test) == 82
    small = [f"c{i}" for i in range(10)]
    assert sorted(sum((kfold_split(small, 3, k)[1] for k in range(3)), [])) == sorted(small)
    assert kfold_split(small, 3, 0, seed=1) == kfold_split(small, 3, 0, seed=1)
    with pytest.raises(DatasetError, match="NIH-82"):
        kfold_split(small, 4, 0, convention="nih82")
    with pytest.raises(DatasetError, match="Fold 5"):
        kfold_split(small, 4, 5)
