"""The real data of ../shared/data as the real-CT model uses them: the NIH Pancreas-CT layout read as TCIA
distributes it, and the JPEG slices turned into HU with the display window fitted on cases 0001 and 0002.
Skipped, with the reason, where ../shared is absent (a user's checkout).
Data: Roth HR et al., Data From Pancreas-CT, The Cancer Imaging Archive, 2016."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from PancreasRSTNLib.errors import DatasetError
from PancreasRSTNLib.training.data_cache import build_cache
from PancreasRSTNLib.training.datasets import open_dataset
from PancreasRSTNLib.training.jpeg_slices import (
    check_window_inside,
    fit_window_from_volumes,
    read_jpeg_slices,
    slice_sample,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "nih_pancreas_ct").is_dir(),
                                reason="../shared/data/nih_pancreas_ct is absent (only in the developers' checkout)")


@pytest.fixture(scope="module")
def nih(tmp_path_factory):
    dataset = open_dataset(DATA / "nih_pancreas_ct", organ="pancreas")
    return dataset, build_cache(dataset, tmp_path_factory.mktemp("cache"))


@needs_data
def test_the_nih_layout_is_read_exactly_as_tcia_gives_it(nih):
    dataset, cache = nih
    assert dataset.layout == "nih" and dataset.case_names() == ["PANCREAS_0001", "PANCREAS_0002"]
    cases = {c.name: c for c in cache.cases()}
    one, two = cases["PANCREAS_0001"], cases["PANCREAS_0002"]
    assert one.image.shape == (512, 512, 240) and two.image.shape == (512, 512, 195)
    assert np.allclose(one.spacing, (0.859375, 0.859375, 1.0)) and np.allclose(two.spacing, (0.8984375, 0.8984375, 1.0))
    assert int(one.label.sum()) == 78329 and int(two.label.sum()) == 110797  # PROVENANCE.md
    inside = np.asarray(one.image)[np.asarray(one.label) > 0]
    assert 60 < inside.mean() < 140  # pancreas HU
    # canonical layout: the spine (bone) lies at lower row indices (posterior) than the pancreas
    rows = np.flatnonzero(np.asarray(one.label).any(axis=(1, 2)))
    bone_rows = np.flatnonzero((np.asarray(one.image)[:, 200:312, 120] > 300).any(axis=1))
    assert np.median(bone_rows) < rows.mean()


@needs_data
def test_the_jpeg_display_window_is_recovered_from_cases_0001_and_0002(nih):
    _, cache = nih
    slices = read_jpeg_slices(DATA / "nih_pancreas_jpg")
    assert len(slices) == 264 and len({s.case for s in slices}) == 61
    fit = fit_window_from_volumes(slices, {c.name: np.asarray(c.image) for c in cache.cases()})
    window = fit["window"]
    assert len(fit["slices"]) == 8  # the slices of the two cases whose DICOM is here
    assert -4 < window.low < 1 and 254 < window.high < 260  # about [0, 256] HU
    assert window.rms_grey < 8 and window.correlation > 0.98
    check_window_inside(window, 0.0, 250.0)
    with pytest.raises(DatasetError, match="below the JPEG slices' display window"):
        check_window_inside(window, -100.0, 240.0)
    # a slice as a training sample at 1.5 mm: HU inside the window, its expert mask kept
    image, label = slice_sample(slices[0], window, (1.5, 1.5, 1.5))
    assert image.shape[2] == 1 and label.shape == image.shape and 0 < label.sum() < slices[0].mask.sum()
    assert image.min() >= -2 and image.max() <= 258
    # excluding a held-out patient drops its slices
    held_out = read_jpeg_slices(DATA / "nih_pancreas_jpg", exclude_cases=["PANCREAS_0001"])
    assert len(held_out) == 261 and all(s.case != "PANCREAS_0001" for s in held_out)
