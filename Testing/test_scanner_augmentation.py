"""The nnU-Net-style augmentations and the contrast-phase simulation: seeded, bounded, labels binary, and off by
default without touching the draws of earlier runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from PancreasRSTNLib.errors import RSTNError
from PancreasRSTNLib.training.augmentation import AugmentConfig, augment_triplet
from PancreasRSTNLib.training.scanner_augmentation import (
    PHASES,
    ScannerAugmentConfig,
    gamma,
    gaussian_blur,
    low_resolution,
    scanner_augment,
    simulate_phase,
)

ALL_ON = ScannerAugmentConfig(gamma_probability=1.0, blur_probability=1.0, lowres_probability=1.0,
                              elastic_probability=1.0, phase_probability=1.0)


def _ct(seed=0, size=96):
    """A body of fat with a kidney-bright vessel, soft tissue and an organ at NIH's 110 HU."""
    rng = np.random.default_rng(seed)
    hu = np.full((3, size, size), -1000.0, np.float32)
    hu[:, 10:-10, 10:-10] = -100.0
    hu[:, 30:70, 30:70] = 50.0  # soft tissue
    hu[:, 20:26, 40:46] = 250.0  # a vessel
    label = np.zeros((3, size, size), np.float32)
    label[:, 40:60, 40:60] = 1.0
    hu[label > 0] = 110.0
    hu += rng.normal(0, 5, hu.shape).astype(np.float32)
    return torch.from_numpy(hu), torch.from_numpy(label)


def test_same_seed_same_result_other_seed_other_result():
    image, label = _ct()
    cfg = AugmentConfig(scanner=ALL_ON)
    a = augment_triplet(image, label, np.random.default_rng([4, 2]), cfg)
    b = augment_triplet(image, label, np.random.default_rng([4, 2]), cfg)
    c = augment_triplet(image, label, np.random.default_rng([4, 3]), cfg)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_labels_stay_binary_and_images_bounded():
    image, label = _ct(size=288)  # a slice at the model's 1.5 mm
    for seed in range(10):
        x, y = scanner_augment(image, label, np.random.default_rng(seed), ALL_ON)
        assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
        assert torch.isfinite(x).all()
        assert x.min() >= -1100 and x.max() <= 600
        assert 0.5 < y.sum() / label.sum() < 1.5  # elastic moves the organ, it does not erase or double it


def test_off_by_default_and_earlier_runs_replay_their_draws():
    image, label = _ct()
    old = AugmentConfig(fatty_organ_probability=0.3)
    with_off = AugmentConfig(fatty_organ_probability=0.3, scanner=ScannerAugmentConfig())
    a = augment_triplet(image, label, np.random.default_rng(7), old)
    b = augment_triplet(image, label, np.random.default_rng(7), with_off)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not ScannerAugmentConfig().enabled
    assert AugmentConfig.from_dict(AugmentConfig(scanner=ALL_ON).to_dict()) == AugmentConfig(scanner=ALL_ON)


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_each_phase_moves_the_organ_into_its_range_and_leaves_fat(phase):
    image, label = _ct()
    moved = simulate_phase(image, label, PHASES[phase], np.random.default_rng(0))
    inner = torch.zeros_like(label, dtype=torch.bool)
    inner[:, 42:58, 42:58] = True  # away from the softened edge
    low, high = PHASES[phase]["organ"]
    assert low - 10 <= float(moved[inner].mean()) <= high + 10
    fat = image < -50
    assert torch.allclose(moved[fat], image[fat])
    vessel_low, vessel_high = PHASES[phase]["vessel"]
    assert vessel_low - 15 <= float(moved[:, 21:25, 41:45].mean()) <= vessel_high + 15


def test_blur_lowres_and_gamma_keep_range_and_mean():
    image, _ = _ct()
    for out in (gaussian_blur(image, 1.0), low_resolution(image, 0.5)):
        assert out.shape == image.shape
        assert float(out.mean()) == pytest.approx(float(image.mean()), rel=0.05)
        assert out.min() >= image.min() - 1 and out.max() <= image.max() + 1
    g = gamma(image, 1.4)
    assert torch.equal(g[image <= -100], image[image <= -100])
    assert float(g[(image > 0) & (image < 300)].mean()) < float(image[(image > 0) & (image < 300)].mean())


def test_bad_ranges_are_refused():
    with pytest.raises(RSTNError):
        ScannerAugmentConfig(phase_probability=1.5)
    with pytest.raises(RSTNError):
        ScannerAugmentConfig(lowres_zoom=(0.9, 0.5))
