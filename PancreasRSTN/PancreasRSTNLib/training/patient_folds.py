"""Patient-level folds over the 61 NIH Pancreas-CT patients of ../shared, read from a committed split file.

Why a file: a recipe is chosen on these folds, so everyone must use the same ones, on any machine and with any
numpy; and a fold's held-out patients must never reach its training (``check_no_leak``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import DatasetError

SPLIT_FILE = Path(__file__).resolve().parents[3] / "benchmarks" / "splits" / "nih61_5fold.json"
NIH_PATIENTS = tuple(f"PANCREAS_{i:04d}" for i in range(1, 63) if i != 25)


def make_folds(patients: Sequence[str], n_folds: int, seed: int) -> list[list[str]]:
    """Seeded shuffle of the sorted patients, then contiguous folds of sizes as equal as possible."""
    ordered = sorted(patients)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in perm]
    bounds = np.linspace(0, len(shuffled), n_folds + 1).round().astype(int)
    return [sorted(shuffled[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def load_folds(path: str | Path = SPLIT_FILE) -> list[list[str]]:
    """The held-out patients of each fold; every patient in exactly one fold."""
    content = json.loads(Path(path).read_text())
    folds = [list(f) for f in content["folds"]]
    flat = [p for f in folds for p in f]
    if len(flat) != len(set(flat)):
        raise DatasetError(f"{path}: a patient is in more than one fold.")
    return folds


def check_no_leak(training_patients: Iterable[str], held_out: Iterable[str]) -> None:
    leaked = sorted(set(training_patients) & set(held_out))
    if leaked:
        raise DatasetError(f"Held-out patients reach training: {', '.join(leaked)}.")
