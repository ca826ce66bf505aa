"""Overlap and distance metrics, as the paper reports them (DSC in particular).

Convention of the reference: the DSC of two empty masks is 1 between rounds (nothing changed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from ..overlap import dice  # the DSC's one definition, on the engine's floor


def jaccard(a: np.ndarray, b: np.ndarray, empty: float = 1.0) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.count_nonzero(a | b)
    return float(empty) if union == 0 else np.count_nonzero(a & b) / union


def precision_recall(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    tp = np.count_nonzero(pred & truth)
    n_pred, n_truth = np.count_nonzero(pred), np.count_nonzero(truth)
    precision = tp / n_pred if n_pred else (1.0 if n_truth == 0 else 0.0)
    recall = tp / n_truth if n_truth else (1.0 if n_pred == 0 else 0.0)
    return float(precision), float(recall)


def relative_volume_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """(|pred| - |truth|) / |truth|: signed, so over- and under-segmentation are told apart."""
    n_truth = np.count_nonzero(truth)
    if n_truth == 0:
        return float("nan")
    return (np.count_nonzero(pred) - n_truth) / n_truth


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Distances from every surface voxel of each mask to the other mask's surface, both ways (in the unit of
    ``spacing``, which follows the array's axis order); empty when a mask is empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() or not truth.any():
        return np.zeros(0)

    def surface_and_distance(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img = sitk.GetImageFromArray(mask.astype(np.uint8))
        img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
        contour = sitk.GetArrayFromImage(sitk.BinaryContour(img, fullyConnected=False)).astype(bool)
        dist = sitk.GetArrayFromImage(
            sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
        )
        return contour, np.abs(dist)

    pred_surface, pred_dist = surface_and_distance(pred)
    truth_surface, truth_dist = surface_and_distance(truth)
    return np.concatenate([truth_dist[pred_surface], pred_dist[truth_surface]])


def hausdorff95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """95th percentile of the symmetric surface distance; nan if a mask is empty."""
    distances = surface_distances(pred, truth, spacing)
    return float(np.percentile(distances, 95)) if distances.size else float("nan")


def average_surface_distance(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Average symmetric surface distance (the AVD of Cai et al.): the mean of the surface distances both ways;
    nan if a mask is empty."""
    distances = surface_distances(pred, truth, spacing)
    return float(distances.mean()) if distances.size else float("nan")


#: The names ``segmentation_metrics`` returns, in the reports' column order.
METRICS = ("dsc", "jaccard", "precision", "recall", "volume_error", "hd95", "assd")


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray,
                         spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """All per-case metrics of the evaluation report."""
    precision, recall = precision_recall(pred, truth)
    distances = surface_distances(pred, truth, spacing)
    return {
        "dsc": dice(pred, truth, empty=0.0) if np.any(truth) or np.any(pred) else 1.0,
        "jaccard": jaccard(pred, truth),
        "precision": precision,
        "recall": recall,
        "volume_error": relative_volume_error(pred, truth),
        "hd95": float(np.percentile(distances, 95)) if distances.size else float("nan"),
        "assd": float(distances.mean()) if distances.size else float("nan"),
    }


def summary_stats(values: Sequence[float]) -> dict[str, float]:
    """n, mean, std, min, max, median over the finite values (None and NaN left out), as the tables report."""
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], dtype=float)
    if v.size == 0:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"),
                "median": float("nan")}
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "median": float(np.median(v))}
