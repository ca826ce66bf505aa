"""Cai et al.'s system end to end: progressive PNet-MSA units, `train --method cai` and `--method rstn+biclstm`,
packages that carry a refiner (verified, loaded, run as one more round on top of RSTN), and `evaluate` comparing
RSTN, C2F and Cai packages in one table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.engine.cai_inference import refine_round
from PancreasRSTNLib.engine.config import RunSettings
from PancreasRSTNLib.engine.inference import InferenceConfig, RSTNEngine
from PancreasRSTNLib.engine.segmentation import segment_canonical
from PancreasRSTNLib.errors import ModelPackageError
from PancreasRSTNLib.evaluation.cases import EvalCase, EvalSettings, evaluate_case
from PancreasRSTNLib.io.model_package import load_model_package, save_model_package
from PancreasRSTNLib.models.cai_system import CaiCNN
from PancreasRSTNLib.models.clstm import RefinerConfig
from PancreasRSTNLib.models.model import RSTNConfig
from PancreasRSTNLib.phantom import canonical_spacing, phantom_series
from PancreasRSTNLib.training.cai_training import active_units
from PancreasRSTNLib.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "Resources" / "Models" / "PancreasRSTN-demo-phantom-light"
PHANTOM = (128, 128, 64)  # the demo model's training size
CAI_ARGS = ["--phantoms", "2", "--phantom-shape", "64x64x32", "--method", "cai", "--channels", "8", "--crop", "32",
            "--steps", "CNN:10,SEQ:4", "--checkpoint-every", "0", "--no-progress"]


def _phantom(seed: int = 5000, size=PHANTOM):
    name, hu, label = next(iter(phantom_series(size, seed, 1)))
    return name, hu, label > 0


# ---------------------------------------------------------------------------------------------- progressive units
def test_units_are_added_progressively_from_the_bottom():
    cfg = TrainConfig(method="cai", views=("Z",), schedule=(("CNN", 100), ("SEQ", 20)), unit_share=0.1)
    units = [active_units(cfg, step, 5) for step in range(120)]
    assert units[:10] == [1] * 10 and units[10:20] == [2] * 10 and units[30:40] == [4] * 10
    assert all(u is None for u in units[40:])  # the deepest unit and the fusion for the rest, and in SEQ
    assert all(active_units(cfg, step, 1) is None for step in range(120))  # the MICCAI CNN trains whole


def test_inactive_units_get_no_gradient_and_no_fused_output():
    torch.manual_seed(0)
    cnn = CaiCNN(RSTNConfig(backbone="pnet_msa", backbone_kwargs={"channels": 8}))
    fused, sides = cnn.forward_deep(torch.rand(2, 3, 32, 32), active_units=2)
    assert fused is None and len(sides) == 2
    torch.stack([s.sum() for s in sides]).sum().backward()
    assert cnn.cnn.units[1][0].weight.grad is not None
    assert all(p.grad is None for p in cnn.cnn.units[2].parameters())
    assert all(p.grad is None for p in cnn.cnn.fuse.parameters())
    fused, sides = cnn.forward_deep(torch.rand(1, 3, 32, 32))
    assert fused is not None and len(sides) == 5


def test_refiner_options_are_checked_before_any_data_is_read():
    with pytest.raises(Exception, match="--direction forward"):
        TrainConfig(method="cai", views=("Z",), schedule=(("CNN", 1),), refiner_window=3)
    with pytest.raises(Exception, match="does not belong to --method cai"):
        TrainConfig(method="cai", views=("Z",), schedule=(("S", 1),))


# ---------------------------------------------------------------------------------------------- train --method cai
def test_cli_trains_cai_and_segment_shows_the_refinement_round(tmp_path, capsys):
    out = tmp_path / "cai"
    assert main(["train", *CAI_ARGS, "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["models", "info", str(out / "model")]) == 0
    info = capsys.readouterr().out
    assert "method:        cai, refiner bi CLSTM refining the CNN output" in info and "backbone:      pnet_msa" in info
    assert main(["models", "verify", str(out / "model")]) == 0 and "view refiner: sha256" in capsys.readouterr().out
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["method"] == "cai" and meta["views"] == ["Z"] and "rstn" not in meta
    assert meta["network"] == {"backbone": "pnet_msa", "backbone_kwargs": {"channels": 8}}
    assert meta["refiner"]["direction"] == "bi" and meta["refiner"]["refines"] == "cnn"
    assert meta["training"]["config"]["loss"] == "jaccard"
    package = load_model_package(out / "model")
    assert package.method == "cai" and package.refiner is not None
    _, hu, _ = _phantom(size=(64, 64, 32))
    rounds = list(segment_canonical(hu, canonical_spacing((64, 64, 32)), package,
                                    RunSettings(InferenceConfig(views=("Z",)), device="cpu")))
    assert [r.stage for r in rounds] == ["cnn", "refine"]
    assert rounds[-1].stop_reason == "done" and rounds[0].stop_reason is None
    refined = refine_round(rounds[0].result, package.refiner, InferenceConfig())
    np.testing.assert_array_equal(refined.probability, rounds[1].result.probability)


def test_cai_training_resumes_bit_exactly(tmp_path):
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    assert main(["train", *CAI_ARGS, "-o", str(whole)]) == 0
    assert main(["train", *CAI_ARGS, "-o", str(halves), "--stop-after", "7"]) == 0
    assert not (halves / "model").exists()
    assert main(["train", *CAI_ARGS, "-o", str(halves), "--resume"]) == 0
    from safetensors.torch import load_file

    for name in ("model_Z.safetensors", "refiner.safetensors"):  # same draws and updates; CPU kernels may round
        a, b = load_file(str(whole / "model" / name)), load_file(str(halves / "model" / name))  # differently
        assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a), name


def test_forward_direction_with_the_miccai_window(tmp_path):
    out = tmp_path / "fwd"
    assert main(["train", *CAI_ARGS, "--direction", "forward", "--window", "3", "--backbone", "cai_miccai",
                 "--channels", "64", "-o", str(out)]) == 0
    package = load_model_package(out / "model")
    assert package.refiner_config == RefinerConfig("forward", 3, "cnn")
    assert package.refiner.backward_cell is None and package.config.backbone == "cai_miccai"


@pytest.mark.parametrize("extra,message", [
    (["--views", "X"], "view Z only"),
    (["--backbone", "cai_miccai"], "cannot be built with {'channels': 8}: 8 channels"),
    (["--direction", "bi", "--window", "3"], "--direction forward"),
    (["--epochs", "1,1,1"], "give --method cai its --steps"),
    (["--init", "somewhere"], "drop --init"),
])
def test_cai_refuses_wrong_options(tmp_path, capsys, extra, message):
    args = list(CAI_ARGS)
    if "--epochs" in extra:
        del args[args.index("--steps"):args.index("--steps") + 2]
    assert main(["train", *args, "-o", str(tmp_path / "x"), *extra]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------- rstn+biclstm
@pytest.fixture(scope="module")
def refined_package(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", "--phantoms", "1", "--phantom-shape", "x".join(map(str, PHANTOM)), "--method",
                 "rstn+biclstm", "--init", str(DEMO), "--steps", "REF:20", "-o", str(out), "--no-progress"]) == 0
    return out / "model"


def test_rstn_biclstm_keeps_the_rstn_frozen_and_adds_a_verified_refiner(refined_package, tmp_path):
    meta = json.loads((refined_package / "model.json").read_text())
    source = json.loads((DEMO / "model.json").read_text())
    assert meta.get("method", "rstn") == "rstn" and meta["refiner"]["refines"] == "rstn"
    from safetensors.torch import load_file

    for view, entry in source["files"].items():  # the RSTN's weights, unchanged
        ours = load_file(str(refined_package / f"model_{view}.safetensors"))
        theirs = load_file(str(DEMO / entry["path"]))
        changed = [k for k in theirs if not torch.equal(ours[k], theirs[k])]
        assert not changed, (changed[:4], [(ours[k].flatten()[:2], theirs[k].flatten()[:2]) for k in changed[:2]])
    assert meta["refined_from"]["name"] == source["name"] and "refiner" in meta["training"]
    copy = tmp_path / "copy"
    shutil.copytree(refined_package, copy)
    data = bytearray((copy / "refiner.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (copy / "refiner.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match="Hash mismatch for refiner.safetensors"):
        load_model_package(copy)


def test_the_refinement_runs_on_top_of_rstn_as_one_more_round(refined_package):
    package = load_model_package(refined_package)
    _, hu, _ = _phantom(5003)
    spacing = canonical_spacing(PHANTOM)
    rounds = list(segment_canonical(hu, spacing, package, RunSettings(device="cpu")))
    plain = list(RSTNEngine(package.models, InferenceConfig(), device="cpu").run(hu))
    assert [r.stage for r in rounds] == [r.stage for r in plain] + ["refine"]
    assert rounds[-1].index == plain[-1].index + 1 and rounds[-1].stop_reason == plain[-1].stop_reason
    assert rounds[-2].stop_reason is None  # no longer the last round
    np.testing.assert_allclose(rounds[-2].result.probability, plain[-1].probability, atol=1e-6)  # RSTN unchanged
    expected = refine_round(plain[-1], package.refiner, InferenceConfig())
    np.testing.assert_allclose(rounds[-1].result.probability, expected.probability, atol=1e-6)


def test_an_untrained_refiner_leaves_the_rstn_result_as_it_was(tmp_path):
    """The refinement is applied to the round where RSTN stops: an identity refiner gives RSTN's own metrics."""
    rstn = load_model_package(DEMO)
    config = RefinerConfig("bi", None, "rstn")
    path = save_model_package(tmp_path / "p", rstn.models, dict(rstn.metadata), refiner=config.build(),
                              refiner_config=config)
    refined = load_model_package(path)
    name, hu, truth = _phantom(5001)
    case = EvalCase(name, hu, truth, canonical_spacing(PHANTOM))
    base = evaluate_case(rstn.models, case, EvalSettings(device="cpu", spacing=rstn.spacing))
    with_refiner = evaluate_case(refined.models, case, EvalSettings(device="cpu", spacing=rstn.spacing,
                                                                     refiner=refined.refiner))
    assert with_refiner.refined["from_round"] == base.rounds_used
    assert with_refiner.metrics["dsc"] == pytest.approx(base.metrics["dsc"], abs=1e-9)
    assert with_refiner.refined["dsc_before"] == pytest.approx(base.metrics["dsc"], abs=1e-6)


def test_rstn_biclstm_needs_an_rstn_package(tmp_path, capsys):
    args = ["train", "--phantoms", "1", "--method", "rstn+biclstm", "--steps", "REF:2", "--no-progress"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 1
    assert "give its model package with --init" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- evaluate: compare
def test_evaluate_compares_rstn_c2f_and_cai_packages_in_one_table(tmp_path, refined_package):
    c2f, cai = tmp_path / "c2f", tmp_path / "cai"
    assert main(["train", "--phantoms", "1", "--phantom-shape", "x".join(map(str, PHANTOM)), "--method", "c2f",
                 "--backbone", "light", "--widths", "4,8", "--views", "Z", "--steps", "C2F:2", "-o", str(c2f),
                 "--no-progress"]) == 0
    assert main(["train", *CAI_ARGS[:3], "x".join(map(str, PHANTOM)), *CAI_ARGS[4:], "-o", str(cai)]) == 0
    out = tmp_path / "cmp"
    assert main(["evaluate", "--model", str(DEMO), str(refined_package), str(c2f / "model"), str(cai / "model"),
                 "--phantoms", "1", "--max-iter", "2", "-o", str(out), "--quiet"]) == 0
    table = (out / "comparison.md").read_text().splitlines()
    assert table[0] == "| model | method | DSC (%) | JI (%) | AVD (mm) | HD95 (mm) | time (s) |"
    methods = [line.split("|")[2].strip() for line in table[2:]]
    assert methods == ["rstn", "rstn+biclstm", "c2f", "cai"]
    result = json.loads((out / "comparison.json").read_text())
    for row in result["rows"]:
        report = json.loads((out / row["report"] / "evaluation.json").read_text())
        assert row["dsc"]["mean"] == pytest.approx(report["cases"][0]["metrics"]["dsc"])
        assert row["seconds"]["mean"] > 0
    assert (out / "comparison.png").stat().st_size > 10_000 and (out / "comparison.csv").is_file()


# ---------------------------------------------------------------------------------------------- held-out slices
def test_train_with_a_fold_never_uses_the_held_out_patients_slices(tmp_path):
    from PancreasRSTNLib.phantom import make_phantom

    data, jpeg = tmp_path / "data", tmp_path / "jpeg"
    for sub in ("images", "labels"):
        (data / sub).mkdir(parents=True)
    for sub in ("images", "masks"):
        (jpeg / sub).mkdir(parents=True)
    for k, case in enumerate(("CASEA", "CASEB")):
        image, label = make_phantom((40, 40, 12), seed=20 + k)
        sitk.WriteImage(image, str(data / "images" / f"{case}.nii.gz"))
        sitk.WriteImage(label, str(data / "labels" / f"{case}.nii.gz"))
        grey = np.zeros((36, 36), np.uint8)
        grey[6:30, 6:30] = 90
        mask = np.zeros((36, 36), np.uint8)
        mask[12:20, 12:22] = 255
        sitk.WriteImage(sitk.GetImageFromArray(grey), str(jpeg / "images" / f"{case}-1010.jpg"))
        sitk.WriteImage(sitk.GetImageFromArray(mask), str(jpeg / "masks" / f"{case}-1010.jpg"))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--fold", "0", "--folds", "2", "--axial-slices", str(jpeg),
                 "--slices-window=-1.4,257.4", "--hu-window", "0,250", "--views", "Z", "--backbone", "light",
                 "--widths", "4,8", "--steps", "S:1,I:1,J:1", "-o", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["training"]["cases"] == ["CASEB", "slice_CASEB-1010"]  # CASEA is fold 0's test patient
    assert meta["training"]["data"]["axial_slices"]["excluded_cases"] == ["CASEA"]
