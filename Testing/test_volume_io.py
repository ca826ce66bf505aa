"""Reading every supported format, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ct_image, write_dicom_series
from PancreasRSTNLib.errors import InputImageError, OutputExistsError
from PancreasRSTNLib.io.volume_io import dicom_series, read_image, validate_ct, write_image


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_formats_round_trip(tmp_path, ext):
    img = ct_image()
    path = write_image(img, tmp_path / f"ct{ext}")
    back = read_image(path)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    assert np.allclose(back.GetOrigin(), img.GetOrigin()) and np.allclose(back.GetSpacing(), img.GetSpacing())


def test_dicom_series_folder(tmp_path):
    img = ct_image(shape_xyz=(16, 16, 5))
    back = read_image(write_dicom_series(img, tmp_path / "dicom", prefix="slice"))
    assert back.GetSize() == img.GetSize()
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    assert np.allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-4)


def test_folder_with_two_series_reads_the_one_with_most_slices(tmp_path):
    """The documented rule: most files, then the smallest series UID."""
    folder = tmp_path / "mixed"
    write_dicom_series(ct_image(shape_xyz=(16, 16, 4), seed=1), folder, series_uid="1.2.3.9", prefix="a")
    write_dicom_series(ct_image(shape_xyz=(16, 16, 6), seed=2), folder, series_uid="1.2.3.10", prefix="b")
    assert [(uid, len(files)) for uid, files in dicom_series(folder)] == [("1.2.3.10", 6), ("1.2.3.9", 4)]
    assert read_image(folder).GetSize() == (16, 16, 6)
    write_dicom_series(ct_image(shape_xyz=(16, 16, 6), seed=3), folder, series_uid="1.2.3.11", prefix="c")
    assert dicom_series(folder)[0][0] == "1.2.3.10"  # a tie: the smallest UID (compared as text)


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
