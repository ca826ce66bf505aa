"""The fine stage's crops of one view: the window each triplet's crop is seen through, crops batched by window
size, the pixels a window gathers, and the box that keeps the applied saliency weights for display.

A triplet's exact box (``boxes.TripletBoxes``) is what it predicts. The window the fine net sees may be larger:
replicate-padded to the backbone's padding multiple (results unchanged), or grown with real image context to a
multiple of ``crop_bucket`` (more crops share a batch, but the net sees more context than the reference's)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from .boxes import TripletBoxes, bucket_boxes
from .results import SaliencyMaps


@dataclass
class CropWindows:
    """Crops as (n,) tensors on the device: each triplet's centre slice, its exact box [a0, a1) x [b0, b1) and
    where its window starts. A plan holds every crop of a view; a batch, those of one window size."""

    centres: torch.Tensor
    a0: torch.Tensor
    a1: torch.Tensor
    b0: torch.Tensor
    b1: torch.Tensor
    start_a: torch.Tensor
    start_b: torch.Tensor

    def take(self, members: torch.Tensor) -> dict[str, torch.Tensor]:
        """The crops ``members``, field by field."""
        return {f.name: getattr(self, f.name)[members] for f in fields(CropWindows)}


@dataclass
class CropBatch(CropWindows):
    """Crops of one window size (``height`` x ``width``)."""

    height: int
    width: int

    def __len__(self) -> int:
        return len(self.centres)

    def _ranges(self, grow: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.centres.device
        return (torch.arange(self.height + 2 * grow, device=device),
                torch.arange(self.width + 2 * grow, device=device))

    def window_pixels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, h) rows and (B, w) columns of the slice where each window pixel lies."""
        ar, ac = self._ranges()
        return self.start_a[:, None] + ar, self.start_b[:, None] + ac

    def source_pixels(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which crop pixel each window position takes its value from: itself, or (replicate padding) the crop's
        last one. (rows, cols) in the slice, then the same relative to the window's start."""
        ar, ac = self._ranges()
        rel_r = torch.minimum(ar[None], (self.a1 - 1 - self.start_a)[:, None])
        rel_c = torch.minimum(ac[None], (self.b1 - 1 - self.start_b)[:, None])
        return self.start_a[:, None] + rel_r, self.start_b[:, None] + rel_c, rel_r, rel_c

    def context_pixels(self, radius: int, slice_shape: tuple[int, int]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The window grown by ``radius`` on every side, where the saliency module needs the previous
        probability: (B, h+2r) rows, (B, w+2r) columns (unclamped), and (B, 1, h+2r, w+2r) True inside the slice."""
        height, width = slice_shape
        ar, ac = self._ranges(radius)
        rows = self.start_a[:, None] - radius + ar
        cols = self.start_b[:, None] - radius + ac
        valid = ((rows >= 0) & (rows < height))[:, None, :, None] & ((cols >= 0) & (cols < width))[:, None, None, :]
        return rows, cols, valid

    def inside(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) True where a window pixel (``window_pixels``) lies in its triplet's own box: outside it,
        a triplet predicts nothing (the reference pastes the crop into -9999999 logits)."""
        return (((rows >= self.a0[:, None]) & (rows < self.a1[:, None]))[:, None, :, None]
                & ((cols >= self.b0[:, None]) & (cols < self.b1[:, None]))[:, None, None, :])


@dataclass
class CropPlan(CropWindows):
    """Every crop of one view in one round, and each one's window size."""

    sizes: list[tuple[int, int]]

    @classmethod
    def for_boxes(cls, boxes: TripletBoxes, slice_shape: tuple[int, int], bucket: int, pad_multiple: int,
                  device: torch.device) -> CropPlan:
        """Windows of the exact boxes: replicate-padded to ``pad_multiple`` when the backbone pads that way itself
        (exact results), else grown to multiples of ``bucket`` (1: the boxes themselves)."""
        height, width = slice_shape
        sizes_a, sizes_b = boxes.a1 - boxes.a0, boxes.b1 - boxes.b0
        if bucket == 1 and pad_multiple > 1 and min(sizes_a.min(), sizes_b.min()) > 1:
            # The backbone replicate-pads each input to a multiple of `pad_multiple` itself; padding each crop that
            # way here (by clamped gathering) batches all crops of one padded size with unchanged results.
            start_a, start_b = boxes.a0, boxes.b0
            size_a = -(-sizes_a // pad_multiple) * pad_multiple
            size_b = -(-sizes_b // pad_multiple) * pad_multiple
        else:
            start_a, start_b, size_a, size_b = bucket_boxes(boxes, bucket, height, width)
        tensors = (torch.from_numpy(np.ascontiguousarray(a)).to(device)
                   for a in (boxes.centres, boxes.a0, boxes.a1, boxes.b0, boxes.b1, start_a, start_b))
        return cls(*tensors, sizes=list(zip(size_a.tolist(), size_b.tolist())))

    def groups(self) -> list[tuple[tuple[int, int], torch.Tensor]]:
        """(window size, indices of its crops), smallest size first: each size is batched on its own."""
        members: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(self.sizes):
            members.setdefault(size, []).append(i)
        return [(size, torch.tensor(m, device=self.centres.device)) for size, m in sorted(members.items())]

    def batch(self, members: torch.Tensor, size: tuple[int, int]) -> CropBatch:
        """The crops ``members`` (all of window size ``size``) as one batch."""
        return CropBatch(**self.take(members), height=size[0], width=size[1])


@dataclass
class SaliencyBox:
    """The saliency weights a view's fine stage applied, kept over the union of its crop boxes (view-major:
    (3, slices, a, b)) for display. ``lo`` is the (slice, a, b) of the box's first voxel."""

    values: torch.Tensor
    lo: tuple[int, int, int]

    @classmethod
    def around(cls, boxes: TripletBoxes, device: torch.device) -> SaliencyBox:
        lo = np.array([boxes.centres.min(), boxes.a0.min(), boxes.b0.min()])
        hi = np.array([boxes.centres.max() + 1, boxes.a1.max(), boxes.b1.max()])
        values = torch.zeros((3, *(hi - lo)), dtype=torch.float32, device=device)
        return cls(values, (int(lo[0]), int(lo[1]), int(lo[2])))

    def add(self, centres: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor) -> None:
        """Add a batch's weights (B, 3, h, w) of the triplets centred on ``centres`` at the slice pixels
        ``rows`` (B, h) x ``cols`` (B, w)."""
        channel = torch.arange(3, device=centres.device)[None, :, None, None]
        self.values.index_put_(
            (channel, (centres - self.lo[0])[:, None, None, None],
             (rows - self.lo[1])[:, None, :, None].clamp(0, self.values.shape[2] - 1),
             (cols - self.lo[2])[:, None, None, :].clamp(0, self.values.shape[3] - 1)),
            weights,
            accumulate=True,
        )

    def maps(self, view: str, axis: int) -> SaliencyMaps:
        """The weights in canonical layout, placed by their offset in the canonical volume."""
        channels = self.values.movedim(1, 1 + axis).cpu().numpy()
        offset = [0, 0, 0]
        other = [a for a in range(3) if a != axis]
        offset[axis], offset[other[0]], offset[other[1]] = self.lo
        return SaliencyMaps(view, channels, (offset[0], offset[1], offset[2]))
