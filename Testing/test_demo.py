"""``pancreas-rstn demo``: the bundled synthetic model on an unseen phantom, every round written."""

from __future__ import annotations

import json
import time

import SimpleITK as sitk

from PancreasRSTNLib.cli import main
from PancreasRSTNLib.demo import DEMO_MODEL_NAME, find_demo_model
from PancreasRSTNLib.model_package import load_model_package, verify_model_package


def test_bundled_demo_model_is_small_and_labelled_synthetic():
    folder = find_demo_model()
    assert folder.name == DEMO_MODEL_NAME
    assert sum(f.stat().st_size for f in folder.iterdir()) < 20 * 2**20
    verify_model_package(folder)
    meta = load_model_package(folder).metadata
    assert "not for clinical images" in meta["description"].lower()
    assert meta["rstn"]["backbone"] == "light" and sorted(meta["views"]) == ["X", "Y", "Z"]
    assert meta["training"]["data"]["seeds"] == [1000, 1079]


def test_demo_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    assert main(["demo", "-o", str(out)]) == 0
    seconds = time.perf_counter() - t0
    text = capsys.readouterr().out
    assert "round 0 (coarse): DSC vs ground truth" in text and "not for clinical" in text.lower()
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["final_dsc"] >= 0.85  # the bundled model on a phantom it never saw
    assert len(summary["dsc_per_round"]) >= 2 and seconds < 120
    ct = sitk.ReadImage(str(out / "phantom_ct.nii.gz"))
    seg = sitk.ReadImage(str(out / "segmentation.nii.gz"))
    assert seg.GetSize() == ct.GetSize() and seg.GetDirection() == ct.GetDirection()
    n = len(summary["dsc_per_round"])
    for r in range(n):
        assert (out / "rounds" / f"round_{r:02d}_mask.nii.gz").exists()
    sal = sitk.ReadImage(str(out / "rounds" / "round_01_saliency_Z.nrrd"))
    assert sal.GetNumberOfComponentsPerPixel() == 3 and sal.GetSize() == ct.GetSize()
    assert (out / "demo_rounds.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["demo", "-o", str(out)]) == 1  # refuses a non-empty folder without --overwrite
