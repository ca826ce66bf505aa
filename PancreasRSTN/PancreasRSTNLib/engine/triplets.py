"""Slice triplets, the unit RSTN works on: which slices a triplet holds, and how its three output channels are
averaged back into the volume (the reference's rule: each slice is the mean of the channels that predict it).

A triplet centred on slice j covers slices j-1, j, j+1; at the ends the missing neighbour is replaced by the end
slice itself (input), and the channel that would fall outside the volume is dropped (output)."""

from __future__ import annotations

import torch

#: slice offsets of a triplet's three channels from its centre
TRIPLET_OFFSETS = (-1, 0, 1)


def triplet_slices(centres: torch.Tensor) -> torch.Tensor:
    """(B, 3) slices j-1, j, j+1 of the triplets centred on ``centres``, not clamped (may be -1 or L)."""
    return centres[:, None] + torch.tensor(TRIPLET_OFFSETS, device=centres.device)


def triplet_indices(centres: torch.Tensor, length: int) -> torch.Tensor:
    """(B, 3) slice indices [j-1, j, j+1] with the ends replicated, as the reference builds triplets."""
    return triplet_slices(centres).clamp(0, length - 1)


def slice_weights(length: int, device: torch.device) -> torch.Tensor:
    """1 / (number of triplet channels that predict each slice): 1/3 inside, 1/2 at the ends (reference)."""
    counts = torch.full((length,), 3.0, device=device)
    counts[0] -= 1
    counts[-1] -= 1
    if length == 1:
        counts[0] = 1.0
    return 1.0 / counts


def accumulate_whole_slices(acc_v: torch.Tensor, start: int, p: torch.Tensor, weight: torch.Tensor) -> None:
    """Coarse stage: triplets start .. start+B-1 predict slices start-1 .. start+B. Their three channels are summed
    per target slice in a small contiguous buffer first, then added to the accumulator's (for the Z view strided)
    slices in one pass: 4x cheaper than a scattered index_put_ there (13-16 -> 3.3 ms per 512x512 slice).
    Channels that would fall outside the volume are dropped (reference)."""
    n, length = p.shape[0], acc_v.shape[0]
    contrib = torch.zeros((n + 2, *p.shape[2:]), dtype=p.dtype, device=p.device)
    for c in range(3):  # the three channels of every triplet at once
        contrib[c : c + n] += p[:, c]
    lo, hi = max(start - 1, 0), min(start + n + 1, length)
    acc_v[lo:hi].add_(contrib[lo - start + 1 : hi - start + 1] * weight[lo:hi, None, None])


def accumulate_crops(acc_v: torch.Tensor, centres: torch.Tensor, p: torch.Tensor, weight: torch.Tensor,
                     rows: torch.Tensor, cols: torch.Tensor) -> None:
    """Fine stage: add each crop's three channel probabilities (B, 3, h, w) to the slices j-1, j, j+1 and the
    pixels (``rows`` (B, h) x ``cols`` (B, w)) it predicts, scaled by the per-slice averaging weight. Channels
    outside the volume are dropped (reference)."""
    length = acc_v.shape[0]
    target = triplet_slices(centres)  # (B, 3)
    valid = (target >= 0) & (target < length)
    target = target.clamp(0, length - 1)
    scale = (weight[target] * valid)[:, :, None, None]
    acc_v.index_put_((target[:, :, None, None], rows[:, None, :, None], cols[:, None, None, :]), p * scale,
                     accumulate=True)
