"""How much of an earlier round a fine round keeps: the settling of the rounds (``previous_weight``).

Why: the paper's fine rounds can swing (a round moves a patient's mask one way, the next one back), so later rounds
lose against the best one. A round that keeps part of the previous round's probability moves the mask only part of
the way. Its own step between two rounds is then small even while the fine nets still move the mask, so a settling
run asks the fine nets' own mask (before the average) to agree with the previous round's before it stops.
"""

from __future__ import annotations

import torch

from ..overlap import dice
from .postprocess import keep_large_components


def settle(probability: torch.Tensor, previous: torch.Tensor, weight: float, prob_threshold: float,
           roi: torch.Tensor | None) -> torch.Tensor:
    """Make ``probability`` (the fine nets' fused output, changed in place) (1 - weight) of itself and ``weight`` of
    ``previous``; return the fine nets' own mask from before the average (limited to ``roi``)."""
    own = probability >= prob_threshold
    if roi is not None:
        own.logical_and_(roi)
    probability.mul_(1.0 - weight).add_(previous, alpha=weight)
    return own


def own_agreement(previous_mask: torch.Tensor, own: torch.Tensor, postprocess: bool) -> float:
    """The DSC of a settling round's own mask (post-processed as a round's mask is) to the previous round's mask:
    the run has converged when it reaches the convergence threshold."""
    return dice(previous_mask, keep_large_components(own) if postprocess else own, empty=1.0)
