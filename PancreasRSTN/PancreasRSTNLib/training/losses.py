"""Training losses on probability maps (after the sigmoid), per sample, flattened over the 3 slice channels.

The soft DSC loss is the reference's; the Jaccard (IoU) loss is the one of Cai et al. (seed papers 003/004).
On a sample whose target is empty (an organ-free slice, which the reference never trains on) both are 1 for any
prediction above 1e-6 and give no gradient; there they become ``sum(p) / (sum(p) + k)`` with ``k`` 1 % of the
sample's pixels (about an organ's area), which pulls the prediction to 0 with a gradient of the same order as the
soft DSC's on an organ slice, whatever the size of the false positive (``--negative-fraction``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import RSTNError

EPS = 1e-6
#: Smoothing of the empty-target loss, as a share of the sample's pixels.
EMPTY_SMOOTHING = 0.01


def _empty_target_loss(p_sum: torch.Tensor, y_sum: torch.Tensor, loss: torch.Tensor, pixels: int) -> torch.Tensor:
    """Per sample: ``loss`` where the target has organ voxels, ``sum(p) / (sum(p) + k)`` where it has none."""
    k = max(1.0, EMPTY_SMOOTHING * pixels)
    return torch.where(y_sum > 0, loss, p_sum / (p_sum + k))


def soft_dsc_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - (2 sum(p*y) + eps) / (sum(p) + sum(y) + eps)`` per sample, averaged over the batch."""
    p = prob.flatten(1).float()
    y = target.flatten(1).float()
    inter = (p * y).sum(1)
    p_sum, y_sum = p.sum(1), y.sum(1)
    return _empty_target_loss(p_sum, y_sum, 1.0 - (2.0 * inter + EPS) / (p_sum + y_sum + EPS), p.shape[1]).mean()


def jaccard_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Jaccard loss ``1 - (sum(p*y) + eps) / (sum(p) + sum(y) - sum(p*y) + eps)`` per sample."""
    p = prob.flatten(1).float()
    y = target.flatten(1).float()
    inter = (p * y).sum(1)
    p_sum, y_sum = p.sum(1), y.sum(1)
    return _empty_target_loss(p_sum, y_sum, 1.0 - (inter + EPS) / (p_sum + y_sum - inter + EPS), p.shape[1]).mean()


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: dict[str, LossFn] = {"dsc": soft_dsc_loss, "jaccard": jaccard_loss}


def get_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise RSTNError(f"Unknown loss '{name}'. Choose one of: {', '.join(LOSSES)}.")
    return LOSSES[name]


def joint_weights(T: int) -> tuple[float, list[float]]:
    """The paper's lambda weights for T unrolled fine iterations: 2*l0 = l1 = ... = lT = 2/(2T+1).

    T = 1 gives the reference's 1/3 coarse + 2/3 fine."""
    if T < 1:
        raise RSTNError(f"T must be at least 1 (got {T}); the paper uses T = 1..5.")
    w = 2.0 / (2 * T + 1)
    return w / 2.0, [w] * T
