"""Both sets of expert-labelled NIH JPEG slices, with their true geometry, as training cases and test slices.

Why: ``nih_pancreas_jpg/`` (264 full slices, a display window close to 0..255 HU) and ``nih_pancreas_jpg_more/``
(795 files, grey = clip(HU, 0, 255), many of them zoomed crops) hold 984 distinct slices of 61 patients. A crop
``crop0`` shows pixels [40:472] of the slice resized to 512 (pixels 432/512 of the slice's), ``crop1`` [80:432]
(352/512): its pixel size is the slice's times that ratio, so the same anatomy keeps its size in mm. Slices that
are consecutive in one patient and one geometry are stacked into one case, so their 3-slice input has real
neighbours (``runs``). Set 2's ``manifest.csv`` gives the patient, slice, geometry and source of every file.

The 0-255 floor: below 0 HU both sets read 0 (fat and air alike). ``floor_hu`` maps grey <= FLOOR_GREY (the
clipped end plus JPEG noise) to a chosen HU (e.g. -100, fat); None keeps them at the window's low end, which a
model with an HU window starting at 0 sees exactly as it sees a real CT.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.resampling import Resampling
from ..errors import DatasetError
from .jpeg_slices import ASSUMED_PIXEL_SPACING_MM, FLOOR_GREY, WindowFit, read_jpeg_slices
from .training_data import TrainCase

FIRST_SET = "nih_pancreas_jpg"
SECOND_SET = "nih_pancreas_jpg_more"
#: a crop's pixel size relative to its slice's: the crop's side in slice pixels over 512
CROP_ZOOM = {"full": 1.0, "crop0": 432 / 512, "crop1": 352 / 512}
#: pixel sizes known from the DICOM series in ../shared (others: ASSUMED_PIXEL_SPACING_MM)
KNOWN_PIXEL_SPACING_MM = {"PANCREAS_0001": 0.859375, "PANCREAS_0002": 0.898438}
#: set 2's encoding: grey = clip(HU, 0, 255)
IDENTITY_WINDOW = WindowFit(low=0.0, high=255.0, rms_grey=0.0, correlation=1.0, pixels=0)


@dataclass(frozen=True)
class LabelledSlice:
    """One labelled JPEG file: ``grey`` and ``mask`` (rows, cols) in the NIH array orientation."""

    patient: str
    slice_index: int  # 0-based, in the patient's series
    kind: str  # full, crop0 or crop1
    source: str  # FIRST_SET or SECOND_SET
    file: str
    grey: np.ndarray
    mask: np.ndarray
    window: WindowFit  # grey -> HU

    @property
    def pixel_spacing_mm(self) -> float:
        """The true pixel size: the patient's (known or assumed) times the crop's zoom."""
        return KNOWN_PIXEL_SPACING_MM.get(self.patient, ASSUMED_PIXEL_SPACING_MM) * CROP_ZOOM[self.kind]

    @property
    def key(self) -> tuple[str, int]:
        return self.patient, self.slice_index

    def hu(self, floor_hu: float | None = None) -> np.ndarray:
        return self.window.to_hu(self.grey, floor_hu)


def read_all_slices(data: str | Path, first_set_window: WindowFit, exclude_patients: Iterable[str] = ()
                    ) -> list[LabelledSlice]:
    """Every file of both sets (except ``exclude_patients``'); a file of set 1 whose full slice set 2 also holds
    is dropped (set 2's encoding is exact). Sorted by patient, geometry, slice."""
    data = Path(data)
    excluded = set(exclude_patients)
    second = _read_second_set(data / SECOND_SET, excluded)
    full_in_second = {s.key for s in second if s.kind == "full"}
    first = [LabelledSlice(s.case, s.slice_index, "full", FIRST_SET, s.name + ".jpg", s.grey, s.mask,
                           first_set_window)
             for s in read_jpeg_slices(data / FIRST_SET, exclude_cases=excluded)]
    out = [s for s in first if s.key not in full_in_second] + second
    return sorted(out, key=lambda s: (s.patient, s.kind, s.slice_index, s.source))


def _read_second_set(folder: Path, excluded: set[str]) -> list[LabelledSlice]:
    from .jpeg_slices import _read_grey

    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise DatasetError(f"{manifest} not found: the second JPEG set needs its manifest.")
    out = []
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            if row["patient"] in excluded:
                continue
            kind = row["kind"]
            if kind not in CROP_ZOOM:
                raise DatasetError(f"{manifest}: unknown kind '{kind}' for {row['file']}.")
            grey = _read_grey(folder / "images" / row["file"])
            mask = _read_grey(folder / "masks" / row["file"]) > 127
            out.append(LabelledSlice(row["patient"], int(row["slice_index"]), kind, SECOND_SET, row["file"], grey,
                                     mask, IDENTITY_WINDOW))
    return out


def training_slices(slices: Iterable[LabelledSlice], held_out: Iterable[str], sets: str = "all"
                    ) -> list[LabelledSlice]:
    """The slices a fold may train on: none of a held-out patient, from either set; ``sets`` "all" or "first"
    (only ``nih_pancreas_jpg/``, the earlier recipe's data)."""
    if sets not in ("all", "first"):
        raise DatasetError(f"Unknown JPEG sets '{sets}': use all or first.")
    excluded = set(held_out)
    return [s for s in slices if s.patient not in excluded and (sets == "all" or s.source == FIRST_SET)]


def patients(slices: Iterable[LabelledSlice]) -> list[str]:
    return sorted({s.patient for s in slices})


def runs(slices: Sequence[LabelledSlice]) -> list[list[LabelledSlice]]:
    """Groups of consecutive slices of one patient in one geometry (same kind): each becomes one training case
    whose slices are each other's neighbours. Files of both sets of the same slice: the first kept."""
    groups: dict[tuple[str, str], dict[int, LabelledSlice]] = {}
    for s in slices:
        groups.setdefault((s.patient, s.kind), {}).setdefault(s.slice_index, s)
    out = []
    for _, by_index in sorted(groups.items()):
        run: list[LabelledSlice] = []
        for index in sorted(by_index):
            if run and index != run[-1].slice_index + 1:
                out.append(run)
                run = []
            run.append(by_index[index])
        out.append(run)
    return out


def run_case(run: Sequence[LabelledSlice], model_spacing: Sequence[float], floor_hu: float | None) -> TrainCase:
    """A run of slices as one training case at the model's in-plane spacing (view Z only): HU int16 and mask
    uint8, (rows, cols, len(run)); the image resampled linearly, the mask as a fraction thresholded at 0.5."""
    first = run[0]
    hu = np.stack([s.hu(floor_hu) for s in run], axis=2)
    mask = np.stack([s.mask for s in run], axis=2)
    spacing = first.pixel_spacing_mm
    resampling = Resampling.between(hu.shape, (spacing, spacing, float(model_spacing[2])), model_spacing)
    floor = first.window.low if floor_hu is None else floor_hu
    image = resampling.to_model(np.rint(hu).astype(np.int16), default=floor, dtype=np.int16)
    label = resampling.mask_to_model(mask).astype(np.uint8)
    name = f"jpeg_{first.patient}_{first.kind}_{first.slice_index:03d}" + (f"-{run[-1].slice_index:03d}"
                                                                            if len(run) > 1 else "")
    return TrainCase(name, image, label, views=("Z",))


def scoring_slices(slices: Sequence[LabelledSlice]) -> list[LabelledSlice]:
    """One file per distinct (patient, slice) for scoring: the full view when there is one (set 2's first),
    else the widest crop; so no slice counts twice in a patient's DSC."""
    rank = {"full": 0, "crop0": 1, "crop1": 2}
    best: dict[tuple[str, int], LabelledSlice] = {}
    for s in slices:
        kept = best.get(s.key)
        if kept is None or (rank[s.kind], s.source != SECOND_SET) < (rank[kept.kind], kept.source != SECOND_SET):
            best[s.key] = s
    return [best[k] for k in sorted(best)]


__all__ = ["CROP_ZOOM", "FLOOR_GREY", "LabelledSlice", "patients", "read_all_slices", "run_case", "runs",
           "scoring_slices", "training_slices"]
