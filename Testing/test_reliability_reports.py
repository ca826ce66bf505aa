"""Issue 21, classes 6-9: evaluation never drops a case silently, a cohort resume never mixes two runs, --json is
always JSON, and the messages say what they mean. Each test names its class; each failed before the fix."""

from __future__ import annotations

import json
import re
import shutil
import struct

import pytest
import SimpleITK as sitk
import torch

from helpers import ct_image, demo_model_dir
from PancreasRSTNLib import errors
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.io.reference_import import load_reference_checkpoint
from PancreasRSTNLib.io.volume_io import read_image, validate_ct, write_image
from PancreasRSTNLib.phantom import make_phantom

SMALL = (32, 28, 12)


def _strict(text):
    """json.loads that refuses the bare NaN / Infinity tokens strict JSON readers refuse."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def _dataset(root, cases=("p1", "p2", "p3")):
    """An nnU-Net v2 dataset of phantoms (pancreas = 1) and a predictions folder with perfect predictions."""
    for d in ("imagesTr", "labelsTr"):
        (root / d).mkdir(parents=True, exist_ok=True)
    preds = root.parent / "preds"
    preds.mkdir(exist_ok=True)
    for i, case in enumerate(cases):
        image, label = make_phantom(SMALL, seed=10 + i, multi_label=True)
        sitk.WriteImage(image, str(root / "imagesTr" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(label, str(root / "labelsTr" / f"{case}.nii.gz"))
        sitk.WriteImage(sitk.Cast(label == 1, sitk.sitkUInt8), str(preds / f"{case}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                   "labels": {"background": 0, "pancreas": 1}}))
    return root, preds


def _evaluate(root, preds, out, *extra):
    return main(["evaluate", "--data", str(root), "--predictions", str(preds), "-o", str(out), "--quiet", *extra])


# ---------------------------------------------------------------------------------------------- class 6
def test_class6_a_prediction_on_the_wrong_grid_stops_the_evaluation_or_is_listed(tmp_path, capsys):
    root, preds = _dataset(tmp_path / "ds")
    wrong = sitk.Image([8, 8, 4], sitk.sitkUInt8)
    sitk.WriteImage(wrong, str(preds / "p2.nii.gz"))
    assert _evaluate(root, preds, tmp_path / "r1") == 1  # --on-bad-case fail is the default
    err = capsys.readouterr().err
    assert "Case p2 cannot be scored" in err and "not on its label's grid" in err
    assert not (tmp_path / "r1" / "evaluation.json").exists()
    assert _evaluate(root, preds, tmp_path / "r2", "--on-bad-case", "skip") == 0
    assert "case p2 left out" in capsys.readouterr().err
    report = _strict((tmp_path / "r2" / "evaluation.json").read_text())
    assert [c["case"] for c in report["missing"]] == ["p2"] and report["summary"]["dsc"]["n"] == 2


def test_class6_an_image_without_a_label_is_named(tmp_path, capsys):
    root, preds = _dataset(tmp_path / "ds")
    shutil.copy(root / "imagesTr" / "p1_0000.nii.gz", root / "imagesTr" / "orphan_0000.nii.gz")
    assert _evaluate(root, preds, tmp_path / "r1") == 1
    assert "Case orphan cannot be scored: the image orphan_0000.nii.gz has no label file" in capsys.readouterr().err
    assert _evaluate(root, preds, tmp_path / "r2", "--on-bad-case", "skip") == 0
    report = _strict((tmp_path / "r2" / "evaluation.json").read_text())
    assert report["missing"][0]["case"] == "orphan" and report["summary"]["dsc"]["n"] == 3


def test_class6_a_label_value_absent_from_every_ground_truth_is_an_error(tmp_path, capsys):
    root, preds = _dataset(tmp_path / "ds")
    assert _evaluate(root, preds, tmp_path / "r1", "--label-value", "9") == 1
    assert "Case p1 cannot be scored: its label has no voxel of value [9]" in capsys.readouterr().err
    assert _evaluate(root, preds, tmp_path / "r2", "--label-value", "9", "--on-bad-case", "skip") == 1
    assert "appear in no ground truth" in capsys.readouterr().err


def test_class6_evaluation_json_is_strict_json(tmp_path):
    """An empty prediction has HD95 NaN: evaluation.json held bare NaN tokens."""
    root, preds = _dataset(tmp_path / "ds")
    empty = sitk.ReadImage(str(preds / "p1.nii.gz")) * 0
    sitk.WriteImage(empty, str(preds / "p1.nii.gz"))
    assert _evaluate(root, preds, tmp_path / "r") == 0
    report = _strict((tmp_path / "r" / "evaluation.json").read_text())
    p1 = next(c for c in report["cases"] if c["case"] == "p1")
    assert p1["dsc"] == 0.0 and p1["hd95"] is None


# ---------------------------------------------------------------------------------------------- class 7
@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    for i in range(2):
        write_image(make_phantom((64, 64, 32), seed=60 + i)[0], folder / f"c{i}.nii.gz")
    return folder


def test_class7_resuming_with_another_model_or_options_is_refused(tmp_path, capsys, cohort):
    out = tmp_path / "out"
    args = ["segment", str(cohort), "-o", str(out), "--max-iter", "1", "--device", "cpu", "--quiet", "--model"]
    assert main([*args, str(demo_model_dir())]) == 0
    rows = json.loads((out / "cohort.json").read_text())["cases"]
    assert rows[0]["model_id"] and rows[0]["settings"]["max_iter"] == 1
    stamp = (out / "c0.nii.gz").stat().st_mtime_ns
    assert main([*args, str(demo_model_dir()), "--thr", "0.9", "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] == "output_exists" and "thr 0.99 -> 0.9" in error["message"] and "--overwrite" in error["fix"]
    other = tmp_path / "same-name-other-weights"  # one name, other weights: the name alone would not tell
    shutil.copytree(demo_model_dir(), other)
    from PancreasRSTNLib.io.model_package import load_model_package, save_model_package

    package = load_model_package(other)
    for model in package.models.values():
        model.fine_model.head.bias.data += 0.01
    save_model_package(other, package.models, package.metadata, overwrite=True)
    assert main([*args, str(other)]) == 1
    assert "model weights" in capsys.readouterr().err
    assert (out / "c0.nii.gz").stat().st_mtime_ns == stamp  # nothing was redone or mixed in
    assert main([*args, str(demo_model_dir())]) == 0  # the same settings resume (nothing to do)
    assert json.loads((out / "cohort.json").read_text())["info"]["skipped_done_earlier"] == 2
    from PancreasRSTNLib.app.cohort_table import ROWS_FOLDER

    for row_file in (out / ROWS_FOLDER).glob("*.json"):  # rows written before previous_weight was recorded
        row = json.loads(row_file.read_text())
        del row["settings"]["previous_weight"]
        row_file.write_text(json.dumps(row))
    assert main([*args, str(demo_model_dir())]) == 0  # they were made with its only value then, 0
    assert main([*args, str(demo_model_dir()), "--previous-weight", "0.3"]) == 1
    assert "previous_weight 0.0 -> 0.3" in capsys.readouterr().err
    assert main([*args, str(other), "--overwrite"]) == 0
    assert {r["model_id"] for r in json.loads((out / "cohort.json").read_text())["cases"]} != {rows[0]["model_id"]}


# ---------------------------------------------------------------------------------------------- class 8
@pytest.mark.parametrize("bad", [["--batch-size", "0"], ["--thr", "abc"], ["--device", "tpu"], ["--no-such-flag"]])
def test_class8_options_the_parser_refuses_give_one_json_error_object(tmp_path, capsys, bad):
    rc = main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "s.nii.gz"), "--json", *bad])
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert rc == 1 and error["kind"] == "options" and error["fix"] and "usage:" not in captured.err
    with pytest.raises(SystemExit) as exit_info:  # without --json: argparse's usage text and exit code 2, as before
        main(["segment", "ct.nii.gz", "-o", "s.nii.gz", *bad])
    assert exit_info.value.code == 2


def test_class8_a_bad_thr_is_an_options_error_with_a_fix(tmp_path, capsys):
    ct = write_image(ct_image(), tmp_path / "ct.nii.gz")
    assert main(["segment", str(ct), "-o", str(tmp_path / "s.nii.gz"), "--thr", "1.5", "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] == "options" and "thr=1.5" in error["message"] and "(0, 1]" in error["fix"]
    assert not (tmp_path / "s.nii.gz").exists()


def test_class8_an_unexpected_exception_under_json_is_one_error_object(tmp_path, capsys, monkeypatch):
    import PancreasRSTNLib.app.commands.segment as segment

    def broken(*args, **kwargs):
        raise ValueError("something nobody planned for")

    monkeypatch.setattr(segment, "load_model_from_args", broken)
    ct = write_image(ct_image(), tmp_path / "ct.nii.gz")
    assert main(["segment", str(ct), "-o", str(tmp_path / "s.nii.gz"), "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] == "internal" and "ValueError: something nobody planned for" in error["message"]
    assert "-v" in error["fix"]


def test_class8_every_error_kind_has_a_fix_and_its_own_kind():
    kinds = {}
    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, errors.RSTNError):
            error = cls("a message without advice") if cls is not errors.RunCancelled else cls()
            assert error.fix, cls.__name__
            kinds[cls.kind] = cls
    assert kinds["options"] is errors.OptionsError and kinds["input_image"] is errors.InputImageError


# ---------------------------------------------------------------------------------------------- class 9
def test_class9_a_one_voxel_volume_is_not_called_2d():
    with pytest.raises(errors.InputImageError) as info:
        validate_ct(sitk.Image([1, 1, 1], sitk.sitkInt16))
    assert "2-D" not in str(info.value) and "only 1x1x1 voxels" in str(info.value)


def test_class9_a_file_for_the_save_iterations_folder_is_named_once(tmp_path, capsys):
    taken = tmp_path / "rounds"
    taken.write_text("a file")
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "s.nii.gz"), "--save-iterations",
                 str(taken)]) == 1
    err = capsys.readouterr().err
    assert "for The" not in err and "is a file, not a folder" in err


def test_class9_import_reference_never_suggests_weights_only_false(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"a": Evil()}, tmp_path / "evil.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    said = {}
    for name in ("evil.pkl", "junk.pkl"):
        with pytest.raises(errors.ModelPackageError) as info:
            load_reference_checkpoint(tmp_path / name)
        said[name] = text = str(info.value) + " " + info.value.fix
        assert "weights_only=False" not in text and "`False`" not in text and "can still be loaded" not in text
        assert "\x1b[" not in text  # nor torch's terminal colour codes
    assert "refers to the Python object print" in said["evil.pkl"]


def test_class9_itk_warnings_are_caught_and_said_in_our_words(tmp_path, capfd):
    """SimpleITK printed 'WARNING: In .../itkNiftiImageIO.cxx, line 2008 ...' on stderr."""
    path = tmp_path / "ct.nii"
    sitk.WriteImage(ct_image(), str(path))
    raw = bytearray(path.read_bytes())
    raw[76 + 12: 80 + 12] = struct.pack("<f", 3.0)  # pixdim[3] 3.0 while the sform still says 2.5
    path.write_bytes(bytes(raw))
    read_image(path)
    err = capfd.readouterr().err
    assert "itkNiftiImageIO" not in err and "WARNING: In" not in err
    from PancreasRSTNLib.io.volume_io import read_input

    _, warnings = read_input(path)
    assert any(re.search(r"disagree with its sform", w) for w in warnings)


def test_class9_the_text_summary_names_the_precision(tmp_path, capsys):
    ct = write_image(make_phantom((64, 64, 32), seed=1)[0], tmp_path / "ct.nii.gz")
    assert main(["segment", str(ct), "-o", str(tmp_path / "s.nii.gz"), "--model", str(demo_model_dir()),
                 "--max-iter", "1", "--device", "cpu"]) == 0
    assert re.search(r"device: cpu.*precision fp32", capsys.readouterr().out)
