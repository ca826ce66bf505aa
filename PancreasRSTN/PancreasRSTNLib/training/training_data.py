"""Training cases and the samples of one view: slice triplets, the reference's slice selection and crop margins,
folds.

Why: the trainer must see exactly what the reference's RSTN saw (3-slice inputs with replicated edges, the
top 98 % of organ slices, random margins around the crop), and splits must be reproducible across machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import views
from ..errors import DatasetError
from ..models.intensity import DEFAULT_WINDOW
from ..phantom import phantom_series


@dataclass
class TrainCase:
    """One training case in the canonical layout: ``image`` either windowed to [0, 1] (float32) or HU (int16,
    e.g. a cache memmap; windowed per triplet on the fly), ``label`` the organ mask (uint8/bool). ``views``: the
    views it gives slices of (a single axial slice: Z only)."""

    name: str
    image: np.ndarray
    label: np.ndarray
    views: tuple[str, ...] = views.VIEWS


def phantom_cases(size: tuple[int, int, int], first_seed: int, count: int) -> tuple[list[TrainCase], dict]:
    """Training cases from synthetic phantoms (seeds first_seed .. first_seed+count-1), windowed with the
    reference's window, plus their provenance for model.json."""
    cases = [TrainCase(name, DEFAULT_WINDOW.apply(hu), label)
             for name, hu, label in phantom_series(size, first_seed, count)]
    provenance = {"source": "synthetic phantoms (pancreas-rstn phantom)", "shape": list(size),
                  "seeds": [first_seed, first_seed + count - 1]}
    return cases, provenance


def view_axis(view: str) -> int:
    """``views.view_axis``, with a DatasetError: a training view comes from the dataset's options."""
    try:
        return views.view_axis(view)
    except views.UnknownViewError as exc:
        raise DatasetError(str(exc)) from exc


def triplet(volume: np.ndarray, view: str, j: int) -> np.ndarray:
    """Slices [j-1, j, j+1] of ``volume`` along the view's axis (edges replicated), as (3, a, b)."""
    axis = view_axis(view)
    n = volume.shape[axis]
    idx = np.clip(np.array([j - 1, j, j + 1]), 0, n - 1)
    return np.moveaxis(np.take(volume, idx, axis=axis), axis, 0)


def slice_pixels(label: np.ndarray, view: str) -> np.ndarray:
    """Organ pixel count of every slice of the view."""
    axis = view_axis(view)
    other = tuple(a for a in range(3) if a != axis)
    return np.count_nonzero(label, axis=other)


def select_slices(label: np.ndarray, view: str, slice_threshold: float = 0.98) -> np.ndarray:
    """Indices of the training slices, as the reference picks them.

    ``slice_threshold <= 1``: keep the slices whose organ pixel count is at least that of the
    floor(n_nonzero * threshold)-th largest (drops empty slices and the ~2 % smallest cross-sections).
    ``> 1``: an absolute minimum pixel count."""
    pixels = slice_pixels(label, view)
    if slice_threshold <= 1:
        n_keep = int(np.floor(np.count_nonzero(pixels) * slice_threshold))
        if n_keep == 0:
            return np.flatnonzero(pixels > 0)
        min_pixels = np.sort(pixels)[-n_keep]
    else:
        min_pixels = slice_threshold
    return np.flatnonzero((pixels >= min_pixels) & (pixels > 0))


def crop_margins(rng: np.random.Generator, random_prob: float = 0.5, low: int = 0, high: int = 40,
                 fixed: int = 20) -> np.ndarray:
    """The reference's training margins (top, bottom, left, right): with probability ``random_prob`` each
    side gets an independent uniform integer in [low, high], otherwise ``fixed`` on every side."""
    if rng.random() < random_prob:
        return rng.integers(low, high + 1, size=4)
    return np.full(4, fixed, dtype=np.int64)


def bounding_box(mask2d: np.ndarray, margins: Sequence[int]) -> tuple[int, int, int, int] | None:
    """Tight box of ``mask2d`` (any channel) plus margins, clamped: (a0, a1, b0, b1), half-open. None if empty."""
    rows = np.flatnonzero(mask2d.any(axis=tuple(a for a in range(mask2d.ndim) if a != mask2d.ndim - 2)))
    cols = np.flatnonzero(mask2d.any(axis=tuple(a for a in range(mask2d.ndim) if a != mask2d.ndim - 1)))
    if rows.size == 0:
        return None
    h, w = mask2d.shape[-2:]
    return (max(int(rows[0]) - int(margins[0]), 0), min(int(rows[-1]) + int(margins[1]) + 1, h),
            max(int(cols[0]) - int(margins[2]), 0), min(int(cols[-1]) + int(margins[3]) + 1, w))


@dataclass(frozen=True)
class Sample:
    case: int
    j: int


def labels_for_view(cases: Sequence, view: str) -> list[np.ndarray | None]:
    """Each case's label, or None for a case that gives no slices of this view (a single axial slice is a
    case of view Z only: ``case.views``)."""
    return [c.label if view in getattr(c, "views", views.VIEWS) else None for c in cases]


def view_samples(labels: Sequence[np.ndarray | None], view: str, slice_threshold: float = 0.98,
                 negative_fraction: float = 0.0, seed: int = 0) -> list[Sample]:
    """All training samples (case index, slice index) of one view over the cases (None labels are skipped).

    ``negative_fraction`` (not in the reference, default 0): also add that many organ-free slices per
    selected slice, drawn deterministically, so the coarse net learns to stay silent away from the organ."""
    out: list[Sample] = []
    for c, lab in enumerate(labels):
        if lab is None:
            continue
        chosen = select_slices(lab, view, slice_threshold)
        out.extend(Sample(c, int(j)) for j in chosen)
        if negative_fraction > 0:
            empty = np.flatnonzero(slice_pixels(lab, view) == 0)
            n_neg = min(len(empty), int(round(negative_fraction * len(chosen))))
            picks = np.random.default_rng([int(seed), c, view_axis(view)]).choice(empty, n_neg, replace=False)
            out.extend(Sample(c, int(j)) for j in np.sort(picks))
    return out


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """The sample order of one epoch: a permutation fixed by (seed, epoch), so a resumed run replays it;
    under DDP each rank takes every ``world``-th entry (the tail is dropped so ranks stay in step)."""
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    per_rank = n // world if world > 1 else n
    return perm[rank::world][:per_rank]


def kfold_split(names: Sequence[str], n_folds: int = 4, fold: int = 0, seed: int | None = None,
                convention: str = "sorted") -> tuple[list[str], list[str]]:
    """Deterministic (train, test) split of case names.

    ``convention="nih82"``: the reference's NIH-82 folds on sorted names (1-20, 21-40, 41-61, 62-82; needs 82
    cases). ``"sorted"``: contiguous folds on sorted names, sizes as equal as possible (earlier folds
    smaller, like NIH-82). ``seed``: shuffle the sorted names with that seed first."""
    ordered = sorted(names)
    if not 0 <= fold < n_folds:
        raise DatasetError(f"Fold {fold} does not exist: use 0..{n_folds - 1}.")
    if convention == "nih82":
        if len(ordered) != 82 or n_folds != 4:
            raise DatasetError(f"The NIH-82 convention needs 82 cases and 4 folds (got {len(ordered)} cases, "
                               f"{n_folds} folds); use --fold-convention sorted for other datasets.")
        bounds = [0, 20, 40, 61, 82]
    elif convention == "sorted":
        if len(ordered) < n_folds:
            raise DatasetError(f"{len(ordered)} cases cannot make {n_folds} folds; use fewer folds.")
        if seed is not None:
            ordered = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
        base, extra = divmod(len(ordered), n_folds)
        sizes = [base + (1 if k >= n_folds - extra else 0) for k in range(n_folds)]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    else:
        raise DatasetError(f"Unknown fold convention '{convention}': use 'sorted' or 'nih82'.")
    test = ordered[bounds[fold]:bounds[fold + 1]]
    train = [n for n in ordered if n not in set(test)]
    return train, test
