"""Per-user models folder: list, install from folder/zip (never overwriting silently), verify, demo warning."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from PancreasRSTNLib.errors import ModelPackageError, OutputExistsError
from PancreasRSTNLib.io.user_models import (
    SYNTHETIC_WARNING,
    find_model,
    install_model,
    list_models,
    user_models_dir,
    verify_all,
)


def _package(folder, organ="pancreas", name="tiny", training=None):
    from PancreasRSTNLib.io.model_package import default_metadata, save_model_package
    from PancreasRSTNLib.models.model import RSTN, RSTNConfig

    torch.manual_seed(0)
    config = RSTNConfig(backbone="light", backbone_kwargs={"widths": (4, 8)})
    meta = default_metadata(name, organ)
    meta["training"] = training or {"source": "tests"}
    return save_model_package(folder, {"Z": RSTN(config)}, meta)


def test_user_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PANCREAS_RSTN_MODELS", str(tmp_path / "mine"))
    assert user_models_dir() == tmp_path / "mine" and (tmp_path / "mine").is_dir()


def test_install_folder_list_and_refuse_overwrite(tmp_path):
    source = _package(tmp_path / "src")
    root = tmp_path / "user"
    info = install_model(source, root)
    assert info.path.parent == root and info.organ == "pancreas" and info.backbone == "light"
    assert [m.name for m in list_models(root, include_bundled=False)] == ["tiny"]
    with pytest.raises(OutputExistsError):
        install_model(source, root)
    assert install_model(source, root, overwrite=True).name == "tiny"


def test_install_zip_and_reject_corrupt(tmp_path):
    source = _package(tmp_path / "src" / "tiny-model")
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in source.iterdir():
            z.write(f, f"tiny-model/{f.name}")
    info = install_model(archive, tmp_path / "user")
    assert (info.path / "model.json").is_file()
    # a corrupted weight file is refused and nothing is installed
    weights = next(source.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    with pytest.raises(ModelPackageError, match="Hash mismatch"):
        install_model(source, tmp_path / "user2")
    assert list_models(tmp_path / "user2", include_bundled=False) == []


def test_zip_slip_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../../evil/model.json", "{}")
    with pytest.raises(ModelPackageError, match="unsafe path"):
        install_model(archive, tmp_path / "user")


def test_demo_model_warning_and_preference(tmp_path):
    root = tmp_path / "user"
    _package(root / "demo", name="pancreas-demo", training={"dataset": "synthetic phantoms"})
    _package(root / "real", name="pancreas-real")
    models = list_models(root, include_bundled=False)
    demo = next(m for m in models if m.name == "pancreas-demo")
    assert demo.synthetic and demo.warning == SYNTHETIC_WARNING and "not for clinical use" in demo.label
    assert find_model("pancreas", models).name == "pancreas-real"  # a real model is preferred
    with pytest.raises(ModelPackageError, match="No model is installed for organ 'spleen'"):
        find_model("spleen", models)


def test_verify_all_reports_each_model(tmp_path):
    root = tmp_path / "user"
    good = _package(root / "good", name="good")
    bad = _package(root / "bad", name="bad")
    meta = json.loads((bad / "model.json").read_text())
    meta["files"]["Z"]["sha256"] = "0" * 64
    (bad / "model.json").write_text(json.dumps(meta))
    report = verify_all(list_models(root, include_bundled=False))
    assert report[good] == "OK" and "Hash mismatch" in report[bad]
