"""Model packages: save/load, sha256 verification, reference import, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import TINY, tiny_models, tiny_package
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.errors import ModelPackageError, OutputExistsError
from PancreasRSTNLib.io.model_package import load_model_package, verify_model_package
from PancreasRSTNLib.io.reference_import import import_reference_checkpoints, load_reference_checkpoint
from PancreasRSTNLib.models.model import RSTN


def test_round_trip(tmp_path):
    models = tiny_models(seed=3)
    pkg_dir = tiny_package(tmp_path / "m", seed=3)
    pkg = load_model_package(pkg_dir)
    assert pkg.views == ("X", "Y", "Z") and pkg.organ == "pancreas"
    assert pkg.metadata["organ"]["snomed_code"] == "15776009"
    for v in "XYZ":
        for (k, a), b in zip(models[v].state_dict().items(), pkg.models[v].state_dict().values()):
            assert torch.equal(a, b), k
    with pytest.raises(OutputExistsError):
        tiny_package(tmp_path / "m")


def test_hash_mismatch_is_caught(tmp_path):
    pkg_dir = tiny_package(tmp_path / "m")
    f = pkg_dir / "model_Y.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match="Hash mismatch for model_Y.safetensors"):
        verify_model_package(pkg_dir)
    with pytest.raises(ModelPackageError, match="Hash mismatch"):
        load_model_package(pkg_dir)
    assert main(["models", "verify", str(pkg_dir)]) == 1


def test_missing_view_and_bad_schema(tmp_path):
    pkg_dir = tiny_package(tmp_path / "m", views="XZ")
    with pytest.raises(ModelPackageError, match="no weights for view Y"):
        load_model_package(pkg_dir, views=("X", "Y", "Z"))
    meta = json.loads((pkg_dir / "model.json").read_text())
    meta["schema_version"] = 99
    (pkg_dir / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackageError, match="schema version 99"):
        load_model_package(pkg_dir)
    (pkg_dir / "model.json").write_text("{not json")
    with pytest.raises(ModelPackageError, match="not valid JSON"):
        load_model_package(pkg_dir)
    with pytest.raises(ModelPackageError, match="no model.json"):
        load_model_package(tmp_path)


def test_corrupt_weights_with_matching_hash(tmp_path):
    """A file that is not safetensors (but whose hash was recorded) is reported as corrupt."""
    pkg_dir = tiny_package(tmp_path / "m")
    (pkg_dir / "model_X.safetensors").write_bytes(b"garbage")
    meta = json.loads((pkg_dir / "model.json").read_text())
    from PancreasRSTNLib.io.model_package import sha256_of

    meta["files"]["X"]["sha256"] = sha256_of(pkg_dir / "model_X.safetensors")
    (pkg_dir / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackageError, match="corrupt"):
        load_model_package(pkg_dir)


def test_import_reference_checkpoints_via_cli(tmp_path, capsys):
    """Reference files are plain pickled state_dicts (one per view, 'module.' prefix from multi-GPU runs).
    Use a small stand-in RSTN layout check: the full-size default RSTN is what import builds."""
    torch.manual_seed(0)
    ref = RSTN()
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}
    pkl = tmp_path / "FD0:X3_1_20180101.pkl"
    torch.save(sd, pkl)
    out = tmp_path / "imported"
    assert main(["models", "import-reference", "--x", str(pkl), "-o", str(out), "--organ", "pancreas"]) == 0
    pkg = load_model_package(out)
    assert pkg.views == ("X",)
    assert torch.equal(pkg.models["X"].fine_model.fc7.weight, ref.fine_model.fc7.weight)
    assert main(["models", "info", str(out)]) == 0
    assert "fcn8s" in capsys.readouterr().out


def test_reference_import_refuses_code_and_wrong_shapes(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pkl"
    torch.save({"a": Evil()}, evil)
    with pytest.raises(ModelPackageError, match="weights_only"):
        load_reference_checkpoint(evil)
    wrong = tmp_path / "wrong.pkl"
    torch.save(RSTN(TINY).state_dict(), wrong)  # a light-backbone state_dict is not a reference checkpoint
    with pytest.raises(ModelPackageError, match="missing keys: coarse_model.conv1_1.weight"):
        import_reference_checkpoints({"X": wrong}, tmp_path / "out")
    assert not (tmp_path / "out" / "model.json").exists()
