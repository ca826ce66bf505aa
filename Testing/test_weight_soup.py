"""The weight average of model packages (training/weight_soup.py): the mean of each weight, the sources recorded by
hash, and a clear refusal of packages that cannot be averaged."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import tiny_package
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.errors import ModelPackageError, OutputExistsError
from PancreasRSTNLib.io.model_package import load_model_package, sha256_of
from PancreasRSTNLib.training.weight_soup import average_state_dicts, soup_packages


def test_the_average_is_the_mean_of_every_weight_and_records_its_sources(tmp_path):
    a, b = tiny_package(tmp_path / "a", seed=0, views="Z"), tiny_package(tmp_path / "b", seed=1, views="Z")
    out = soup_packages([a, b], tmp_path / "soup", {"name": "tiny-soup"})
    pa, pb, soup = (load_model_package(p) for p in (a, b, out))  # verified: sha256 of its own files
    sa, sb, ss = (p.models["Z"].state_dict() for p in (pa, pb, soup))
    floats = [k for k in sa if sa[k].is_floating_point()]
    assert floats and any(not torch.equal(sa[k], sb[k]) for k in floats)
    for k in floats:
        torch.testing.assert_close(ss[k], (sa[k] + sb[k]) / 2, rtol=0, atol=1e-7)
    meta = json.loads((out / "model.json").read_text())
    assert meta["name"] == "tiny-soup"
    assert [s["weights_sha256"]["model_Z.safetensors"] for s in meta["soup"]["of"]] == [
        sha256_of(a / "model_Z.safetensors"), sha256_of(b / "model_Z.safetensors")]


def test_the_average_of_one_model_with_itself_gives_its_outputs(tmp_path):
    a = tiny_package(tmp_path / "a", seed=3, views="Z")
    soup = load_model_package(soup_packages([a, a], tmp_path / "soup"))
    model, averaged = load_model_package(a).models["Z"], soup.models["Z"]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.coarse(x), averaged.coarse(x))


def test_batch_counters_are_kept_and_float_weights_keep_their_dtype():
    first, second = torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4)
    first.num_batches_tracked += 7
    second.running_mean += 2.0
    out = average_state_dicts([first.state_dict(), second.state_dict()])
    assert out["num_batches_tracked"].item() == 7 and out["num_batches_tracked"].dtype == torch.long
    assert out["running_mean"].dtype == torch.float32 and torch.allclose(out["running_mean"], torch.ones(4))


def test_packages_that_cannot_be_averaged_are_refused_before_anything_is_written(tmp_path):
    a = tiny_package(tmp_path / "a", seed=0, views="Z")
    xyz = tiny_package(tmp_path / "xyz", seed=0, views="XYZ")
    with pytest.raises(ModelPackageError, match="views"):
        soup_packages([a, xyz], tmp_path / "soup")
    with pytest.raises(ModelPackageError, match="two or more"):
        soup_packages([a], tmp_path / "soup")
    assert not (tmp_path / "soup").exists()
    other_spacing = tiny_package(tmp_path / "s", seed=1, views="Z")
    meta = json.loads((other_spacing / "model.json").read_text())
    meta["spacing"] = [1.0, 1.0, 1.0]
    (other_spacing / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackageError, match="spacing"):
        soup_packages([a, other_spacing], tmp_path / "soup")
    soup_packages([a, a], tmp_path / "soup")
    with pytest.raises(OutputExistsError):
        soup_packages([a, a], tmp_path / "soup")


def test_models_average_command_writes_an_unevaluated_package_and_refuses_a_users_folder(tmp_path, capsys):
    a, b = tiny_package(tmp_path / "a", seed=0, views="Z"), tiny_package(tmp_path / "b", seed=1, views="Z")
    meta = json.loads((a / "model.json").read_text())
    meta["evaluation"] = {"held_out_dsc": 0.9}  # a source's accuracy is not the average's
    (a / "model.json").write_text(json.dumps(meta))
    out = tmp_path / "avg"
    assert main(["models", "average", str(a), str(b), "-o", str(out)]) == 0
    assert "has not been evaluated" in capsys.readouterr().out
    written = json.loads((out / "model.json").read_text())
    assert written["name"] == "avg" and "evaluation" not in written and len(written["soup"]["of"]) == 2
    assert main(["models", "verify", str(out)]) == 0
    before = (out / "model_Z.safetensors").read_bytes()
    assert main(["models", "average", str(a), str(b), "-o", str(out)]) != 0
    assert "--overwrite" in capsys.readouterr().err and (out / "model_Z.safetensors").read_bytes() == before
    assert main(["models", "average", str(a), str(a), "-o", str(out), "--overwrite"]) == 0
    assert (out / "model_Z.safetensors").read_bytes() != before and not list(tmp_path.glob(".avg.*"))
    torch.testing.assert_close(load_model_package(out).models["Z"].state_dict(),
                               load_model_package(a).models["Z"].state_dict())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["models", "average", str(a), str(b), "-o", str(mine), "--overwrite"]) != 0
    assert "not a model package" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep me"
    xyz = tiny_package(tmp_path / "xyz", seed=2, views="XYZ")
    assert main(["models", "average", str(a), str(xyz), "-o", str(tmp_path / "bad")]) != 0
    assert "views" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad.partial*"))
