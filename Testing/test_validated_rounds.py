"""A model's validated round count (model.json ``inference.max_iter``): the default of every surface, overridden by
an explicit --max-iter, checked by the schema."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import demo_model_dir, tiny_package
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.engine.config import REFERENCE_MAX_ITER, InferenceConfig
from PancreasRSTNLib.engine.segmentation import build_engine
from PancreasRSTNLib.errors import ModelPackageError
from PancreasRSTNLib.io.model_package import load_model_package


def _with_rounds(directory, max_iter):
    package = tiny_package(directory)
    meta = json.loads((package / "model.json").read_text())
    meta["inference"] = {"max_iter": max_iter}
    (package / "model.json").write_text(json.dumps(meta))
    return package


def _demo_with_inference(directory, inference: dict):
    """The synthetic demo model with ``inference`` as its model.json validated settings."""
    shutil.copytree(demo_model_dir(), directory)
    meta = json.loads((directory / "model.json").read_text())
    meta["inference"] = inference
    (directory / "model.json").write_text(json.dumps(meta))
    return directory, meta


def _segment_json(ct, package, out, extra, capsys) -> dict:
    """``segment --json`` of the phantom with thr 1.0 (only the round count stops it): its summary."""
    assert main(["segment", str(ct), "--model", str(package), "--thr", "1.0", "--device", "cpu", "--json",
                 "-o", str(out), *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _phantom_ct(tmp_path, capsys):
    ct = tmp_path / "ct.nii.gz"
    assert main(["phantom", "-o", str(ct), "--seed", "5"]) == 0
    capsys.readouterr()
    return ct


def test_unset_rounds_take_the_models_count_and_an_explicit_count_wins(tmp_path):
    validated = load_model_package(_with_rounds(tmp_path / "v", 2))
    plain = load_model_package(tiny_package(tmp_path / "p"))
    assert validated.max_iter == 2 and plain.max_iter is None
    assert build_engine(validated, InferenceConfig(), "cpu").config.max_iter == 2
    assert build_engine(validated, None, "cpu").config.max_iter == 2
    assert build_engine(validated, InferenceConfig(max_iter=5), "cpu").config.max_iter == 5
    assert build_engine(validated, InferenceConfig(max_iter=0), "cpu").config.max_iter == 0
    assert build_engine(plain, InferenceConfig(), "cpu").config.max_iter == REFERENCE_MAX_ITER == 10


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_schema_refuses_a_bad_round_count(tmp_path, bad):
    with pytest.raises(ModelPackageError, match="inference"):
        load_model_package(_with_rounds(tmp_path / "m", bad))


def test_segment_stops_at_the_models_count_unless_told(tmp_path, capsys):
    """The synthetic demo model on a phantom (a real, non-empty mask), with thr 1.0 so only the count stops it."""
    package, _ = _demo_with_inference(tmp_path / "m", {"max_iter": 1})
    ct = _phantom_ct(tmp_path, capsys)
    reports = [_segment_json(ct, package, tmp_path / f"{name}.nii.gz", extra, capsys)
               for extra, name in (([], "a"), (["--max-iter", "2"], "b"))]
    assert [(r["fine_rounds"], r["stop_reason"]) for r in reports] == [(1, "max_iter"), (2, "max_iter")]


def test_the_models_coarse_weight_is_the_default_and_an_explicit_weight_wins(tmp_path, capsys):
    """model.json ``inference.coarse_weight`` (validated on folds: docs/models.md) steers every automatic run unless
    --coarse-weight says otherwise; the schema keeps it in [0, 1)."""
    package, meta = _demo_with_inference(tmp_path / "m", {"max_iter": 1, "coarse_weight": 0.3})
    loaded = load_model_package(package)
    assert loaded.coarse_weight == 0.3 and load_model_package(demo_model_dir()).coarse_weight is None
    assert build_engine(loaded, None, "cpu").config.coarse_weight == 0.3
    assert build_engine(loaded, InferenceConfig(coarse_weight=0.0), "cpu").config.coarse_weight == 0.0
    ct = _phantom_ct(tmp_path, capsys)
    volumes = [_segment_json(ct, package, tmp_path / f"{name}.nii.gz", extra, capsys)["rounds"][-1]["volume_ml"]
               for extra, name in (([], "a"), (["--coarse-weight", "0"], "b"))]
    assert volumes[0] != volumes[1]  # the coarse round's weight changed round 1
    assert main(["segment", str(ct), "--model", str(package), "--coarse-weight", "1", "-o",
                 str(tmp_path / "c.nii.gz")]) == 1
    assert "coarse_weight=1.0 is outside [0, 1)" in capsys.readouterr().err and not (tmp_path / "c.nii.gz").exists()
    meta["inference"]["coarse_weight"] = 1.2
    (package / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackageError, match="coarse_weight"):
        load_model_package(package)


def test_the_models_previous_weight_is_the_default_and_an_explicit_weight_wins(tmp_path, capsys):
    """model.json ``inference.previous_weight`` steers every automatic run unless --previous-weight says otherwise;
    the schema keeps it in [0, 1)."""
    package, meta = _demo_with_inference(tmp_path / "m", {"max_iter": 2, "previous_weight": 0.4})
    loaded = load_model_package(package)
    assert loaded.previous_weight == 0.4 and load_model_package(demo_model_dir()).previous_weight is None
    assert build_engine(loaded, None, "cpu").config.previous_weight == 0.4
    assert build_engine(loaded, InferenceConfig(previous_weight=0.0), "cpu").config.previous_weight == 0.0
    assert main(["segment", str(_phantom_ct(tmp_path, capsys)), "--model", str(package), "--previous-weight", "1",
                 "-o", str(tmp_path / "c.nii.gz")]) == 1
    assert "previous_weight=1.0 is outside [0, 1)" in capsys.readouterr().err and not (tmp_path / "c.nii.gz").exists()
    report = tmp_path / "benchmark.json"  # the benchmark times the package's rounds as segment runs them
    assert main(["benchmark", "--device", "cpu", "--model", str(package), "--shape", "32x32x8", "--repeats", "1",
                 "--max-iter", "2", "--reference", "off", "--scaling", "", "--no-training", "--json",
                 str(report)]) == 0
    assert json.loads(report.read_text())["settings"]["previous_weight"] == 0.4
    meta["inference"]["previous_weight"] = -0.1
    (package / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackageError, match="previous_weight"):
        load_model_package(package)
