"""Fill the empty slices between contoured slices of a mask by shape-based interpolation.

Why: a radiologist often contours every 5th or 10th axial slice. RSTN's fine stage only crops slice triplets
that hold the previous round's mask, so a prior with empty slices between its contours would leave those slices
empty for ever. Filling them first (the signed distance to each contour, interpolated linearly between
neighbouring contoured slices: Raya and Udupa's shape-based interpolation) gives the fine rounds a dense start.
Slicer's "Fill between slices" (ITK's morphological contour interpolation) does the same job by other means;
``scripts/measure_refinement.py`` compares both.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def contoured_slices(mask: np.ndarray, axis: int = 2) -> np.ndarray:
    """Indices of the slices along ``axis`` that hold mask voxels."""
    other = tuple(a for a in range(3) if a != axis)
    return np.flatnonzero(mask.any(axis=other))


def has_gaps(mask: np.ndarray, axis: int = 2) -> bool:
    """Does the mask have empty slices between contoured ones (a sparse contouring)?"""
    present = contoured_slices(mask, axis)
    return len(present) > 1 and bool((np.diff(present) > 1).any())


def is_sparse_contouring(report: dict) -> bool:
    """Did a person contour some slices only (every 2nd or fewer: at least as many slices filled as drawn),
    rather than give a whole mask with a hole or two (an eroded mask can lose a thin slice)?"""
    return report["filled_slices"] > 0 and report["filled_slices"] >= report["contoured_slices"]


def _signed_distance(plane: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Signed Euclidean distance in mm to a 2-D contour: negative inside, positive outside."""
    image = sitk.GetImageFromArray(plane.astype(np.uint8))
    image.SetSpacing((float(spacing[1]), float(spacing[0])))
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return sitk.GetArrayFromImage(distance).astype(np.float32)


def fill_between_slices(mask: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                        axis: int = 2) -> tuple[np.ndarray, dict]:
    """The mask with every empty slice between two contoured slices filled by interpolating the two contours'
    signed distance maps; contoured slices are kept as drawn, nothing is added outside the first and last.
    Returns (filled mask, report: contoured and filled slice counts)."""
    mask = np.asarray(mask, dtype=bool)
    present = contoured_slices(mask, axis)
    report = {"contoured_slices": int(len(present)), "filled_slices": 0}
    if not has_gaps(mask, axis):
        return mask, report
    view = np.moveaxis(mask, axis, 0)
    in_plane = tuple(s for a, s in enumerate(spacing) if a != axis)
    out = view.copy()
    distances = {int(k): _signed_distance(view[k], in_plane) for k in present}
    for k0, k1 in zip(present[:-1], present[1:]):
        gap = int(k1 - k0)
        if gap < 2:
            continue
        t = (np.arange(1, gap, dtype=np.float32) / gap)[:, None, None]
        out[k0 + 1:k1] = ((1 - t) * distances[int(k0)] + t * distances[int(k1)]) <= 0
        report["filled_slices"] += gap - 1
    return np.ascontiguousarray(np.moveaxis(out, 0, axis)), report
