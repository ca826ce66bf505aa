"""Reading every supported format, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ct_image
from PancreasRSTNLib.errors import InputImageError, OutputExistsError
from PancreasRSTNLib.volume_io import read_image, validate_ct, write_image


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_formats_round_trip(tmp_path, ext):
    img = ct_image()
    path = write_image(img, tmp_path / f"ct{ext}")
    back = read_image(path)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    assert np.allclose(back.GetOrigin(), img.GetOrigin()) and np.allclose(back.GetSpacing(), img.GetSpacing())


def test_dicom_series_folder(tmp_path):
    img = ct_image(shape_xyz=(16, 16, 5))
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.12345"
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        for tag, value in {
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k)))),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0008|0060": "CT",
            "0028|1052": "0",
            "0028|1053": "1",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    back = read_image(folder)
    assert back.GetSize() == img.GetSize()
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))


def test_unreadable_and_missing(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(InputImageError, match="Cannot read .*broken.nii.gz"):
        read_image(bad)
    with pytest.raises(InputImageError, match="not found"):
        read_image(tmp_path / "nope.nrrd")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputImageError, match="No DICOM series"):
        read_image(tmp_path / "empty")


def test_two_d_image_is_refused():
    img2d = sitk.GetImageFromArray(np.zeros((32, 32), np.int16))
    with pytest.raises(InputImageError, match="2-D"):
        validate_ct(img2d)
    single_slice = ct_image(shape_xyz=(32, 32, 1))
    with pytest.raises(InputImageError, match="2-D"):
        validate_ct(single_slice)


def test_nan_is_refused():
    img = ct_image(dtype=np.float32)
    a = sitk.GetArrayFromImage(img)
    a[2, 3, 4] = np.nan
    bad = sitk.GetImageFromArray(a)
    with pytest.raises(InputImageError, match="1 NaN"):
        validate_ct(bad)


@pytest.mark.parametrize(
    "values,reason",
    [
        (lambda a: a * 0 + 5, "nearly constant"),
        (lambda a: (a - a.min()) / (a.max() - a.min()), "normalised"),
        (lambda a: a + 1024, "no values below 0"),
    ],
    ids=["constant", "normalised", "shifted-or-mr"],
)
def test_non_ct_is_refused(values, reason):
    a = sitk.GetArrayFromImage(ct_image(dtype=np.float32))
    img = sitk.GetImageFromArray(values(a).astype(np.float32))
    with pytest.raises(InputImageError, match=reason):
        validate_ct(img)
    validate_ct(img, allow_non_ct=True)  # the user may override the HU check


def test_real_ct_passes_and_its_unrescaled_copy_does_not(shared_dir):
    img = read_image(shared_dir / "data" / "totalseg_ct_abdomen_3mm.nii.gz")
    validate_ct(img)  # a real CT in HU is accepted
    shifted = sitk.Cast(img, sitk.sitkFloat32) + 1024.0  # the same CT stored without its rescale intercept
    with pytest.raises(InputImageError, match="no values below 0"):
        validate_ct(shifted)


def test_write_refuses_to_overwrite(tmp_path):
    path = write_image(ct_image(), tmp_path / "out.nii.gz")
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_image(ct_image(seed=1), path)
    assert path.read_bytes() == before
    write_image(ct_image(seed=1), path, overwrite=True)
    assert path.read_bytes() != before
