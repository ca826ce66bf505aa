"""The command line never wastes a run, never leaves half an output, and says what it did (issue: "Command line:
never waste a run ..."). Each test names the failure it guards against."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ROOT, demo_model_dir, tiny_models
from PancreasRSTNLib.app.cli import build_parser, main
from PancreasRSTNLib.io.model_package import default_metadata, save_model_package
from PancreasRSTNLib.io.volume_io import write_image
from PancreasRSTNLib.phantom import make_phantom
from PancreasRSTNLib.progress import Progress, progress_mode


def _unwritable_folder(tmp_path):
    """A folder this process cannot write into: a chmod 555 folder, or (root ignores permission bits) a folder
    of sysfs, which refuses new files even to root."""
    if os.name == "posix" and os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return folder
    for candidate in ("/sys/fs", "/sys"):
        try:
            (open(os.path.join(candidate, ".pancreas-rstn-probe"), "wb")).close()
        except OSError:
            return type(tmp_path)(candidate)
        os.unlink(os.path.join(candidate, ".pancreas-rstn-probe"))
    pytest.skip("no folder here refuses writes to this user (root without a read-only sysfs)")


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    image, labels = make_phantom((128, 128, 64), seed=4321)  # the demo model's own scale: no resampling
    folder = tmp_path_factory.mktemp("ct")
    return write_image(image, folder / "ct.nii.gz"), write_image(labels, folder / "labels.nii.gz")


def _segment(*args: str) -> int:
    return main(["segment", *args])


# ---------------------------------------------------------------------------------------------- 1. outputs first
@pytest.mark.parametrize("name,expected", [("seg", "no extension"), ("seg.xyz", ".xyz"), ("seg.mhd", ".mhd")])
def test_a_bad_output_name_is_refused_before_the_model_or_the_image_is_read(tmp_path, capsys, name, expected):
    missing_input = tmp_path / "does_not_exist.nii.gz"  # were the image read first, this would be the error
    rc = _segment(str(missing_input), "-o", str(tmp_path / name), "--model", str(tmp_path / "no_model"))
    err = capsys.readouterr().err
    assert rc == 1 and "The output (-o)" in err and expected in err and ".nii.gz" in err
    assert "DICOM series" not in err  # output advice, not input advice


@pytest.mark.parametrize("option", ["-o", "--probability", "--save-iterations"])
def test_existing_outputs_are_refused_up_front(tmp_path, capsys, ct, option):
    taken = tmp_path / ("rounds" if option == "--save-iterations" else "taken.nii.gz")
    if option == "--save-iterations":
        taken.mkdir()
        (taken / "mine.txt").write_text("keep")
    else:
        taken.write_text("keep")
    args = [str(ct[0]), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(tmp_path / "no_model")]
    if option == "-o":
        args[2] = str(taken)
    else:
        args += [option, str(taken)]
    assert _segment(*args) == 1
    err = capsys.readouterr().err
    assert str(taken) in err and "--overwrite" in err and "Model folder not found" not in err


@pytest.mark.parametrize("option", ["-o", "--probability", "--save-iterations"])
def test_a_read_only_output_folder_is_refused_up_front_without_traceback(tmp_path, ct, option):
    locked = _unwritable_folder(tmp_path)
    args = [str(ct[0]), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(demo_model_dir())]
    target = locked / ("rounds" if option == "--save-iterations" else "out.nii.gz")
    if option == "-o":
        args[2] = str(target)
    else:
        args += [option, str(target)]
    proc = subprocess.run([sys.executable, "-m", "PancreasRSTNLib", "segment", *args], capture_output=True,
                          text=True, cwd=ROOT)
    if locked.is_relative_to(tmp_path):
        locked.chmod(stat.S_IRWXU)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot write into" in proc.stderr and "round 0" not in proc.stderr  # nothing ran
    assert not (tmp_path / "seg.nii.gz").exists()


# ---------------------------------------------------------------------------------------------- 3. all or nothing
def _always_empty_model(folder):
    models = tiny_models(views="Z")
    for model in models.values():
        for head in (model.coarse_model.head, model.fine_model.head):
            head.bias.data.fill_(-20.0)
            head.weight.data.zero_()
    meta = default_metadata("silent", "pancreas")
    meta["spacing"] = [2.65625, 2.65625, 3.0]
    return save_model_package(folder, models, meta)


def test_an_empty_prediction_leaves_no_file_at_all(tmp_path, capsys, ct):
    rounds = tmp_path / "rounds"
    rc = _segment(str(ct[0]), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(_always_empty_model(tmp_path / "m")),
                  "--save-iterations", str(rounds), "--probability", str(tmp_path / "p.nii.gz"))
    assert rc == 1 and "nothing was written" in capsys.readouterr().err
    assert not rounds.exists() and not (tmp_path / "seg.nii.gz").exists() and not (tmp_path / "p.nii.gz").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staged leftovers either


def test_ctrl_c_removes_what_the_run_made_and_nothing_else(tmp_path, capsys, ct, monkeypatch):
    import PancreasRSTNLib.app.commands.segment as segment

    rounds = tmp_path / "rounds"
    rounds.mkdir()
    (rounds / "notes.txt").write_text("the user's")
    calls = []

    def interrupted(*args, **kwargs):  # the user presses Ctrl-C while round 1 is being written
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return save_round(*args, **kwargs)

    save_round = segment.save_round
    monkeypatch.setattr(segment, "save_round", interrupted)
    rc = _segment(str(ct[0]), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(demo_model_dir()),
                  "--save-iterations", str(rounds), "--overwrite")
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in rounds.iterdir()) == ["notes.txt"]
    assert not (tmp_path / "seg.nii.gz").exists()
    assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]


def test_a_successful_run_publishes_every_output(tmp_path, capsys, ct):
    rc = _segment(str(ct[0]), "-o", str(tmp_path / "out" / "seg.nii.gz"), "--model", str(demo_model_dir()),
                  "--save-iterations", str(tmp_path / "rounds"), "--probability", str(tmp_path / "p.mha"),
                  "--max-iter", "1", "--json", "--threads", "1")
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["threads"] == 1
    assert (tmp_path / "out" / "seg.nii.gz").is_file() and (tmp_path / "p.mha").is_file()
    assert sorted(p.name for p in (tmp_path / "rounds").iterdir())[0] == "round_00_mask.nii.gz"
    assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]


# ---------------------------------------------------------------------------------------------- 4. --json errors
def test_json_mode_prints_an_error_object(tmp_path, capsys):
    rc = _segment(str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "seg.nii.gz"), "--model",
                  str(demo_model_dir()), "--json")
    assert rc == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] == "input_image" and "Input not found" in error["message"]
    assert error["fix"].startswith("Give a NIfTI")


# ---------------------------------------------------------------------------------------------- 5. progress
class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_one_progress_convention():
    assert progress_mode(stream=_Stream(True)) == "bar"
    assert progress_mode(stream=_Stream(False)) == "lines"
    assert progress_mode(quiet=True, stream=_Stream(True)) == "quiet"


def test_piped_commands_print_lines_not_bar_frames(tmp_path):
    """`train` drew tqdm frames into a pipe; `demo` and `evaluate` were silent per case."""
    data = tmp_path / "data"
    for i in range(2):
        image, label = make_phantom((40, 40, 12), seed=80 + i)
        (data / "images").mkdir(parents=True, exist_ok=True)
        (data / "labels").mkdir(exist_ok=True)
        sitk.WriteImage(image, str(data / "images" / f"c{i}.nii.gz"))
        sitk.WriteImage(label, str(data / "labels" / f"c{i}.nii.gz"))
    run = [sys.executable, "-m", "PancreasRSTNLib"]
    train = subprocess.run([*run, "train", "--data", str(data), "-o", str(tmp_path / "t"), "--views", "Z",
                            "--backbone", "light", "--widths", "4,8", "--steps", "S:4,I:4,J:4", "--checkpoint-every",
                            "0"], capture_output=True, text=True, cwd=ROOT)
    assert train.returncode == 0, train.stderr
    assert "\r" not in train.stderr and re.search(r"train Z: epoch [\d.]+, step \d+/12", train.stderr)
    evaluate = subprocess.run([*run, "evaluate", "--model", str(tmp_path / "t" / "model"), "--data", str(data),
                               "-o", str(tmp_path / "e"), "--max-iter", "1"], capture_output=True, text=True, cwd=ROOT)
    assert evaluate.returncode == 0, evaluate.stderr
    assert "\r" not in evaluate.stderr and "[1/2] c0: DSC" in evaluate.stderr and "[2/2] c1: DSC" in evaluate.stderr
    quiet = subprocess.run([*run, "train", "--data", str(data), "-o", str(tmp_path / "q"), "--views", "Z",
                            "--backbone", "light", "--widths", "4,8", "--steps", "S:2", "--checkpoint-every", "0",
                            "--quiet"], capture_output=True, text=True, cwd=ROOT)
    # --quiet silences progress; warnings (e.g. no tensorboard installed: CSV logs only) still reach the user
    assert quiet.returncode == 0 and [line for line in quiet.stderr.splitlines()
                                      if not line.startswith("WARNING:")] == []


def test_a_bar_on_a_terminal_and_nothing_when_quiet(capsys):
    with Progress("bar", total=10, fraction=False) as bar:
        bar.advance(3)
        bar.line("a step worth a line")
    err = capsys.readouterr().err
    assert "a step worth a line" in err and "3/10" in err
    with Progress("quiet") as bar:
        bar.update(0.5, "coarse")
        bar.line("not shown")
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------- 6. help and info
def _subparsers(parser):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_help_shows_defaults_and_every_train_option_is_explained():
    commands = _subparsers(build_parser())
    text = re.sub(r"\s+", " ", commands["segment"].format_help())
    assert "--thr THR stop when the inter-round DSC reaches this (default: 0.99)" in text
    for action in commands["train"]._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"train {action.option_strings[0]} has no help text"


def test_model_json_keeps_names_not_the_training_machines_paths(tmp_path):
    data = tmp_path / "data"
    image, label = make_phantom((40, 40, 12), seed=90)
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    sitk.WriteImage(image, str(data / "images" / "c0.nii.gz"))
    sitk.WriteImage(label, str(data / "labels" / "c0.nii.gz"))
    first = tmp_path / "first"
    assert main(["train", "--data", str(data), "-o", str(first), "--views", "Z", "--backbone", "light", "--widths",
                 "4,8", "--steps", "S:1", "--checkpoint-every", "0", "--quiet"]) == 0
    second = tmp_path / "second"
    assert main(["train", "--data", str(data), "-o", str(second), "--views", "Z", "--backbone", "light", "--widths",
                 "4,8", "--steps", "S:1", "--checkpoint-every", "0", "--quiet", "--init", str(first / "model")]) == 0
    text = (second / "model" / "model.json").read_text()
    assert str(tmp_path) not in text
    meta = json.loads(text)
    assert meta["training"]["config"]["init"] == "model" and meta["training"]["data"]["source"] == "data"


# ---------------------------------------------------------------------------------------------- 9. no silent nonsense
def test_nonsense_options_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "ct.nii.gz", "-o", "x.nii.gz", "--batch-size", "0"])
    assert exit_info.value.code == 2 and "not a positive whole number" in capsys.readouterr().err
    rc = main(["phantom", "-o", str(tmp_path / "ct.nii.gz"), "--multi-label"])
    assert rc == 1 and "no --labels file" in capsys.readouterr().err
    assert not (tmp_path / "ct.nii.gz").exists()


def test_phantom_and_benchmark_read_shape_the_same_way(tmp_path):
    """x (columns) x y (rows) x z (slices) for both; the benchmark's canonical volume is rows x cols x slices."""
    from PancreasRSTNLib.app.commands.benchmark import _canonical_shape

    assert main(["phantom", "-o", str(tmp_path / "p.nii.gz"), "--shape", "30x20x8"]) == 0
    assert sitk.ReadImage(str(tmp_path / "p.nii.gz")).GetSize() == (30, 20, 8)
    assert _canonical_shape("30x20x8") == (20, 30, 8)


# ---------------------------------------------------------------------------------------------- 8. benchmark
def test_benchmark_extras_follow_the_shape_and_the_speedup_has_a_spread(tmp_path, capsys):
    report_path = tmp_path / "r.json"
    rc = main(["benchmark", "--device", "cpu", "--backbone", "light", "--widths", "4,8", "--shape", "24x24x8",
               "--repeats", "1", "--max-iter", "1", "--reference", "sample", "--training-steps", "1",
               "--json", str(report_path), "--quiet"])
    assert rc == 0
    report = json.loads(report_path.read_text())
    assert [s["length"] for s in report["scaling"]] == [4, 8, 16] and report["scaling"][0]["inplane"] == 24
    assert {t["size"] for t in report["training"]} == {24}  # not 512 x 512 for a 24 x 24 volume
    spread = report["speedup_spread"]
    assert spread["min"] <= spread["median"] <= spread["max"] and isinstance(report["speedup_noisy"], bool)
    assert "speed-up spread (min / median / max)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- 10. packaging
def test_demo_outputs_are_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/demo_out/" in ignored and "/pancreas_rstn_demo/" in ignored


def test_no_traceback_for_the_segment_of_a_folder_without_dicom(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    proc = subprocess.run([sys.executable, "-m", "PancreasRSTNLib", "segment", str(folder), "-o",
                           str(tmp_path / "s.nii.gz"), "--model", str(demo_model_dir())], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "No DICOM series" in proc.stderr
    assert np.all([not p.name.startswith(".") for p in tmp_path.iterdir()])
