"""The patient-level folds (no leak from any set), the JPEG slices' crop geometry and neighbour runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from PancreasRSTNLib.errors import DatasetError
from PancreasRSTNLib.training.jpeg_slices import WindowFit
from PancreasRSTNLib.training.nih_slices import (
    CROP_ZOOM,
    IDENTITY_WINDOW,
    LabelledSlice,
    read_all_slices,
    run_case,
    runs,
    scoring_slices,
    training_slices,
)
from PancreasRSTNLib.training.patient_folds import NIH_PATIENTS, check_no_leak, load_folds, make_folds

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def test_committed_split_is_the_seeded_one_and_a_partition():
    folds = load_folds()
    assert folds == make_folds(NIH_PATIENTS, 5, 0)
    flat = [p for f in folds for p in f]
    assert sorted(flat) == sorted(NIH_PATIENTS) and len(flat) == 61
    assert sorted(len(f) for f in folds) == [12, 12, 12, 12, 13]
    assert "PANCREAS_0025" not in flat
    # the two volumes are held out by different folds, so each fold trains on at least one volume
    assert [i for i, f in enumerate(folds) if "PANCREAS_0001" in f] != [i for i, f in enumerate(folds)
                                                                       if "PANCREAS_0002" in f]


def test_a_leak_is_refused():
    with pytest.raises(DatasetError, match="PANCREAS_0007"):
        check_no_leak(["PANCREAS_0001", "PANCREAS_0007"], ["PANCREAS_0007"])


def _slice(patient, index, kind="full", size=64, value=100):
    grey = np.full((size, size), value, np.uint8)
    mask = np.zeros((size, size), bool)
    mask[size // 4: size // 2, size // 4: size // 2] = True
    return LabelledSlice(patient, index, kind, "nih_pancreas_jpg_more", f"{patient}-{index}.jpg", grey, mask,
                         IDENTITY_WINDOW)


def test_crops_keep_the_anatomy_in_millimetres():
    """A crop's pixels are smaller by 432/512 or 352/512: at the model's spacing, the same square is smaller by
    that factor than in the full slice."""
    sizes = {}
    for kind in CROP_ZOOM:
        s = _slice("PANCREAS_0001", 10, kind, size=512)
        assert s.pixel_spacing_mm == pytest.approx(0.859375 * CROP_ZOOM[kind])
        case = run_case([s], (1.5, 1.5, 1.5), floor_hu=None)
        sizes[kind] = case.label.sum()
        assert case.image.shape[2] == 1 and case.views == ("Z",)
        assert case.image.shape[0] == pytest.approx(512 * s.pixel_spacing_mm / 1.5, abs=1)
    assert sizes["crop0"] / sizes["full"] == pytest.approx((432 / 512) ** 2, rel=0.06)
    assert sizes["crop1"] / sizes["full"] == pytest.approx((352 / 512) ** 2, rel=0.06)


def test_consecutive_slices_of_one_geometry_become_one_case():
    slices = [_slice("P1", 5), _slice("P1", 6), _slice("P1", 7), _slice("P1", 9), _slice("P1", 6, "crop0"),
              _slice("P2", 8)]
    found = [[(s.patient, s.kind, s.slice_index) for s in r] for r in runs(slices)]
    assert [("P1", "full", 5), ("P1", "full", 6), ("P1", "full", 7)] in found
    assert [("P1", "full", 9)] in found and [("P1", "crop0", 6)] in found and [("P2", "full", 8)] in found
    case = run_case(runs(slices)[1], (1.5, 1.5, 1.5), None)
    assert case.image.shape[2] == 3  # real neighbours for the middle slice's 3-slice input


def test_the_floor_is_mapped_only_when_asked():
    s = _slice("P1", 1, value=0)
    assert run_case([s], (1.5, 1.5, 1.5), None).image.max() == 0
    assert run_case([s], (1.5, 1.5, 1.5), -100.0).image.max() == -100


def test_each_slice_is_scored_once_preferring_the_full_view():
    slices = [_slice("P1", 5, "crop0"), _slice("P1", 5, "full"), _slice("P1", 6, "crop1"), _slice("P1", 6, "crop0")]
    chosen = {(s.slice_index, s.kind) for s in scoring_slices(slices)}
    assert chosen == {(5, "full"), (6, "crop0")}


@pytest.fixture(scope="module")
def all_slices():
    if not (DATA / "nih_pancreas_jpg_more" / "manifest.csv").is_file():
        pytest.skip(f"{DATA} is absent (only in the developers' checkout)")
    return read_all_slices(DATA, WindowFit(-1.4, 257.4, 0.0, 1.0, 0))


def test_the_shared_sets_hold_984_distinct_slices_of_61_patients(all_slices):
    assert len(scoring_slices(all_slices)) == 984
    assert sorted({s.patient for s in all_slices}) == sorted(NIH_PATIENTS)
    assert {s.kind for s in all_slices} == {"full", "crop0", "crop1"}


def test_no_held_out_slice_reaches_a_fold_from_either_set(all_slices):
    """What every fold trains on: no slice of a held-out patient, from either set; the rest of both sets."""
    for held_out in load_folds():
        chosen = training_slices(all_slices, held_out, "all")
        assert not {s.patient for s in chosen} & set(held_out)
        assert {s.source for s in chosen} == {"nih_pancreas_jpg", "nih_pancreas_jpg_more"}
        assert len(chosen) + sum(s.patient in held_out for s in all_slices) == len(all_slices)
        first_only = training_slices(all_slices, held_out, "first")
        assert {s.source for s in first_only} == {"nih_pancreas_jpg"}
    with pytest.raises(DatasetError):
        training_slices(all_slices, [], "some")
    with pytest.raises(DatasetError):
        read_all_slices(DATA / "nonexistent", WindowFit(0, 255, 0, 1, 0))
