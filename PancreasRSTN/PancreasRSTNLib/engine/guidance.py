"""What a person gives a run besides the CT: a prior mask that takes the coarse round's place, and a region of
interest that limits where the organ may be.

Why: RSTN's fine stage turns the previous round's probability into the saliency that steers the next round, so
a mask a person drew, corrected or contoured on a few slices can be that previous round (round 0, stage
"prior"), and the recurrence refines it. A region of interest keeps a wrong coarse hit elsewhere in the body out
of the first fine round and keeps the fine crops inside it (with the crop margin of context around it, as the
fine network was trained with: a crop cut at an organ's edge loses the organ).

The arrays are canonical (rows, cols, slices) and lie on the grid of the arrays they go with: the input grid
when built (``io/guidance_io.py``), the model grid inside the engine (``to_model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputImageError
from ..overlap import dice

if TYPE_CHECKING:
    from .resampling import Resampling

#: the stage name of round 0 when it is a person's prior, in every output, table and plot
PRIOR_STAGE = "prior"


@dataclass(frozen=True)
class DrawnSlices:
    """The axial slices a person contoured in a sparse prior (every 5th slice, say), kept as drawn in every
    round's result on the input grid.

    Why: Slicer's "Fill between slices" keeps the drawn contours, and a person who drew them expects them back;
    the fine network at 1.5 mm re-draws each one, coarser than the person did (measured: docs/refinement.md)."""

    indices: np.ndarray  # canonical axis-2 (axial) indices on the input grid
    masks: np.ndarray  # bool (rows, cols, len(indices)): the person's contours there

    @classmethod
    def of(cls, mask: np.ndarray, indices: np.ndarray) -> DrawnSlices:
        indices = np.asarray(indices, dtype=np.int64)
        return cls(indices, np.ascontiguousarray(np.asarray(mask, dtype=bool)[:, :, indices]))

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``values`` (a mask, or a probability: 0/1 there; on the grid ``Guidance.check`` accepted) with the
        drawn slices put back; a copy, never the caller's array changed."""
        out = np.array(values, copy=True)
        out[:, :, self.indices] = self.masks.astype(out.dtype)
        return out


@dataclass(frozen=True)
class Guidance:
    """A prior (float32 probability in [0, 1]; a binary mask is 0/1) and/or a region of interest (bool), both
    canonical; ``report`` says what the person gave, for summaries (JSON). ``drawn``: the contoured slices of a
    sparse prior, on the input grid, that every result keeps (not resampled: ``to_model`` leaves them out)."""

    prior: np.ndarray | None = None
    roi: np.ndarray | None = None
    report: dict = field(default_factory=dict)
    drawn: DrawnSlices | None = None

    def __post_init__(self) -> None:
        if self.prior is not None:
            object.__setattr__(self, "prior", np.asarray(self.prior, dtype=np.float32))
        if self.roi is not None:
            object.__setattr__(self, "roi", np.asarray(self.roi, dtype=bool))

    def prior_mask(self, threshold: float = 0.5) -> np.ndarray | None:
        """The person's mask: the prior at the probability threshold (None without a prior)."""
        return None if self.prior is None else self.prior >= threshold

    def check(self, shape: tuple[int, ...], threshold: float = 0.5) -> None:
        """Refuse, before any work, guidance that cannot steer a run on a volume of ``shape`` (once per shape and
        threshold: ``segment_image`` checks at once, the generator it returns would check again)."""
        if self.__dict__.get("_checked") == (tuple(shape), threshold):
            return
        for name, array in (("prior", self.prior), ("region of interest", self.roi)):
            if array is not None and tuple(array.shape) != tuple(shape):
                raise InputImageError(f"The {name} has shape {array.shape}, the CT {tuple(shape)}. Give a mask on "
                                      "the CT's own grid (same size, spacing, origin and direction).")
        if self.drawn is not None and (self.drawn.masks.shape[:2] != tuple(shape[:2])
                                       or (len(self.drawn.indices) and self.drawn.indices.max() >= shape[2])):
            raise InputImageError(f"The drawn slices ({self.drawn.masks.shape[:2]}) do not fit the CT "
                                  f"{tuple(shape)}. Give a mask on the CT's own grid.")
        if self.prior is not None:
            if not np.isfinite(self.prior).all() or self.prior.min() < 0 or self.prior.max() > 1:
                raise InputImageError("The prior holds values outside [0, 1] or NaNs. Give a label map (with "
                                      "--prior-label) or a probability map in [0, 1].")
            if not (self.prior >= threshold).any():
                raise InputImageError("The prior is empty: no voxel of the organ. Give a mask that holds the "
                                      "organ, or run without --prior.")
        if self.roi is not None and not self.roi.any():
            raise InputImageError("The region of interest misses the image: not one CT voxel lies inside it. Give "
                                  "a box in the CT's physical (LPS mm) coordinates, or a mask on its grid.")
        if self.prior is not None and self.roi is not None and not (self.prior[self.roi] >= threshold).any():
            raise InputImageError("The prior lies wholly outside the region of interest. Move the region so that "
                                  "it holds the organ, or run without it.")
        object.__setattr__(self, "_checked", (tuple(shape), threshold))

    def to_model(self, resampling: Resampling | None) -> Guidance:
        """The same guidance on the model grid (linear resampling; the region thresholded at half a voxel)."""
        if resampling is None:
            return replace(self, drawn=None)
        prior = None if self.prior is None else resampling.to_model(self.prior, default=0.0, dtype=np.float32)
        if prior is not None and not (prior >= 0.5).any():
            spacing = "x".join(f"{s:g}" for s in resampling.model_spacing)
            raise InputImageError(f"The prior ({int((self.prior >= 0.5).sum())} voxels) vanishes on the model's "
                                  f"{spacing} mm grid: it is thinner than one of its voxels. Give a larger mask, or "
                                  "run without --prior.")
        roi = None if self.roi is None else resampling.mask_to_model(self.roi)
        if roi is not None and not roi.any():  # a region thinner than a model voxel: keep its nearest voxels
            roi = resampling.to_model(self.roi.astype(np.float32), default=0.0) > 0
        return Guidance(None if prior is None else np.clip(prior, 0.0, 1.0), roi, self.report)


def roi_bounds(roi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi): the half-open bounding box of a non-empty canonical region, per axis."""
    lo, hi = [], []
    for axis in range(roi.ndim):
        present = np.flatnonzero(roi.any(axis=tuple(a for a in range(roi.ndim) if a != axis)))
        lo.append(int(present[0]))
        hi.append(int(present[-1]) + 1)
    return np.array(lo), np.array(hi)


def change_from_prior(prior_mask: np.ndarray, mask: np.ndarray, voxel_ml: float) -> tuple[float, float]:
    """(DSC to the person's mask, volume change in ml) of a round's mask: what the refinement changed."""
    change = (int(np.count_nonzero(mask)) - int(np.count_nonzero(prior_mask))) * voxel_ml
    return dice(prior_mask, mask, empty=1.0), change
