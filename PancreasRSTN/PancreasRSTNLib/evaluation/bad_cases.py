"""``--on-bad-case``: what evaluation does with a case it cannot score, in one place.

Why: a case that cannot be scored (no prediction, a prediction on another grid, a label without the organ, an image
without a label) used to drop out of the mean without a word, which flatters the result. Now ``fail`` (the
default) stops at the first one, naming it, and ``skip`` leaves it out with a warning line and lists it in the
report; either way nothing is dropped silently.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DatasetError

if TYPE_CHECKING:
    from ..training.datasets import Dataset

POLICIES = ("fail", "skip")
SKIP_FIX = "Fix the case, or pass --on-bad-case skip to leave it out (it is then listed in the report)."


class BadCases:
    """The cases an evaluation could not score, under one ``--on-bad-case`` policy."""

    def __init__(self, policy: str = "fail") -> None:
        if policy not in POLICIES:
            raise DatasetError(f"on_bad_case must be 'fail' or 'skip', not {policy!r}.")
        self.policy = policy
        self.cases: list[dict] = []  # {"case", "reason"} of every case left out

    def add(self, case: str, reason: str) -> None:
        """Stop (``fail``) or leave the case out with a warning (``skip``)."""
        if self.policy == "fail":
            raise DatasetError(f"Case {case} cannot be scored: {reason}. {SKIP_FIX}", fix=SKIP_FIX)
        self.cases.append({"case": case, "reason": reason})
        print(f"WARNING: case {case} left out (--on-bad-case skip): {reason}", file=sys.stderr)  # even with --quiet


def unlabelled_images(dataset: Dataset) -> list[tuple[str, Path]]:
    """Images of a dataset's training folder (``imagesTr/``) that no labelled case uses: an image whose label is
    missing, which the dataset reader leaves out."""
    from ..training.datasets import IMAGE_SUFFIXES

    folder = Path(dataset.root) / "imagesTr"
    if not folder.is_dir():
        return []
    used = {Path(c.image).resolve() for c in dataset.cases}
    found = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES) and \
                p.resolve() not in used:
            stem = next(p.name[: -len(s)] for s in IMAGE_SUFFIXES if p.name.lower().endswith(s))
            found.append((stem.removesuffix("_0000"), p))
    return found
