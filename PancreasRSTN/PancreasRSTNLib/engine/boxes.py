"""Crop boxes of slice triplets, computed for all slices of a view at once (no per-slice loop), and the 3-D
bounding box of a mask (post-processing, resampling and the C2F baseline crop by it).

A triplet centred on slice j covers slices j-1, j, j+1 (clamped at the ends). Its box is the tight box of the
mask over those slices plus ``margin`` on every side, clamped to the slice: ``[a0, a1) x [b0, b1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TripletBoxes:
    """Boxes of the non-empty triplets of one view, in view coordinates (slice, a, b)."""

    centres: np.ndarray  # (n,) slice index j of each triplet
    a0: np.ndarray
    a1: np.ndarray
    b0: np.ndarray
    b1: np.ndarray

    def as_array(self) -> np.ndarray:
        """(n, 5) int array: slice, a0, a1, b0, b1."""
        return np.stack([self.centres, self.a0, self.a1, self.b0, self.b1], axis=1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.centres)


def _first_true(x: torch.Tensor) -> torch.Tensor:
    """Index of the first True along the last axis (0 where none)."""
    return x.to(torch.uint8).argmax(dim=-1)


def triplet_boxes(mask_view: torch.Tensor, margin: int | tuple[int, int, int, int]) -> TripletBoxes:
    """Boxes of every triplet whose 3 slices hold mask voxels.

    ``mask_view`` is (L, H, W) bool with the view's slice axis first. ``margin`` is one int, or
    (top, bottom, left, right) as in the reference's random training margins."""
    return boxes_from_projections(mask_view.any(dim=2), mask_view.any(dim=1), margin)


def mask_projections(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mask's 'any' projections onto the planes of axes (0, 1), (0, 2) and (1, 2). Every view's triplet
    boxes derive from them (``view_projections``): a round reads the full mask three times instead of six, and
    a uint8 max is several times faster than a bool any on the CPU (512x512x240: 0.65 s -> 0.04 s for 3 views)."""
    u = mask.view(torch.uint8) if mask.dtype == torch.bool else (mask != 0).view(torch.uint8)
    return u.amax(dim=2).bool(), u.amax(dim=1).bool(), u.amax(dim=0).bool()


def view_projections(projections: tuple[torch.Tensor, torch.Tensor, torch.Tensor], axis: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the view whose slices run along ``axis``: (L, H) and (L, W) 'any' maps, as
    ``mask.movedim(axis, 0).any(dim=2)`` and ``.any(dim=1)`` would give them."""
    p01, p02, p12 = projections
    return ((p01, p02), (p01.T, p12), (p02.T, p12.T))[axis]


def boxes_from_projections(rows: torch.Tensor, cols: torch.Tensor, margin: int | tuple[int, int, int, int]
                           ) -> TripletBoxes:
    """Triplet boxes from a view's (L, H) row and (L, W) column 'any' maps (see ``triplet_boxes``)."""
    top, bottom, left, right = (margin,) * 4 if isinstance(margin, int) else margin
    (length, height), width = rows.shape, cols.shape[1]
    present = rows.any(dim=1)
    big = max(height, width) + 1
    a0 = torch.where(present, _first_true(rows), big)
    a1 = torch.where(present, height - _first_true(rows.flip(1)), -1)
    b0 = torch.where(present, _first_true(cols), big)
    b1 = torch.where(present, width - _first_true(cols.flip(1)), -1)
    idx = torch.arange(length, device=rows.device)
    neighbours = torch.stack([(idx - 1).clamp(min=0), idx, (idx + 1).clamp(max=length - 1)], dim=1)
    t_present = present[neighbours].any(dim=1)
    t_a0 = (a0[neighbours].min(dim=1).values - top).clamp(min=0)
    t_a1 = (a1[neighbours].max(dim=1).values + bottom).clamp(max=height)
    t_b0 = (b0[neighbours].min(dim=1).values - left).clamp(min=0)
    t_b1 = (b1[neighbours].max(dim=1).values + right).clamp(max=width)
    keep = torch.nonzero(t_present).flatten()
    cpu = [keep.cpu().numpy()] + [t.index_select(0, keep).cpu().numpy() for t in (t_a0, t_a1, t_b0, t_b1)]
    return TripletBoxes(*cpu)


def clip_boxes(boxes: TripletBoxes, lo: np.ndarray, hi: np.ndarray, axis: int) -> TripletBoxes:
    """The boxes of a view (slices along canonical ``axis``) cut to the canonical region ``[lo, hi)``: triplets
    centred outside it are dropped, the others' boxes shrink to fit inside it (a region of interest)."""
    a_axis, b_axis = (a for a in range(3) if a != axis)
    a0, a1 = np.maximum(boxes.a0, lo[a_axis]), np.minimum(boxes.a1, hi[a_axis])
    b0, b1 = np.maximum(boxes.b0, lo[b_axis]), np.minimum(boxes.b1, hi[b_axis])
    keep = (boxes.centres >= lo[axis]) & (boxes.centres < hi[axis]) & (a0 < a1) & (b0 < b1)
    return TripletBoxes(boxes.centres[keep], a0[keep], a1[keep], b0[keep], b1[keep])


def bucket_boxes(boxes: TripletBoxes, bucket: int, height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grow each box (with real image context) to a size rounded up to ``bucket`` so that triplets can be
    batched; returns (start_a, start_b, size_a, size_b). ``bucket`` 1 keeps the exact reference boxes."""
    h = boxes.a1 - boxes.a0
    w = boxes.b1 - boxes.b0
    size_a = np.minimum(-(-h // bucket) * bucket, height)
    size_b = np.minimum(-(-w // bucket) * bucket, width)
    start_a = np.clip(boxes.a0 - (size_a - h) // 2, 0, height - size_a)
    start_b = np.clip(boxes.b0 - (size_b - w) // 2, 0, width - size_b)
    return start_a, start_b, size_a, size_b


def bounding_box(mask: np.ndarray | torch.Tensor) -> tuple[slice, slice, slice] | None:
    """Slices of the smallest box holding every foreground voxel of a 3-D mask; None when it is empty.

    A tensor's box comes from its ``mask_projections`` (a bool any() over two axes is slow on CPU tensors)."""
    if isinstance(mask, torch.Tensor):
        p01, p02, _ = mask_projections(mask)
        hits_per_axis = [torch.nonzero(a).flatten().cpu().numpy() for a in (p01.any(1), p01.any(0), p02.any(0))]
    else:
        hits_per_axis = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(hits) == 0 for hits in hits_per_axis):
        return None
    rows, cols, slices = (slice(int(hits[0]), int(hits[-1]) + 1) for hits in hits_per_axis)
    return rows, cols, slices
