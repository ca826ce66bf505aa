"""What the engine yields per round, on its own (canonical, model-spacing) grid.

``segmentation.GridRound`` wraps one of these with the converters onto the input image's grid; every caller
outside the engine (CLI, demo, evaluation, Slicer) reads rounds through ``GridRound``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SaliencyMaps:
    """The saliency weight channels of one view in one fine round, over the box the fine stage saw.

    ``channels[c]`` at slice j (along the view's axis) is the weight that multiplied slice j-1+c of the
    triplet centred on slice j. Canonical layout; ``offset`` places the box in the canonical volume. Voxels of the
    box outside every crop are 0."""

    view: str
    channels: np.ndarray  # (3, a, b, c) float32
    offset: tuple[int, int, int]


@dataclass
class RoundResult:
    """One round of a run. Build it with keyword arguments: several fields share a type."""

    index: int  # 0 = coarse
    stage: str  # "coarse" | "fine" (RSTN, C2F) | "cnn" (Cai et al.) | "refine" (a package's (Bi)CLSTM refiner)
    probability: np.ndarray  # fused probability, canonical float32; never modified afterwards
    mask: np.ndarray  # binary mask (post-processed in fine rounds), canonical bool
    saliency: dict[str, SaliencyMaps]
    crop_boxes: dict[str, np.ndarray]  # view -> (n, 5) slice, a0, a1, b0, b1 in that view's (slice, a, b) axes
    dsc_to_previous: float | None
    seconds: dict[str, float]
    device: str
    converged: bool = False
    # when this is the last round: "converged" | "max_iter" | "empty" (RSTN, C2F) | "done" (Cai et al.'s single
    # pass); a refinement round takes over the stop reason of the round it refined
    stop_reason: str | None = None

    @property
    def voxel_count(self) -> int:
        return int(np.count_nonzero(self.mask))
