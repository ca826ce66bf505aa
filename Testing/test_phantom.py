"""The synthetic phantom: anatomy in the right place after the canonical mapping, HU levels, speed, files."""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk

from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.io.geometry import to_canonical
from PancreasRSTNLib.phantom import PHANTOM_LABELS, make_phantom, make_phantom_canonical


@pytest.fixture(scope="module")
def case():
    image, label = make_phantom((96, 96, 48), seed=5, multi_label=True)
    ct, geo = to_canonical(image)
    lab, _ = to_canonical(label)
    return image, label, ct, lab


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.array(np.nonzero(mask)).mean(axis=1)


def test_anatomy_is_where_the_canonical_layout_expects_it(case):
    _, _, ct, lab = case
    spine = _centroid(lab == PHANTOM_LABELS["vertebra"])
    aorta = _centroid(lab == PHANTOM_LABELS["aorta"])
    liver = _centroid(lab == PHANTOM_LABELS["liver"])
    spleen = _centroid(lab == PHANTOM_LABELS["spleen"])
    pancreas = _centroid(lab == PHANTOM_LABELS["pancreas"])
    kidney_r = _centroid(lab == PHANTOM_LABELS["right_kidney"])
    kidney_l = _centroid(lab == PHANTOM_LABELS["left_kidney"])
    assert spine[0] < aorta[0] < pancreas[0]  # rows run posterior -> anterior
    assert liver[1] < ct.shape[1] / 2 < spleen[1]  # liver on the patient's right (low column)
    assert kidney_r[1] < spine[1] < kidney_l[1]
    assert liver[2] < kidney_r[2]  # liver is superior (low slice index) to the kidneys
    # the pancreatic tail points to the patient's left, toward the spleen
    cols = np.nonzero(lab == 1)[1]
    assert cols.max() > spine[1] + 10


def test_hu_levels_are_realistic(case):
    _, _, ct, lab = case
    assert np.median(ct[0:3, 0:3, :]) < -900  # air outside the body
    assert 20 < np.median(ct[lab == 1]) < 70  # pancreas
    assert 40 < np.median(ct[lab == PHANTOM_LABELS["liver"]]) < 80
    assert np.median(ct[lab == PHANTOM_LABELS["vertebra"]]) > 250
    assert np.median(ct[lab == PHANTOM_LABELS["aorta"]]) > 130
    assert ct.dtype == np.int16


def test_seeds_differ_and_repeat():
    a_ct, a_lab = make_phantom_canonical((64, 64, 32), seed=1)
    b_ct, b_lab = make_phantom_canonical((64, 64, 32), seed=1)
    c_ct, c_lab = make_phantom_canonical((64, 64, 32), seed=2)
    assert np.array_equal(a_ct, b_ct) and np.array_equal(a_lab, b_lab)
    inter = np.count_nonzero(a_lab & c_lab)
    assert 2 * inter / (a_lab.sum() + c_lab.sum()) < 0.9  # a new seed moves/reshapes the organ
    assert set(np.unique(a_lab)) == {0, 1}


def test_canonical_helper_matches_image_round_trip():
    image, label = make_phantom((48, 40, 24), seed=3)
    ct, _ = to_canonical(image)
    ct2, lab2 = make_phantom_canonical((48, 40, 24), seed=3)
    assert ct.shape == (40, 48, 24)
    assert np.array_equal(ct, ct2)
    assert np.array_equal(to_canonical(label)[0], lab2)


def test_fast():
    t = time.perf_counter()
    make_phantom((128, 128, 64), seed=0)
    assert time.perf_counter() - t < 1.5


def test_cli_writes_files_and_refuses_to_overwrite(tmp_path, capsys):
    ct, lab = tmp_path / "ct.nrrd", tmp_path / "lab.nii.gz"
    assert main(["phantom", "-o", str(ct), "--labels", str(lab), "--seed", "4", "--shape", "40x48x20",
                 "--spacing", "3x3x4"]) == 0
    img = sitk.ReadImage(str(ct))
    assert img.GetSize() == (40, 48, 20) and img.GetSpacing() == (3.0, 3.0, 4.0)
    assert sitk.GetArrayViewFromImage(sitk.ReadImage(str(lab))).max() == 1
    assert main(["phantom", "-o", str(ct), "--seed", "5"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["phantom", "-o", str(ct), "--seed", "5", "--overwrite"]) == 0
    assert main(["phantom", "-o", str(tmp_path / "x.nrrd"), "--shape", "12x12"]) == 1
