"""Datasets in the three layouts, organ by value or name, bad cases (skip or fail), and the .npy cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import write_dicom_series
from PancreasRSTNLib.errors import DatasetError
from PancreasRSTNLib.io.geometry import to_canonical
from PancreasRSTNLib.phantom import PHANTOM_LABELS, make_phantom
from PancreasRSTNLib.training.data_cache import build_cache
from PancreasRSTNLib.training.datasets import open_dataset

SIZE = (32, 28, 12)


def _write_pair(img_path, lab_path, seed, multi=False):
    image, label = make_phantom(SIZE, seed=seed, multi_label=multi)
    img_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(img_path))
    sitk.WriteImage(label, str(lab_path))
    return image, label


def test_pairs_layout_and_cache_round_trip(tmp_path):
    root = tmp_path / "pairs"
    image, label = _write_pair(root / "images" / "a.nii.gz", root / "labels" / "a.nii.gz", 1)
    _write_pair(root / "images" / "b.nrrd", root / "labels" / "b.nrrd", 2)
    ds = open_dataset(root)
    assert ds.layout == "pairs" and ds.case_names() == ["a", "b"]
    cache = build_cache(ds, tmp_path / "cache")
    case = cache.case("a")
    assert isinstance(case.image, np.memmap) and case.image.dtype == np.int16
    assert np.array_equal(case.image, to_canonical(image)[0])
    assert np.array_equal(case.label, to_canonical(label)[0])
    mtime = (tmp_path / "cache" / "a" / "image.npy").stat().st_mtime_ns
    build_cache(ds, tmp_path / "cache")  # up to date: not rewritten
    assert (tmp_path / "cache" / "a" / "image.npy").stat().st_mtime_ns == mtime


def test_msd_layout_organ_by_name_or_value(tmp_path):
    root = tmp_path / "Task07"
    _, label = _write_pair(root / "imagesTr" / "c1.nii.gz", root / "labelsTr" / "c1.nii.gz", 3, multi=True)
    meta = {"labels": {"0": "background", "1": "pancreas", "3": "spleen"},
            "training": [{"image": "./imagesTr/c1.nii.gz", "label": "./labelsTr/c1.nii.gz"}]}
    (root / "dataset.json").write_text(json.dumps(meta))
    lab = sitk.GetArrayFromImage(label)
    ds = open_dataset(root, organ="spleen")
    assert ds.layout == "msd" and ds.label_values == (3,)
    _, mask = ds.load(ds.cases[0])
    assert np.array_equal(mask, lab == PHANTOM_LABELS["spleen"])
    ds = open_dataset(root, organ="pancreas", label_value=2)  # the liver, by value
    assert np.array_equal(ds.load(ds.cases[0])[1], lab == 2)
    with pytest.raises(DatasetError, match="no label 'liver'"):
        open_dataset(root, organ="liver")


def test_nih_layout_dicom_plus_label(tmp_path):
    root = tmp_path / "NIH"
    image, label = make_phantom(SIZE, seed=4)
    write_dicom_series(image, root / "Pancreas-CT" / "PANCREAS_0001" / "study" / "series")
    (root / "labels").mkdir(parents=True)
    sitk.WriteImage(label, str(root / "labels" / "label0001.nii.gz"))
    ds = open_dataset(root)
    assert ds.layout == "nih" and ds.case_names() == ["PANCREAS_0001"]
    cache = build_cache(ds, tmp_path / "cache")
    case = cache.case("PANCREAS_0001")
    assert np.array_equal(case.label, to_canonical(label)[0])
    assert np.abs(case.image.astype(int) - to_canonical(image)[0]).max() <= 1


def test_bad_cases_name_the_case_and_can_be_skipped(tmp_path):
    root = tmp_path / "bad"
    _write_pair(root / "images" / "good.nii.gz", root / "labels" / "good.nii.gz", 5)
    image, label = _write_pair(root / "images" / "empty.nii.gz", root / "labels" / "empty.nii.gz", 6)
    sitk.WriteImage(label * 0, str(root / "labels" / "empty.nii.gz"))
    _write_pair(root / "images" / "grid.nii.gz", root / "labels" / "grid.nii.gz", 7)
    shifted = sitk.ReadImage(str(root / "labels" / "grid.nii.gz"))
    shifted.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(shifted, str(root / "labels" / "grid.nii.gz"))
    (root / "images" / "junk.nii.gz").write_bytes(b"not an image")
    sitk.WriteImage(label, str(root / "labels" / "junk.nii.gz"))
    ds = open_dataset(root)
    with pytest.raises(DatasetError, match="Case empty: .*no voxel of value"):
        ds.load(ds.case("empty"))
    with pytest.raises(DatasetError, match="Case grid: the label grid differs.*origin"):
        ds.load(ds.case("grid"))
    with pytest.raises(DatasetError, match="Case junk: the image .* cannot be read"):
        ds.load(ds.case("junk"))
    with pytest.raises(DatasetError, match="Case empty"):
        build_cache(ds, tmp_path / "c1", on_bad_case="fail")
    cache = build_cache(ds, tmp_path / "c2", on_bad_case="skip")
    assert cache.names == ["good"]
    assert sorted(s["case"] for s in cache.skipped) == ["empty", "grid", "junk"]
    wrong_value = open_dataset(root, label_value=9)
    with pytest.raises(DatasetError, match="value \\[9\\]"):
        wrong_value.load(wrong_value.case("good"))
    with pytest.raises(DatasetError, match="not a dataset folder"):
        open_dataset(tmp_path / "bad" / "images")


def test_two_trainings_caching_the_same_dataset_at_once_both_succeed(tmp_path, monkeypatch):
    """Folds run side by side build one cache together: each must write whole files under names of its own (a
    shared temporary name let one process rename away the other's file: FileNotFoundError mid-run)."""
    import threading

    from PancreasRSTNLib.training import data_cache

    root = tmp_path / "pairs"
    image, label = _write_pair(root / "images" / "a.nii.gz", root / "labels" / "a.nii.gz", 1)
    ds = open_dataset(root)
    both_saved = threading.Barrier(2, timeout=20)
    real_save = np.save

    def save_then_wait(file, arr, *args, **kwargs):  # both writers hold a written temporary file at once
        real_save(file, arr, *args, **kwargs)
        if "image" in str(file):
            both_saved.wait()

    monkeypatch.setattr(data_cache.np, "save", save_then_wait)
    errors: list[BaseException] = []

    def build() -> None:
        try:
            build_cache(ds, tmp_path / "cache")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    case = build_cache(ds, tmp_path / "cache").case("a")
    assert np.array_equal(case.image, to_canonical(image)[0])
    assert np.array_equal(case.label, to_canonical(label)[0])
    assert sorted(p.name for p in (tmp_path / "cache" / "a").iterdir()) == ["image.npy", "label.npy", "meta.json"]
