"""Where Cai et al.'s system trains: square crops around the organ, and sequences of consecutive axial slices.

Why crops: PNet-MSA costs ~96 GFLOP per 512x512 slice; a crop of 128 px (19 cm at 1.5 mm) holds the pancreas with
its neighbours and makes a step ~10x cheaper. Organ-free samples (``--negative-fraction``) crop anywhere.
Every draw comes from the step's own generator, so a resumed run replays it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DatasetError
from .training_data import TrainCase


def crop_window(label: np.ndarray, size: int, rng: np.random.Generator) -> tuple[slice, slice]:
    """A ``size`` square (clipped to the slice) over the organ of ``label`` (H, W) or (n, H, W) -- its box's centre
    moved by up to a quarter of ``size`` -- or anywhere when there is no organ. ``size`` 0: the whole slice."""
    h, w = label.shape[-2:]
    if size <= 0:
        return slice(0, h), slice(0, w)
    organ = np.asarray(label).reshape(-1, h, w).any(axis=0)
    rows, cols = np.nonzero(organ.any(axis=1))[0], np.nonzero(organ.any(axis=0))[0]
    out = []
    for extent, found in ((h, rows), (w, cols)):
        side = min(size, extent)
        if found.size:
            centre = (found[0] + found[-1] + 1) / 2 + rng.uniform(-size / 4, size / 4)
            start = int(round(centre - side / 2))
        else:
            start = int(rng.integers(0, extent - side + 1))
        start = min(max(start, 0), extent - side)
        out.append(slice(start, start + side))
    return out[0], out[1]


@dataclass(frozen=True)
class SequenceStart:
    case: int
    start: int  # first axial slice of the sequence


class SequenceSampler:
    """Sequences of ``length`` consecutive axial slices that hold some organ, from the volumes among ``cases``
    (single JPEG slices have no neighbours: they train the CNN only)."""

    def __init__(self, cases: Sequence[TrainCase], length: int) -> None:
        self.length = int(length)
        self.starts: list[SequenceStart] = []
        for k, case in enumerate(cases):
            n = case.label.shape[2]
            if "Z" not in case.views or n < self.length:
                continue
            organ = np.nonzero(np.asarray(case.label).any(axis=(0, 1)))[0]
            if organ.size == 0:
                continue
            first, last = max(0, organ[0] - self.length + 1), min(organ[-1], n - self.length)
            self.starts += [SequenceStart(k, j) for j in range(first, last + 1)]
        if not self.starts:
            raise DatasetError(f"No sequence of {self.length} axial slices with the organ: the refiner trains on "
                               "volumes (not single slices) with at least that many slices; lower "
                               "--sequence-length or add volumes.")

    def at(self, rng: np.random.Generator) -> SequenceStart:
        return self.starts[int(rng.integers(0, len(self.starts)))]


def sequence_slices(n: int, start: int, length: int, context: int) -> np.ndarray:
    """Axial indices of a sequence with ``context`` slices on each side (edges replicated)."""
    return np.clip(np.arange(start - context, start + length + context), 0, n - 1)
