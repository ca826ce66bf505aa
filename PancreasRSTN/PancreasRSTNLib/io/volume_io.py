"""Reading, validating and writing volumes with SimpleITK: NIfTI, NRRD, MHA and DICOM series folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputImageError, OutputExistsError

SUPPORTED_HINT = ("Give a NIfTI (.nii/.nii.gz), NRRD (.nrrd), MetaImage (.mha/.mhd) file or a folder with one "
                  "DICOM series.")


def read_image(path: str | Path) -> sitk.Image:
    """Read a volume file or the largest DICOM series in a folder."""
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"Input not found: {path}. {SUPPORTED_HINT}")
    try:
        if path.is_dir():
            return _read_dicom_folder(path)
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputImageError(f"Cannot read {path}: {first_line}. The file may be corrupt. {SUPPORTED_HINT}") from exc


def dicom_series(folder: str | Path) -> list[tuple[str, list[str]]]:
    """The DICOM series of a folder as (series instance UID, files), in the order of the choice rule: the series
    with the most files (slices) first; on a tie, the smallest UID."""
    reader = sitk.ImageSeriesReader()
    series = [(uid, list(reader.GetGDCMSeriesFileNames(str(folder), uid)))
              for uid in reader.GetGDCMSeriesIDs(str(folder))]
    return sorted(series, key=lambda s: (-len(s[1]), s[0]))


def _read_dicom_folder(folder: Path) -> sitk.Image:
    """The folder's series chosen by ``dicom_series``'s rule (the CT is usually the series with most slices)."""
    series = dicom_series(folder)
    if not series:
        raise InputImageError(f"No DICOM series found in folder {folder}. {SUPPORTED_HINT}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series[0][1])
    return reader.Execute()


def validate_ct(image: sitk.Image, allow_non_ct: bool = False) -> None:
    """Refuse what RSTN cannot segment, with the problem and the fix in the message.

    Checks: 3-D, one component, at least 3 voxels along every axis, finite values, and (unless
    ``allow_non_ct``) an intensity range that looks like Hounsfield units."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputImageError(
            f"The image has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector image). "
            "RSTN needs a single-channel CT volume in Hounsfield units."
        )
    size = image.GetSize()
    if image.GetDimension() != 3 or min(size) < 3:
        raise InputImageError(
            f"The image is 2-D (size {'x'.join(map(str, size))}). RSTN needs a 3-D CT volume with at least 3 "
            "voxels along every axis: load the whole series, not a single slice."
        )
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        n_bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputImageError(
            f"The image holds {n_bad} NaN or infinite voxel values. Fix or mask them (e.g. set them to -1024 HU) "
            "before segmenting."
        )
    if allow_non_ct:
        return
    sample = array.reshape(-1)[:: max(1, array.size // 2_000_000)].astype(np.float32)
    p01, p99 = np.percentile(sample, [1, 99])
    lo, hi = float(sample.min()), float(sample.max())
    problem = None
    if hi <= 10 and lo >= -10 and hi > lo:
        problem = f"its values lie in [{lo:g}, {hi:g}], which looks normalised, not Hounsfield units"
    elif hi - lo < 50:
        problem = f"it is nearly constant (values {lo:g} to {hi:g})"
    elif p01 >= 0:
        problem = (
            f"it has no values below 0 (1st percentile {p01:g}); CT shows air and fat below 0 HU. It may be an MR "
            "image or a CT stored without its rescale slope/intercept (e.g. shifted by +1024)"
        )
    elif p01 < -3000 or p99 > 6000:
        problem = f"its values ({p01:g} to {p99:g} between the 1st and 99th percentile) are outside the CT range"
    if problem:
        raise InputImageError(
            f"This does not look like a CT in Hounsfield units: {problem}. Give a CT in HU, or pass "
            "--allow-non-ct (Slicer: 'Skip CT check') if you are sure."
        )


def check_can_write(path: str | Path, overwrite: bool) -> Path:
    """Refuse to replace a user's file unless asked to; create the parent folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists. Choose another output path or pass --overwrite to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_image(image: sitk.Image, path: str | Path, overwrite: bool = False) -> Path:
    path = check_can_write(path, overwrite)
    try:
        sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as exc:
        from ..errors import OutputPathError

        raise OutputPathError(f"Cannot write the output {path}: {str(exc).strip().splitlines()[-1]}. Check the "
                              "folder's free space and permissions; volumes are written as .nii.gz, .nii, .nrrd "
                              "or .mha.") from exc
    return path
