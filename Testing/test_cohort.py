"""Cohorts: nnU-Net v2 datasets, cohort inputs (folder, glob, CSV, dataset, DICOM folders), `segment DIR -o OUT`
with its table, failures, resume and --overwrite, torchrun over 2 processes, and `evaluate --predictions`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import demo_model_dir, write_dicom_series
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.app.cohort import TABLE_COLUMNS, collect_inputs, is_cohort_input
from PancreasRSTNLib.errors import DatasetError, InputImageError
from PancreasRSTNLib.evaluation.metrics import average_surface_distance, segmentation_metrics
from PancreasRSTNLib.phantom import PHANTOM_LABELS, make_phantom
from PancreasRSTNLib.training.data_cache import build_cache
from PancreasRSTNLib.training.datasets import open_dataset

SMALL = (32, 28, 12)
CT_SIZE = (64, 64, 32)  # big enough for the demo model to find the phantom's pancreas


def _nnunet_dataset(root, cases=("p1", "p2"), test=("t1",), channels=None, size=SMALL):
    """An nnU-Net v2 raw dataset of phantoms: pancreas = 1 by name, spleen = 3."""
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(cases):
        image, label = make_phantom(size, seed=10 + i, multi_label=True)
        sitk.WriteImage(image, str(root / "imagesTr" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(label, str(root / "labelsTr" / f"{case}.nii.gz"))
    for i, case in enumerate(test):
        sitk.WriteImage(make_phantom(size, seed=50 + i)[0], str(root / "imagesTs" / f"{case}_0000.nii.gz"))
    meta = {"channel_names": channels or {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": len(cases),
            "labels": {"background": 0, "liver": 2, "pancreas": 1, "spleen": 3}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


# ---------------------------------------------------------------------------------------------- datasets
def test_nnunet_layout_labels_by_name_and_test_images(tmp_path):
    root = _nnunet_dataset(tmp_path / "Dataset007_Pancreas")
    ds = open_dataset(root)
    assert ds.layout == "nnunet" and ds.case_names() == ["p1", "p2"] and ds.label_values == (1,)
    assert [name for name, _ in ds.test_images] == ["t1"]
    spleen = open_dataset(root, organ="spleen")
    _, mask = spleen.load(spleen.cases[0])
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / "p1.nii.gz")))
    assert spleen.label_values == (3,) and np.array_equal(mask, label == PHANTOM_LABELS["spleen"])
    cache = build_cache(ds, tmp_path / "cache")
    assert cache.case("p2").label.any()
    with pytest.raises(DatasetError, match="no label 'kidney'"):
        open_dataset(root, organ="kidney")


def test_nnunet_multichannel_and_unknown_layouts_are_refused(tmp_path):
    root = _nnunet_dataset(tmp_path / "Dataset008_Multi", channels={"0": "CT", "1": "PET"})
    with pytest.raises(DatasetError, match="2 channels .*one CT channel"):
        open_dataset(root)
    junk = tmp_path / "junk"
    (junk / "scans").mkdir(parents=True)
    with pytest.raises(DatasetError, match="nnU-Net v2 .*Decathlon.*NIH.*pairs"):
        open_dataset(junk)


def test_train_cli_reads_an_nnunet_dataset(tmp_path):
    """The issue's new user: `train --data Dataset007_Pancreas` used to end with 'No cases found'."""
    root = _nnunet_dataset(tmp_path / "Dataset007_Pancreas")
    rc = main(["train", "--data", str(root), "--organ", "pancreas", "-o", str(tmp_path / "run"), "--views", "Z",
               "--backbone", "light", "--widths", "4,8", "--steps", "S:1,J:1", "--device", "cpu", "--no-progress"])
    assert rc == 0
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["training"]["data"]["layout"] == "nnunet"


# ---------------------------------------------------------------------------------------------- inputs
def test_cohort_inputs_folder_glob_csv_and_dataset(tmp_path):
    cts = tmp_path / "cts"
    cts.mkdir()
    image = make_phantom(SMALL, seed=1)[0]
    sitk.WriteImage(image, str(cts / "a_0000.nii.gz"))
    sitk.WriteImage(image, str(cts / "b.nrrd"))
    (cts / "notes.txt").write_text("not a CT")
    write_dicom_series(image, cts / "patient1" / "ct", series_uid="1.2.3.4")
    mixed = cts / "patient2"
    write_dicom_series(image, mixed, series_uid="1.2.3.5", prefix="a")
    write_dicom_series(image[:, :, :6], mixed, series_uid="1.2.3.6", prefix="b")

    cases = collect_inputs(cts)
    assert [c.name for c in cases] == ["a", "b", "patient1__ct", "patient2"]
    assert not cases[0].warnings and "2 DICOM series" in cases[3].warnings[0] and "1.2.3.5" in cases[3].warnings[0]
    assert is_cohort_input(str(cts)) and not is_cohort_input(str(mixed)) and not is_cohort_input(str(cts / "b.nrrd"))

    assert [c.name for c in collect_inputs(str(cts / "*.nrrd"))] == ["b"]
    assert is_cohort_input(str(cts / "*.nii.gz"))

    table = tmp_path / "list.csv"
    table.write_text("name,input\nfirst,cts/b.nrrd\n,cts/a_0000.nii.gz\n")
    assert [(c.name, c.input.name) for c in collect_inputs(table)] == [("first", "b.nrrd"), ("a", "a_0000.nii.gz")]

    dataset = _nnunet_dataset(tmp_path / "Dataset009", cases=("p1",), test=("t1", "t2"))
    assert [c.name for c in collect_inputs(dataset)] == ["t1", "t2"]  # imagesTs/ first


def test_cohort_inputs_refuse_clashes_and_missing_files(tmp_path):
    (tmp_path / "x").mkdir()
    image = make_phantom(SMALL, seed=1)[0]
    sitk.WriteImage(image, str(tmp_path / "x" / "a.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "x" / "a.nrrd"))
    with pytest.raises(InputImageError, match="same output 'a'"):
        collect_inputs(tmp_path / "x")
    table = tmp_path / "list.csv"
    table.write_text("input\nx/a.nii.gz\nx/missing.nii.gz\n")
    with pytest.raises(InputImageError, match="missing.nii.gz"):
        collect_inputs(table)
    (tmp_path / "bad.csv").write_text("path\nx/a.nii.gz\n")
    with pytest.raises(InputImageError, match="column 'input'"):
        collect_inputs(tmp_path / "bad.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputImageError, match="No CT found"):
        collect_inputs(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------- the run
@pytest.fixture(scope="module")
def cohort_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    cts = root / "cts"
    cts.mkdir()
    for i in range(2):
        sitk.WriteImage(make_phantom(CT_SIZE, seed=200 + i)[0], str(cts / f"case{i}_0000.nii.gz"))
    (cts / "broken.mha").write_text("not an image")
    return cts


def _table(out):
    with open(out / "cohort.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out / "cohort.json").read_text())


def test_cohort_segments_records_failures_resumes_and_overwrites(tmp_path, cohort_folder, capsys):
    out = tmp_path / "out"
    args = ["segment", str(cohort_folder), "-o", str(out), "--model", str(demo_model_dir()), "--max-iter", "2",
            "--device", "cpu"]
    assert main(args) == 1  # exit code = number of failed cases
    rows, table = _table(out)
    assert list(rows[0]) == list(TABLE_COLUMNS)
    by_case = {r["case"]: r for r in table["cases"]}
    assert set(by_case) == {"broken", "case0", "case1"}
    assert by_case["broken"]["status"] == "failed" and "Cannot read" in by_case["broken"]["error"]
    for name in ("case0", "case1"):
        row = by_case[name]
        assert row["status"] == "done" and row["volume_ml"] > 0 and row["fine_rounds"] == len(row["dsc_history"]) >= 1
        assert row["device"].startswith("cpu") and row["model"] == "PancreasRSTN-demo-phantom-light"
        seg = sitk.ReadImage(row["output"])
        assert seg.GetSize() == sitk.ReadImage(str(cohort_folder / f"{name}_0000.nii.gz")).GetSize()
    assert table["info"]["failed"] == 1 and table["info"]["cases"] == 3
    assert "FAILED broken" in capsys.readouterr().err

    # re-run: finished cases are skipped (files untouched), the failed one is retried
    stamp = (out / "case0.nii.gz").stat().st_mtime_ns
    assert main(args + ["--quiet"]) == 1
    _, table = _table(out)
    assert table["info"]["skipped_done_earlier"] == 2 and table["info"]["run_now"] == 1
    assert (out / "case0.nii.gz").stat().st_mtime_ns == stamp
    assert {r["case"]: r["volume_ml"] for r in table["cases"]}["case0"] == by_case["case0"]["volume_ml"]

    # --overwrite redoes them
    (cohort_folder / "broken.mha").rename(tmp_path / "broken.mha")  # leave only good cases
    try:
        assert main(args + ["--quiet", "--overwrite", "--json"]) == 0
    finally:
        (tmp_path / "broken.mha").rename(cohort_folder / "broken.mha")
    summary = json.loads(capsys.readouterr().out)
    assert summary["info"]["run_now"] == 2 and summary["info"]["failed"] == 0
    assert (out / "case0.nii.gz").stat().st_mtime_ns != stamp
    assert not list(out.glob(".*partial*"))


def test_cohort_refuses_a_file_output_and_per_case_options(tmp_path, cohort_folder, capsys):
    model = str(demo_model_dir())
    assert main(["segment", str(cohort_folder), "-o", str(tmp_path / "x.nii.gz"), "--model", model]) == 1
    assert "-o must be a folder" in capsys.readouterr().err
    assert main(["segment", str(cohort_folder), "-o", str(tmp_path / "o"), "--model", model,
                 "--probability", str(tmp_path / "p.nii.gz")]) == 1
    assert "not available for a cohort" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["segment", str(tmp_path / "*.nii.gz"), "-o", str(tmp_path / "o"), "--model", model]) == 1
    assert "No CT found" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_cohort_under_torchrun_two_processes(tmp_path, cohort_folder):
    """Rank r takes every world-th case; rank 0 merges every row into one table."""
    cts = tmp_path / "cts"
    cts.mkdir()
    for path in sorted(cohort_folder.glob("case*")):
        (cts / path.name).symlink_to(path)
    sitk.WriteImage(make_phantom(CT_SIZE, seed=300)[0], str(cts / "case2_0000.nii.gz"))
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "PancreasRSTNLib", "segment", str(cts), "-o", str(out), "--model", str(demo_model_dir()),
           "--max-iter", "2", "--device", "cpu", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    _, table = _table(out)
    ranks = {r["case"]: r["rank"] for r in table["cases"]}
    assert ranks == {"case0": 0, "case1": 1, "case2": 0}
    assert all(r["status"] == "done" for r in table["cases"]) and table["info"]["processes"] == 2
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case0.nii.gz", "case1.nii.gz", "case2.nii.gz"]


# ---------------------------------------------------------------------------------------------- evaluation
def _sphere(shape, center, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius**2


def test_average_symmetric_surface_distance_of_concentric_spheres():
    inner, outer = _sphere((48, 48, 48), (24, 24, 24), 10), _sphere((48, 48, 48), (24, 24, 24), 13)
    assert average_surface_distance(inner, inner) == 0.0
    assert abs(average_surface_distance(inner, outer) - 3.0) < 0.5
    assert abs(average_surface_distance(inner, outer, spacing=(2.0, 2.0, 2.0)) - 6.0) < 1.0
    assert np.isnan(average_surface_distance(inner, np.zeros_like(inner)))
    metrics = segmentation_metrics(inner, outer)
    assert set(metrics) >= {"dsc", "jaccard", "precision", "recall", "hd95", "assd"}
    assert metrics["hd95"] >= metrics["assd"] > 0


def test_evaluate_scores_a_predictions_folder_without_a_model(tmp_path, capsys):
    root = _nnunet_dataset(tmp_path / "Dataset007_Pancreas", cases=("p1", "p2", "p3"), test=())
    preds = tmp_path / "preds"
    preds.mkdir()
    truth = sitk.ReadImage(str(root / "labelsTr" / "p1.nii.gz")) == 1
    sitk.WriteImage(sitk.Cast(truth, sitk.sitkUInt8), str(preds / "p1.nii.gz"))  # perfect
    shifted = sitk.ReadImage(str(root / "labelsTr" / "p2.nii.gz")) == 1
    array = np.roll(sitk.GetArrayFromImage(shifted), 1, axis=2)
    moved = sitk.GetImageFromArray(array.astype(np.uint8))
    moved.CopyInformation(shifted)
    sitk.WriteImage(moved, str(preds / "p2.nrrd"))  # off by one voxel; p3 missing
    out = tmp_path / "report"
    # a missing prediction is a bad case: by default the evaluation stops, naming it (issue 21, class 6) ...
    assert main(["evaluate", "--data", str(root), "--predictions", str(preds), "-o", str(out), "--quiet"]) == 1
    assert "Case p3 cannot be scored: no prediction p3.nii.gz" in capsys.readouterr().err
    # ... and with --on-bad-case skip it is left out with a warning and listed
    assert main(["evaluate", "--data", str(root), "--predictions", str(preds), "-o", str(out), "--quiet",
                 "--on-bad-case", "skip"]) == 0
    assert "case p3 left out" in capsys.readouterr().err
    report = json.loads((out / "evaluation.json").read_text())
    cases = {c["case"]: c for c in report["cases"]}
    assert cases["p1"]["dsc"] == 1.0 and cases["p1"]["assd"] == 0.0
    assert 0.3 < cases["p2"]["dsc"] < 1.0 and 0 < cases["p2"]["assd"] <= 2 * max(shifted.GetSpacing())
    assert report["summary"]["missing"] == 1 and report["missing"][0]["case"] == "p3"
    assert report["info"]["layout"] == "nnunet"
    with open(out / "cases.csv", newline="") as f:
        assert "assd" in next(csv.reader(f))
    assert main(["evaluate", "--data", str(root), "--predictions", str(preds), "-o", str(tmp_path / "r2"),
                 "--model", str(demo_model_dir())]) == 1
    assert "no --model" in capsys.readouterr().err
