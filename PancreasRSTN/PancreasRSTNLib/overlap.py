"""The overlap of two masks (DSC): the engine's stop rule compares rounds with it, and evaluation scores with it.

It sits on the ground floor so that the engine need not import the evaluation package.
Convention of the reference: the DSC of two empty masks is 1 between rounds (nothing changed).
"""

from __future__ import annotations

import numpy as np
import torch


def dice(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, empty: float = 1.0) -> float:
    """Dice similarity coefficient of two binary masks; ``empty`` when both are empty."""
    if isinstance(a, torch.Tensor):
        # count_nonzero: 20x faster than .sum() on CPU bool tensors (no int64 conversion)
        inter = int(torch.count_nonzero(torch.logical_and(a, b)))
        total = int(torch.count_nonzero(a)) + int(torch.count_nonzero(b))
    else:
        a = np.asarray(a, dtype=bool)
        b = np.asarray(b, dtype=bool)
        inter = int(np.count_nonzero(a & b))
        total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return float(empty) if total == 0 else 2.0 * inter / total
