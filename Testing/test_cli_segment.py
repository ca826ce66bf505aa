"""`pancreas-rstn segment` end to end: files in every format, rounds saved, refusals and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ct_image, demo_model_dir, tiny_package
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.evaluation.metrics import dice
from PancreasRSTNLib.io.volume_io import write_image
from PancreasRSTNLib.phantom import make_phantom


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("phantom")
    img, lab = make_phantom(size=(128, 128, 64), seed=4321)  # the demo model's native scale
    # store it oblique-free but flipped, to exercise the canonical round trip through the CLI
    flip = sitk.Flip(img, [True, False, True])
    flip_lab = sitk.Flip(lab, [True, False, True])
    return write_image(flip, d / "ct.nrrd"), write_image(flip_lab, d / "labels.nrrd")


def test_segment_writes_result_on_the_input_grid(tmp_path, phantom_files, capsys):
    ct, labels = phantom_files
    out = tmp_path / "seg.nii.gz"
    iters = tmp_path / "rounds"
    rc = main(["segment", str(ct), "-o", str(out), "--model", str(demo_model_dir()), "--save-iterations", str(iters),
               "--json", "--max-iter", "4"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rounds"][0]["stage"] == "coarse" and summary["volume_ml"] > 0
    assert len(summary["dsc_history"]) == summary["fine_rounds"] >= 1
    seg, ref = sitk.ReadImage(str(out)), sitk.ReadImage(str(ct))
    assert seg.GetSize() == ref.GetSize() and np.allclose(seg.GetOrigin(), ref.GetOrigin())
    assert np.allclose(seg.GetDirection(), ref.GetDirection()) and np.allclose(seg.GetSpacing(), ref.GetSpacing())
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(labels))) == 1
    assert dice(sitk.GetArrayFromImage(seg) > 0, truth) > 0.7
    n = summary["fine_rounds"]
    assert sorted(p.name for p in iters.glob("round_*_mask.nii.gz")) == [f"round_{r:02d}_mask.nii.gz"
                                                                         for r in range(n + 1)]
    sal = sitk.ReadImage(str(iters / "round_01_saliency_Z_ch1.nii.gz"))
    assert np.allclose(sal.GetDirection(), ref.GetDirection()) and np.allclose(sal.GetSpacing(), ref.GetSpacing())
    # the saliency sub-volume's origin lies on a voxel of the input grid
    idx = ref.TransformPhysicalPointToContinuousIndex(sal.GetOrigin())
    assert np.allclose(idx, np.round(idx), atol=1e-4)

    # a second run does not overwrite without --overwrite
    before = out.read_bytes()
    assert main(["segment", str(ct), "-o", str(out), "--model", str(demo_model_dir())]) == 1
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before


def _ct_with_nans() -> sitk.Image:
    a = sitk.GetArrayFromImage(ct_image(dtype=np.float32))
    a[1, 2, 3:6] = np.nan
    return sitk.GetImageFromArray(a)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: write_image(sitk.GetImageFromArray(np.zeros((30, 30), np.int16)), d / "flat.nii.gz"), "2-D"),
        (lambda d: write_image(_ct_with_nans(), d / "nan.nrrd"), "NaN"),  # NRRD keeps NaN (NIfTI writes 0)
        (lambda d: write_image(ct_image() + 2000, d / "mr.nrrd"), "does not look like a CT"),
        (lambda d: (d / "bad.nii.gz").write_bytes(b"\x00garbage") and d / "bad.nii.gz", "Cannot read"),
    ],
    ids=["2d", "nan", "non-ct", "unreadable"],
)
def test_bad_input_is_one_line_error(tmp_path, make, message):
    path = make(tmp_path)
    model = tiny_package(tmp_path / "model")
    proc = subprocess.run(
        [sys.executable, "-m", "PancreasRSTNLib", "segment", str(path), "-o", str(tmp_path / "o.nii.gz"),
         "--model", str(model)], capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    # the model's own warning (this tiny model says it has random weights) may come first; the error is one line
    assert [line for line in lines if not line.startswith("WARNING: model")] == [lines[-1]]
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert not (tmp_path / "o.nii.gz").exists()


def test_empty_prediction_is_reported_and_nothing_written(tmp_path, capsys):
    import torch

    from helpers import tiny_models
    from PancreasRSTNLib.io.model_package import default_metadata, save_model_package

    models = tiny_models()
    for m in models.values():
        with torch.no_grad():
            m.coarse_model.head.bias.fill_(-50.0)
    model = save_model_package(tmp_path / "m", models, default_metadata("empty", "pancreas"))
    ct = write_image(ct_image(), tmp_path / "ct.nii.gz")
    assert main(["segment", str(ct), "-o", str(tmp_path / "o.nii.gz"), "--model", str(model)]) == 1
    assert "found no pancreas" in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()
    # the same policy in a cohort: that case fails (counted in the exit code), nothing is written for it
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for seed, name in enumerate(("a", "b")):
        write_image(ct_image(seed=seed), cohort / f"{name}.nii.gz")
    assert main(["segment", str(cohort), "-o", str(tmp_path / "out"), "--model", str(model), "--quiet"]) == 2
    capsys.readouterr()
    rows = json.loads((tmp_path / "out" / "cohort.json").read_text())["cases"]
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("found no pancreas" in r["error"] and "nothing was written" in r["error"] for r in rows)
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_a_c2f_baseline_model_is_refused_by_segment(tmp_path, capsys):
    """A C2F baseline's saliency weights are untrained: running it as an RSTN would give wrong masks silently."""
    model = tiny_package(tmp_path / "c2f")
    meta_path = model / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["method"] = "c2f"
    meta_path.write_text(json.dumps(meta))
    ct = write_image(ct_image(), tmp_path / "ct.nii.gz")
    assert main(["segment", str(ct), "-o", str(tmp_path / "o.nii.gz"), "--model", str(model)]) == 1
    err = capsys.readouterr().err
    assert "C2F baseline" in err and "pancreas-rstn evaluate" in err
    assert not (tmp_path / "o.nii.gz").exists()


def test_a_refused_option_value_is_an_options_error_not_an_input_one(tmp_path, capsys):
    ct = write_image(ct_image(), tmp_path / "ct.nii.gz")
    for flag, value in (("--thr", "2"), ("--prob-threshold", "1.5"), ("--margin", "-1"), ("--views", "Q")):
        assert main(["segment", str(ct), "-o", str(tmp_path / "o.nii.gz"), flag, value, "--json"]) == 1
        error = json.loads(capsys.readouterr().out)["error"]
        assert error["kind"] == "options" and error["fix"], (flag, error)
    assert not (tmp_path / "o.nii.gz").exists()
