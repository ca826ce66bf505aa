"""Issue 21, classes 1-3: an input is never written, an output is whole or absent, and SIGTERM/SIGHUP clean up
like Ctrl-C. Each test names its class; each failed before the fix."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ROOT, demo_model_dir
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.io.volume_io import write_image
from PancreasRSTNLib.phantom import make_phantom

CT_SIZE = (64, 64, 32)  # the demo model finds the phantom's pancreas at this size, in seconds


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    return write_image(make_phantom(CT_SIZE, seed=21)[0], folder / "ct.nii.gz")


@pytest.fixture
def ct(tmp_path, ct_file):
    """A fresh copy of the CT that a test may try to destroy."""
    return shutil.copy(ct_file, tmp_path / "a.nii.gz")


def _json_error(capsys):
    return json.loads(capsys.readouterr().out)["error"]


# ---------------------------------------------------------------------------------------------- class 1
@pytest.mark.parametrize("spelling", ["same", "dot-dot", "symlink", "hardlink"])
def test_class1_an_output_that_is_the_input_is_refused_and_the_ct_is_kept(tmp_path, capsys, ct, spelling):
    """`segment a.nii.gz -o a.nii.gz --overwrite` replaced the CT with its mask, however the path was spelt."""
    before = ct.read_bytes()
    (tmp_path / "sub").mkdir()
    target = {"same": ct, "dot-dot": tmp_path / "sub" / ".." / ct.name, "symlink": tmp_path / "link.nii.gz",
              "hardlink": tmp_path / "hard.nii.gz"}[spelling]
    if spelling == "symlink":
        target.symlink_to(ct)
    elif spelling == "hardlink":
        os.link(ct, target)
    base = ["segment", str(ct), "--model", str(demo_model_dir()), "--overwrite", "--max-iter", "1", "--json"]
    for outputs in (["-o", str(target)], ["-o", str(tmp_path / "seg.nii.gz"), "--probability", str(target)]):
        assert main(base + outputs) == 1, outputs
        error = _json_error(capsys)
        assert error["kind"] == "output_path" and "is the input" in error["message"] and error["fix"]
        assert ct.read_bytes() == before
    assert not (tmp_path / "seg.nii.gz").exists()


def test_class1_two_outputs_that_are_one_file_are_refused(tmp_path, capsys, ct):
    model = str(demo_model_dir())
    same = tmp_path / "x.nii.gz"
    assert main(["segment", str(ct), "-o", str(same), "--probability", str(same), "--model", model]) == 1
    assert "are the same file" in capsys.readouterr().err
    rounds = tmp_path / "rounds"
    assert main(["segment", str(ct), "-o", str(rounds / "round_00_mask.nii.gz"), "--save-iterations", str(rounds),
                 "--model", model]) == 1
    assert "has the name of one of its files" in capsys.readouterr().err
    assert main(["phantom", "-o", str(same), "--labels", str(tmp_path / "." / "x.nii.gz")]) == 1
    assert "are the same file" in capsys.readouterr().err
    assert not same.exists() and not rounds.exists()


def test_class1_an_output_beside_the_round_files_is_fine(tmp_path, capsys, ct):
    """Not an overlap: -o in the --save-iterations folder under a name the round files never use."""
    out = tmp_path / "out"
    assert main(["segment", str(ct), "-o", str(out / "seg.nii.gz"), "--save-iterations", str(out), "--model",
                 str(demo_model_dir()), "--max-iter", "1", "--json", "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (out / "seg.nii.gz").is_file() and (out / "round_00_mask.nii.gz").is_file()
    assert summary["precision"] == "fp32"  # class 9: the summary says which precision ran


def test_class1_a_cohort_output_folder_may_not_be_or_hold_its_inputs(tmp_path, capsys, ct_file):
    cohort = tmp_path / "cts"
    cohort.mkdir()
    for name in ("p1", "p2"):
        shutil.copy(ct_file, cohort / f"{name}.nii.gz")
    before = {p.name: p.read_bytes() for p in cohort.iterdir()}
    model = str(demo_model_dir())
    for out in (cohort, tmp_path, cohort / "p1.nii.gz" / ".."):
        assert main(["segment", str(cohort), "-o", str(out), "--model", model, "--overwrite", "--json"]) == 1
        error = _json_error(capsys)
        assert error["kind"] == "output_path" and "may not be or contain an input" in error["message"], error
    dicom_case = tmp_path / "dicom_cohort" / "case1"
    dicom_case.mkdir(parents=True)
    from helpers import ct_image, write_dicom_series

    write_dicom_series(ct_image(shape_xyz=(16, 16, 4)), dicom_case)
    assert main(["segment", str(tmp_path / "dicom_cohort"), "-o", str(dicom_case / "seg"), "--model", model]) == 1
    assert "lies inside" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in cohort.iterdir()} == before
    assert not (dicom_case / "seg").exists()


# ---------------------------------------------------------------------------------------------- class 2
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_class2_a_cut_short_or_empty_volume_file_is_caught(tmp_path, suffix, dtype):
    """What a full disk leaves: an empty file, or one cut short. The header alone can look fine."""
    from PancreasRSTNLib.io.outputs import check_volume_file, write_volume

    image = sitk.GetImageFromArray((np.random.default_rng(0).random((20, 30, 40)) * 200).astype(dtype))
    image.SetSpacing((0.7, 0.8, 2.0))
    whole = write_volume(image, tmp_path / f"whole{suffix}")
    assert check_volume_file(whole, image) is None
    data = whole.read_bytes()
    for name, content in (("empty", b""), ("short", data[: len(data) * 3 // 4])):
        broken = tmp_path / f"{name}{suffix}"
        broken.write_bytes(content)
        assert check_volume_file(broken, image) is not None, (name, suffix)


def _write_nothing(image, path, *args, **kwargs):  # a writer that "succeeds" but leaves an empty file
    open(path, "wb").close()


def test_class2_a_failed_write_is_an_error_and_nothing_is_published(tmp_path, capsys, ct, monkeypatch):
    """SimpleITK's NIfTI writer reports a full disk only on stderr: the run said success over 0-byte files. The
    fault is injected here (a writer that leaves an empty file); the next test uses a real full file system."""
    monkeypatch.setattr(sitk, "WriteImage", _write_nothing)
    out = tmp_path / "out"
    rc = main(["segment", str(ct), "-o", str(out / "seg.nii.gz"), "--probability", str(out / "p.nrrd"),
               "--model", str(demo_model_dir()), "--max-iter", "1", "--json"])
    error = _json_error(capsys)
    assert rc == 1 and error["kind"] == "output_path" and "empty (0 bytes)" in error["message"]
    assert not out.exists() or not list(out.iterdir())


@pytest.fixture
def full_disk(tmp_path):
    """A real, nearly full file system (a 256 KiB tmpfs holding a filler file, 8 KiB left): needs root and a mount
    namespace that allows it, else skipped."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root on Linux (the fault-injection test covers the logic)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        stats = os.statvfs(mount)
        (mount / ".filler").write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 8192))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_class2_a_full_disk_is_a_named_error_with_nothing_published(full_disk, capsys, ct, suffix):
    rc = main(["segment", str(ct), "-o", str(full_disk / f"seg{suffix}"), "--probability",
               str(full_disk / f"p{suffix}"), "--model", str(demo_model_dir()), "--max-iter", "1", "--json"])
    error = _json_error(capsys)
    assert rc == 1 and error["kind"] == "output_path" and "Nothing was written there" in error["message"]
    assert [p.name for p in full_disk.iterdir()] == [".filler"]


# ---------------------------------------------------------------------------------------------- class 3
def _default_interrupt() -> None:
    """In the child: Ctrl-C's default action, as in a terminal. A suite started in the background by a
    non-interactive shell ignores SIGINT, every child inherits that, and Python then never raises
    KeyboardInterrupt (a SIGINT test of that run saw the cohort finish as if no signal had come)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args, tmp_path):
    return subprocess.Popen([sys.executable, "-m", "PancreasRSTNLib", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=_default_interrupt if os.name == "posix" else None)


def _wait_for(predicate, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run ended before the signal could be sent: {proc.communicate()}")
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)])
def test_class3_sigterm_and_sighup_clean_up_like_ctrl_c(tmp_path, ct, signum):
    """`timeout` and schedulers send SIGTERM: the run died at once (exit -15) and left its staged round folder."""
    big = write_image(make_phantom((128, 128, 64), seed=3)[0], tmp_path / "big.nii.gz")  # a run of several rounds
    rounds = tmp_path / "rounds"
    proc = _start(["segment", str(big), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(demo_model_dir()),
                   "--save-iterations", str(rounds), "--max-iter", "10", "--thr", "1", "--device", "cpu"], tmp_path)
    _wait_for(lambda: any(p.name.startswith(".rounds.partial-") and any(p.iterdir())
                          for p in tmp_path.iterdir() if p.is_dir()), proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    assert f"interrupted ({name})" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "big.nii.gz"]  # nothing staged is left


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_class3_an_interrupted_cohort_keeps_its_finished_cases_and_says_so(tmp_path, ct_file, signum):
    """Class 9 too: after Ctrl-C a cohort said everything was removed, but finished cases are (rightly) kept."""
    cohort = tmp_path / "cts"
    cohort.mkdir()
    for i in range(10):  # enough cases that the signal lands while some are still to do, even on a fast machine
        write_image(make_phantom(CT_SIZE, seed=40 + i)[0], cohort / f"c{i}.nii.gz")
    out = tmp_path / "out"
    proc = _start(["segment", str(cohort), "-o", str(out), "--model", str(demo_model_dir()), "--device", "cpu",
                   "--max-iter", "6", "--thr", "1"], tmp_path)
    _wait_for(lambda: (out / ".rows" / "c0.json").is_file(), proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "is kept" in err and "run the same command again" in err and "was removed" not in err
    assert (out / "c0.nii.gz").is_file() and not [p for p in out.rglob("*") if ".partial-" in p.name]
