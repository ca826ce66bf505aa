"""Reading, validating and writing volumes with SimpleITK: NIfTI, NRRD, MHA and DICOM series folders."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputImageError, OutputExistsError, OutputPathError
from .dicom import dicom_series as dicom_series  # re-exported: the cohort and tests list a folder's series
from .dicom import read_series
from .header_spacing import check_header_spacing
from .itk_messages import itk_output
from .outputs import write_volume

log = logging.getLogger(__name__)
SUPPORTED_HINT = ("Give a NIfTI (.nii/.nii.gz), NRRD (.nrrd), MetaImage (.mha/.mhd) file or a folder with one "
                  "DICOM series.")


class InputVolume(NamedTuple):
    """A volume as read, and what the reader had to say about it (several series, a gap read anyway, ITK's
    warnings in our words)."""

    image: sitk.Image
    warnings: list[str]


def read_input(path: str | Path, allow_missing_slices: bool = False) -> InputVolume:
    """Read a volume file or a folder's DICOM series (``dicom.read_series``), refusing a header with a zero or
    negative spacing and a series with missing slices (unless ``allow_missing_slices``)."""
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"Input not found: {path}. {SUPPORTED_HINT}")
    warnings: list[str] = []
    with itk_output() as itk:
        try:
            if path.is_dir():
                image, warnings = read_series(path, allow_missing_slices)
            else:
                check_header_spacing(path)
                image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
            raise InputImageError(f"Cannot read {path}: {first_line}. The file may be corrupt. {SUPPORTED_HINT}") \
                from exc
    said_gap = any("gap" in w for w in warnings)  # our words for what ITK calls non-uniform sampling
    warnings += [m for m in itk.messages if not (said_gap and "not evenly spaced" in m)]
    return InputVolume(image, warnings)


def read_image(path: str | Path, allow_missing_slices: bool = False) -> sitk.Image:
    """``read_input``'s image; its warnings are logged (callers that report them use ``read_input``)."""
    image, warnings = read_input(path, allow_missing_slices)
    for warning in warnings:
        log.warning("%s: %s", Path(path).name, warning)
    return image


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
    dim, thin, shape = image.GetDimension(), sum(1 for n in size if n < 3), "x".join(map(str, size))
    if dim != 3 or thin:
        what = ("2-D (a single slice or slab)" if dim == 2 or (dim == 3 and thin == 1) else f"{dim}-D" if dim != 3
                else f"only {shape} voxels, too small along {thin} axes")
        raise InputImageError(
            f"The image is {what} (size {shape}). RSTN needs a 3-D CT volume with at least 3 voxels along every "
            "axis: load the whole series, not a single slice."
        )
    spacing = image.GetSpacing()
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputImageError(f"The image's voxel spacing ({', '.join(f'{s:g}' for s in spacing)}) mm is not "
                              "positive along every axis. Fix the image's spacing before segmenting.")
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
    """Refuse to replace a user's file unless asked to, and to write into a folder that is not there: folders are
    made when a run's outputs are checked (``OutputPlan``), so a missing one was removed during the run, and
    making it again would hide that the files written there before are gone."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists. Choose another output path or pass --overwrite to replace it.")
    if not path.parent.is_dir():
        raise OutputPathError(f"Cannot write {path}: its folder {path.parent} does not exist (was it removed during "
                              "the run?). Choose an output folder that stays in place, and run again.")
    return path


def write_image(image: sitk.Image, path: str | Path, overwrite: bool = False) -> Path:
    """Write a volume whole or not at all (``outputs.write_volume``: written, checked, then put in place)."""
    return write_volume(image, check_can_write(path, overwrite))
