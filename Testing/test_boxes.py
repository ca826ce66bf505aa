"""Triplet crop boxes: the shared-projection path the engine uses equals the per-view definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from PancreasRSTNLib.engine.boxes import (
    boxes_from_projections,
    mask_projections,
    triplet_boxes,
    view_projections,
)


@pytest.mark.parametrize("seed", range(4))
def test_projection_boxes_equal_per_view_boxes_for_every_axis(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = np.zeros((30, 26, 17), bool)
    for _ in range(3):
        lo = rng.integers(0, [25, 21, 12])
        mask[tuple(slice(a, a + s) for a, s in zip(lo, rng.integers(1, 6, 3)))] = True
    tensor = torch.from_numpy(mask)
    projections = mask_projections(tensor)
    for axis in range(3):
        expected = triplet_boxes(tensor.movedim(axis, 0), 4)
        got = boxes_from_projections(*view_projections(projections, axis), 4)
        np.testing.assert_array_equal(got.as_array(), expected.as_array())
        assert len(got) > 0


def test_boxes_cover_the_triplet_with_margin_clamped_to_the_slice() -> None:
    mask = torch.zeros(6, 40, 50, dtype=torch.bool)
    mask[2, 10:15, 30:48] = True
    boxes = triplet_boxes(mask, 5).as_array()
    # slices 1, 2, 3 have slice 2 in their triplet; the box grows by 5 and stops at the slice's edge (50)
    np.testing.assert_array_equal(boxes, [[1, 5, 20, 25, 50], [2, 5, 20, 25, 50], [3, 5, 20, 25, 50]])
