"""The reference's post-processing: keep the 6-connected components of at least ``ratio`` x the largest."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def keep_large_components(mask: np.ndarray, ratio: float = 0.5) -> np.ndarray:
    """Drop small islands. Skipped (mask returned unchanged) when the mask is empty or covers half the volume
    or more, as in the reference."""
    mask = np.asarray(mask, dtype=bool)
    count = int(np.count_nonzero(mask))
    if count == 0 or count >= mask.size / 2:
        return mask
    labels = sitk.GetArrayFromImage(
        sitk.ConnectedComponent(sitk.GetImageFromArray(mask.view(np.uint8)), False)  # 6-connected
    )
    sizes = np.bincount(labels.reshape(-1))
    sizes[0] = 0
    keep = sizes >= ratio * sizes.max()
    return keep[labels]
