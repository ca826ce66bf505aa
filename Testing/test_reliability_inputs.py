"""Issue 21, classes 4-5: a model package that lies is refused on load, verify and install; an input that would be
read silently wrong (a DICOM gap, a zero or negative spacing, several series) is refused or named. Each test names
its class; each failed before the fix."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ct_image, demo_model_dir, write_dicom_series
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.errors import InputImageError, ModelPackageError
from PancreasRSTNLib.io.model_package import load_model_package, verify_model_package
from PancreasRSTNLib.io.user_models import install_model, list_models
from PancreasRSTNLib.io.volume_io import read_image, write_image
from PancreasRSTNLib.phantom import make_phantom

NIH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nih_pancreas_ct" / "images" / "PANCREAS_0001"


# ---------------------------------------------------------------------------------------------- class 4
def _lying_package(tmp_path, name, change):
    folder = tmp_path / name
    shutil.copytree(demo_model_dir(), folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["name"] = name
    change(meta, folder)
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def _outside(meta, folder):
    (folder / "model_X.safetensors").rename(folder.parent / "outside_X.safetensors")
    meta["files"]["X"]["path"] = "../outside_X.safetensors"


def _absolute(meta, folder):
    meta["files"]["X"]["path"] = str((folder / "model_X.safetensors").resolve())


LIES = {
    "zero spacing": lambda m, f: m.update(spacing=[0, 2.65625, 3.0]),
    "text spacing": lambda m, f: m.update(spacing="abc"),
    "missing spacing": lambda m, f: m.pop("spacing"),
    "inverted HU window": lambda m, f: m.update(hu_window={"low": 240, "high": -100}),
    "unknown HU window key": lambda m, f: m.update(hu_window={"low": -100, "high": 240, "gamma": 2}),
    "weight path outside": _outside,
    "absolute weight path": _absolute,
    "label value 300": lambda m, f: m["organ"].update(label_value=300),
    "views not a list": lambda m, f: m.update(views="XYZ"),
    "sha256 not hex": lambda m, f: m["files"]["Y"].update(sha256="zz"),
}


@pytest.mark.parametrize("lie", list(LIES))
def test_class4_a_lying_model_json_is_refused_by_load_verify_install_and_segment(tmp_path, capsys, lie):
    package = _lying_package(tmp_path, "liar", LIES[lie])
    with pytest.raises(ModelPackageError, match="breaks the model.json schema"):
        load_model_package(package)
    assert main(["models", "verify", str(package)]) == 1
    err = capsys.readouterr().err
    assert "breaks the model.json schema" in err and "Traceback" not in err
    user = tmp_path / "user_models"
    with pytest.raises(ModelPackageError):
        install_model(package, user_root=user)
    assert not [p for p in user.iterdir() if not p.name.startswith(".")] if user.exists() else True
    ct = write_image(make_phantom((64, 64, 32), seed=1)[0], tmp_path / "ct.nii.gz")
    assert main(["segment", str(ct), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(package), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["kind"] == "model"


def test_class4_a_zip_with_a_symbolic_link_is_refused(tmp_path):
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in demo_model_dir().iterdir():
            z.write(f, f"m/{f.name}")
        link = zipfile.ZipInfo("m/extra.safetensors")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
    user = tmp_path / "user_models"
    with pytest.raises(ModelPackageError, match="symbolic link"):
        install_model(archive, user_root=user)
    assert list_models(user, include_bundled=False) == []


@pytest.mark.skipif(os.name != "posix", reason="symbolic links need POSIX here")
def test_class4_a_weight_file_linked_outside_the_package_is_refused(tmp_path):
    package = tmp_path / "linked"
    shutil.copytree(demo_model_dir(), package)
    outside = tmp_path / "elsewhere.safetensors"
    (package / "model_Z.safetensors").rename(outside)
    (package / "model_Z.safetensors").symlink_to(outside)
    with pytest.raises(ModelPackageError, match="outside the package"):
        verify_model_package(package)
    with pytest.raises(ModelPackageError, match="outside the package"):
        install_model(package, user_root=tmp_path / "user_models")


def test_class4_a_package_without_spacing_is_named_not_run_silently(tmp_path, capsys):
    """A package that states `spacing: null` runs every CT at its own spacing, and the summary says so."""
    package = _lying_package(tmp_path, "native", lambda m, f: m.update(spacing=None))
    ct = write_image(make_phantom((128, 128, 64), seed=1)[0], tmp_path / "ct.nii.gz")  # the model's own scale
    assert main(["segment", str(ct), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(package),
                 "--max-iter", "1"]) == 0
    assert "the model records no training spacing" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- class 5
def _nih_slices(folder, first=100, count=8):
    series = next(NIH.glob("*/*"))
    folder.mkdir()
    for i in range(first, first + count):
        shutil.copy(series / f"1-{i:03d}.dcm", folder / f"1-{i:03d}.dcm")
    return folder


@pytest.mark.skipif(not NIH.is_dir(), reason="../shared/data/nih_pancreas_ct is absent (only in the developers' "
                    "checkout); the synthetic series test covers the same rule")
def test_class5_a_real_dicom_series_with_a_missing_and_an_unreadable_slice_is_refused(tmp_path, capsys):
    folder = _nih_slices(tmp_path / "series")
    (folder / "1-104.dcm").unlink()  # missing
    (folder / "1-106.dcm").write_bytes((folder / "1-106.dcm").read_bytes()[:1000])  # unreadable
    with pytest.raises(InputImageError) as info:
        read_image(folder)
    message = str(info.value)
    assert "1-103.dcm and 1-105.dcm are 2.00 mm apart" in message and "1-106.dcm" in message
    assert "--allow-missing-slices" in info.value.fix
    from PancreasRSTNLib.io.volume_io import read_input

    image, warnings = read_input(folder, allow_missing_slices=True)
    assert image.GetSize()[2] == 6 and any("average over the gap" in w for w in warnings)
    assert main(["segment", str(folder), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(demo_model_dir()),
                 "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] == "input_image" and "gap" in error["message"]
    whole = _nih_slices(tmp_path / "whole", count=5)
    image, warnings = read_input(whole)
    assert image.GetSize()[2] == 5 and abs(image.GetSpacing()[2] - 1.0) < 1e-3 and warnings == []


def test_class5_a_synthetic_dicom_series_with_a_gap_is_refused(tmp_path):
    folder = write_dicom_series(ct_image(shape_xyz=(16, 16, 8)), tmp_path / "series")
    (folder / "IM0003.dcm").unlink()
    with pytest.raises(InputImageError, match=r"IM0002.dcm and IM0004.dcm are 5.00 mm apart \(1 slice missing\)"):
        read_image(folder)


def _nifti_with_pixdim(path, axis, value):
    image = ct_image()
    sitk.WriteImage(image, str(path))
    raw = bytearray(path.read_bytes())
    raw[76 + 4 * axis: 80 + 4 * axis] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("value", [0.0, -2.5])
def test_class5_a_zero_or_negative_spacing_in_the_header_is_refused(tmp_path, value):
    """SimpleITK read a zero pixdim as 1 mm and a negative one as a flip, without a word."""
    nifti = _nifti_with_pixdim(tmp_path / "ct.nii", 3, value)
    with pytest.raises(InputImageError, match=r"gives the voxel spacing \(0.9, 0.9, " + f"{value:g}"):
        read_image(nifti)
    mha = tmp_path / "ct.mha"
    sitk.WriteImage(ct_image(), str(mha))
    mha.write_bytes(re.sub(rb"ElementSpacing = [^\n]*", f"ElementSpacing = 0.9 0.9 {value:g}".encode(),
                           mha.read_bytes(), count=1))
    with pytest.raises(InputImageError, match="every spacing must be a positive number"):
        read_image(mha)


def test_class5_several_series_in_one_folder_are_named_even_on_a_tie(tmp_path, capsys):
    folder = tmp_path / "mixed"
    for uid, prefix in (("1.2.3.9", "a"), ("1.2.3.10", "b")):
        image = sitk.GetImageFromArray(np.full((6, 16, 16), 3, np.int16))  # not HU: the run will refuse it
        write_dicom_series(image, folder, series_uid=uid, prefix=prefix)
    assert main(["segment", str(folder), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(demo_model_dir())]) == 1
    err = capsys.readouterr().err
    error_line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert "does not look like a CT" in error_line and "1.2.3.9" in error_line and "1.2.3.10" in error_line
    from PancreasRSTNLib.io.volume_io import read_input

    _, warnings = read_input(folder)
    assert any("tie" in w and "1.2.3.9" in w and "1.2.3.10" in w for w in warnings)


def test_class5_an_output_folder_removed_during_the_run_is_a_named_error(tmp_path, capsys, monkeypatch):
    import PancreasRSTNLib.app.commands.segment as segment

    ct = write_image(make_phantom((64, 64, 32), seed=1)[0], tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    original = segment.save_round

    def remove_the_folder(r, *args, **kwargs):  # someone deletes the output folder while round 1 runs
        if r.index == 1:
            shutil.rmtree(out)
        return original(r, *args, **kwargs)

    monkeypatch.setattr(segment, "save_round", remove_the_folder)
    rc = main(["segment", str(ct), "-o", str(out / "seg.nii.gz"), "--save-iterations", str(out / "rounds"),
               "--model", str(demo_model_dir()), "--max-iter", "2", "--thr", "1", "--json"])
    error = json.loads(capsys.readouterr().out)["error"]
    assert rc == 1 and error["kind"] == "output_path" and "removed during the run" in error["message"]
