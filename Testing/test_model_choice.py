"""Which model runs when none is named: the user's own before the bundled ones, the best measured held-out DSC
first, never a synthetic one; `--model` by name or folder; `models list`; the synthetic-model warning in
`segment` (text and JSON) and `models info`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import demo_model_dir, tiny_models
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.errors import ModelPackageError
from PancreasRSTNLib.io.model_package import SYNTHETIC_WARNING, default_metadata, save_model_package
from PancreasRSTNLib.io.user_models import find_model, list_models, resolve_model
from PancreasRSTNLib.io.volume_io import write_image
from PancreasRSTNLib.phantom import make_phantom


def _model(folder: Path, name: str, dsc: float | None = None, synthetic: bool = False, organ: str = "pancreas",
           always_on: bool = False) -> Path:
    meta = default_metadata(name, organ)
    meta["spacing"] = [1.5, 1.5, 1.5]
    if dsc is not None:
        meta["evaluation"] = {"held_out_dsc": dsc}
    if synthetic:
        meta["synthetic"] = True
    models = tiny_models(views="Z")
    if always_on:  # the output layers' bias at +4: p ~ 0.98 everywhere, a deterministic non-empty mask
        for model in models.values():
            for head in (model.coarse_model.head, model.fine_model.head):
                head.bias.data.fill_(4.0)
                head.weight.data.zero_()
    return save_model_package(folder / name, models, meta)


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """An empty user folder (PANCREAS_RSTN_MODELS) and a bundled folder holding the synthetic demo model."""
    import shutil

    user, bundled = tmp_path / "user", tmp_path / "bundled"
    user.mkdir()
    bundled.mkdir()
    shutil.copytree(demo_model_dir(), bundled / demo_model_dir().name)
    monkeypatch.setenv("PANCREAS_RSTN_MODELS", str(user))
    monkeypatch.setattr("PancreasRSTNLib.io.user_models.bundled_models_dirs", lambda: [bundled])
    return user, bundled


def test_default_prefers_user_models_then_measured_dsc_and_never_synthetic(roots):
    user, bundled = roots
    _model(bundled, "bundled-real", dsc=0.80)
    assert find_model("pancreas", list_models()).name == "bundled-real"  # the synthetic demo is never chosen
    _model(user, "user-weak", dsc=0.55)
    _model(user, "user-strong", dsc=0.70)
    _model(user, "user-unmeasured")
    _model(user, "user-synthetic", dsc=0.99, synthetic=True)
    chosen = find_model("pancreas", list_models())
    assert chosen.name == "user-strong" and chosen.source == "user"  # user first, then the best held-out DSC


def test_only_synthetic_models_give_a_clear_error(roots):
    with pytest.raises(ModelPackageError, match="Only synthetic demo models.*--model"):
        find_model("pancreas", list_models())
    with pytest.raises(ModelPackageError, match="No model is installed for organ 'spleen'"):
        find_model("spleen", list_models())


def test_model_by_name_or_folder(roots):
    user, _ = roots
    folder = _model(user, "mine", dsc=0.6)
    assert resolve_model("mine").path == folder
    assert resolve_model(str(folder)).path == folder
    assert resolve_model("PancreasRSTN-demo-phantom-light").synthetic  # named explicitly: allowed
    with pytest.raises(ModelPackageError, match="No model named 'nope'.*mine"):
        resolve_model("nope")
    with pytest.raises(ModelPackageError, match="Model folder not found"):
        resolve_model(str(user / "missing" / "dir"))


def test_models_list_shows_every_model_with_source_warning_and_path(roots, capsys):
    user, bundled = roots
    _model(user, "mine", dsc=0.6)
    assert main(["models", "list"]) == 0
    text = capsys.readouterr().out
    assert "mine  (default for pancreas)" in text and str(user / "mine") in text
    assert "PancreasRSTN-demo-phantom-light" in text and f"WARNING: {SYNTHETIC_WARNING}" in text
    assert "bundled" in text and "held-out DSC 0.600" in text
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["mine"]["default"] and rows["mine"]["source"] == "user"
    demo = rows["PancreasRSTN-demo-phantom-light"]
    assert demo["synthetic"] and not demo["default"] and demo["warning"] == SYNTHETIC_WARNING
    assert demo["spacing_mm"] == [2.656, 2.656, 3.0] and demo["source"] == "bundled"


def test_models_info_by_name_is_readable_and_warns(roots, capsys):
    assert main(["models", "info", "PancreasRSTN-demo-phantom-light"]) == 0
    text = capsys.readouterr().out
    assert f"WARNING:       {SYNTHETIC_WARNING}" in text and "spacing:       2.65625x2.65625x3 mm" in text
    assert "{" not in text  # no raw JSON dump


@pytest.fixture
def phantom_ct(tmp_path):
    image, _ = make_phantom((128, 128, 64), seed=4321)
    return write_image(image, tmp_path / "ct.nii.gz")


def test_segment_warns_about_a_synthetic_model_in_text_and_json(roots, phantom_ct, tmp_path, capsys):
    rc = main(["segment", str(phantom_ct), "-o", str(tmp_path / "a.nii.gz"), "--model",
               "PancreasRSTN-demo-phantom-light", "--max-iter", "1"])
    assert rc == 0
    captured = capsys.readouterr()
    assert f"WARNING: model 'PancreasRSTN-demo-phantom-light': {SYNTHETIC_WARNING}" in captured.err
    assert f"WARNING: {SYNTHETIC_WARNING}" in captured.out  # repeated under the summary
    rc = main(["segment", str(phantom_ct), "-o", str(tmp_path / "b.nii.gz"), "--model",
               "PancreasRSTN-demo-phantom-light", "--max-iter", "1", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["warning"] == SYNTHETIC_WARNING and summary["model_source"] == "--model"


def test_segment_without_model_refuses_synthetic_and_uses_the_default(roots, phantom_ct, tmp_path, capsys):
    user, _ = roots
    assert main(["segment", str(phantom_ct), "-o", str(tmp_path / "a.nii.gz")]) == 1
    assert "Only synthetic demo models" in capsys.readouterr().err
    assert not (tmp_path / "a.nii.gz").exists()
    _model(user, "mine", dsc=0.6, always_on=True)
    assert main(["segment", str(phantom_ct), "-o", str(tmp_path / "a.nii.gz"), "--json", "--max-iter", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "mine" and summary["model_source"] == "default for pancreas (user)"
    assert summary["warning"] is None
    assert summary["resampled_to"] == pytest.approx([1.5, 1.5, 1.5], rel=0.01)  # covers the input's extent exactly
    assert summary["input_spacing"] == [2.6562, 2.6562, 3.0] and summary["model_spacing"] == [1.5, 1.5, 1.5]
