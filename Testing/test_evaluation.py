"""Evaluation: per-case metrics, DSC per round, convergence table, summary statistics, oracle, files, CLI.
Uses the bundled demo model on small unseen phantoms."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.app.demo import find_demo_model
from PancreasRSTNLib.evaluation.cases import EvalCase, _stop_round, evaluate_case, summarize
from PancreasRSTNLib.io.model_package import load_model_package
from PancreasRSTNLib.phantom import DEFAULT_FOV_MM, make_phantom_canonical


def test_stop_round_reads_the_convergence_table():
    inter = [0.91, 0.96, 0.985, 0.995]
    assert _stop_round(inter, 0.90, 4) == (1, True)
    assert _stop_round(inter, 0.95, 4) == (2, True)
    assert _stop_round(inter, 0.98, 4) == (3, True)
    assert _stop_round(inter, 0.99, 4) == (4, True)
    assert _stop_round(inter, 0.999, 4) == (4, False)


@pytest.fixture(scope="module")
def package():
    return load_model_package(find_demo_model())


def test_evaluate_case_and_summary(package):
    size = tuple(package.metadata["training"]["data"]["shape"])
    hu, label = make_phantom_canonical(size, seed=7001)
    spacing = tuple(f / n for f, n in zip(DEFAULT_FOV_MM, size, strict=True))
    case = EvalCase("p7001", hu, label > 0, (spacing[1], spacing[0], spacing[2]))
    r = evaluate_case(package.models, case, thr=0.95, max_iter=2, device="cpu", oracle=True)
    assert r.metrics["dsc"] > 0.8  # the demo model works on an unseen phantom
    assert r.dsc_per_round[0] == pytest.approx(r.coarse_dsc)
    assert len(r.dsc_per_round) == len(r.inter_round) + 1 <= 3
    rt = r.rounds_to_thr
    reached = [rt[k] for k in ("0.90", "0.95", "0.98", "0.99") if rt[k] is not None]
    assert reached == sorted(reached)  # stricter thresholds never need fewer rounds
    assert r.metrics["dsc"] == pytest.approx(r.dsc_per_round[r.rounds_used], abs=1e-6)
    assert 0 < r.metrics["hd95"] < 50 and 0 <= r.metrics["precision"] <= 1
    assert r.oracle["dsc"] > 0.8 and r.seconds <= r.seconds_total
    other = replace(r, name="copy", metrics=dict(r.metrics, dsc=0.5),
                    rounds_to_thr=dict(r.rounds_to_thr, **{"0.95": None}))
    s = summarize([r, other], 2)
    dscs = [r.metrics["dsc"], 0.5]
    assert s["dsc"]["mean"] == pytest.approx(np.mean(dscs)) and s["dsc"]["std"] == pytest.approx(np.std(dscs, ddof=1))
    assert s["dsc"]["min"] == 0.5 and s["convergence"]["0.95"]["cases"] == 2
    assert s["convergence"]["0.95"]["reached"] == (1 if r.rounds_to_thr["0.95"] is not None else 0)


def test_cli_evaluate_on_phantoms_writes_reports(tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(find_demo_model()), "--phantoms", "2", "--phantom-seed", "7100",
            "--max-iter", "1", "--thr", "0.95", "--device", "cpu", "-o", str(out)]
    assert main(args) == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert len(report["cases"]) == 2 and report["summary"]["dsc"]["n"] == 2
    with open(out / "cases.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["phantom_07100", "phantom_07101"]
    assert all(0.0 <= float(r["dsc"]) <= 1.0 for r in rows)
    for png in ("dsc_boxplot.png", "inter_round_dsc.png", "dsc_per_round.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert main(args) == 1  # refuses to overwrite a report


def test_cli_evaluate_on_a_dataset_fold_with_oracle(tmp_path):
    import SimpleITK as sitk

    from PancreasRSTNLib.phantom import make_phantom

    size = tuple(load_model_package(find_demo_model()).metadata["training"]["data"]["shape"])
    root = tmp_path / "data"
    for k, seed in enumerate((7200, 7201)):
        image, label = make_phantom(size, seed=seed)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(root / "images" / f"case{k}.nii.gz"))
        sitk.WriteImage(label, str(root / "labels" / f"case{k}.nii.gz"))
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(find_demo_model()), "--data", str(root), "--fold", "1", "--folds", "2",
                 "--oracle", "--max-iter", "1", "--device", "cpu", "-o", str(out)]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert [c["name"] for c in report["cases"]] == ["case1"]  # fold 1 of 2 = the second sorted case
    case = report["cases"][0]
    assert case["oracle"]["dsc"] > 0.5 and report["summary"]["oracle_dsc"]["n"] == 1
    assert report["info"]["layout"] == "pairs" and (out / "cache" / "case1" / "image.npy").exists()
