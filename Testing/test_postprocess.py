"""keep_large_components: the reference's rule, the bounding-box shortcut, and the tensor path."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from PancreasRSTNLib.engine.postprocess import keep_large_components


def _whole_volume_rule(mask: np.ndarray, ratio: float = 0.5) -> np.ndarray:
    """The reference's post-processing written out on the whole volume, without any shortcut."""
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), False))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return (sizes >= ratio * sizes.max())[labels]


def test_keeps_components_of_half_the_largest_and_more() -> None:
    mask = np.zeros((20, 30, 40), bool)
    mask[2:6, 2:6, 2:6] = True  # 64 voxels: the largest
    mask[10:14, 10:14, 10:12] = True  # 32: exactly half, kept
    mask[15:17, 20:23, 30:35] = True  # 30: dropped
    mask[18, 28, 38] = True  # 1: dropped
    kept = keep_large_components(mask)
    assert kept.sum() == 96
    assert kept[3, 3, 3] and kept[11, 11, 11] and not kept[16, 21, 31] and not kept[18, 28, 38]


def test_diagonal_neighbours_are_separate_components() -> None:
    mask = np.zeros((8, 8, 8), bool)
    mask[1:3, 1:3, 1:3] = True  # 8 voxels
    mask[3, 3, 3] = True  # touches only by a corner: its own component of 1, dropped (6-connectivity)
    assert keep_large_components(mask).sum() == 8


@pytest.mark.parametrize("seed", range(6))
def test_bounding_box_shortcut_equals_the_whole_volume_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = np.zeros((40, 50, 30), bool)
    for _ in range(rng.integers(2, 8)):
        lo = rng.integers(0, [35, 45, 25])
        mask[tuple(slice(a, a + s) for a, s in zip(lo, rng.integers(1, 6, 3)))] = True
    mask &= rng.random(mask.shape) < 0.9
    expected = _whole_volume_rule(mask)
    np.testing.assert_array_equal(keep_large_components(mask), expected)
    tensor_result = keep_large_components(torch.from_numpy(mask))
    assert isinstance(tensor_result, torch.Tensor)
    np.testing.assert_array_equal(tensor_result.numpy(), expected)


def test_empty_and_half_volume_masks_are_left_alone() -> None:
    empty = np.zeros((5, 5, 5), bool)
    assert not keep_large_components(empty).any()
    big = np.zeros((4, 4, 4), bool)
    big[:2] = True  # half the volume
    big[3, 3, 3] = True  # an island that the rule would drop if it applied
    np.testing.assert_array_equal(keep_large_components(big), big)
    assert bool(keep_large_components(torch.from_numpy(big))[3, 3, 3])
