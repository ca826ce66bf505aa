"""DICOM series folders: which series is read, and whether its slices are all there.

The choice rule: the series with the most files (slices); on a tie, the smallest series UID. The other series are
named in a warning (``series_note``), for a single ``segment`` as for a cohort.

Why the slice check: ITK reads a series with a missing or unreadable slice as a volume one slice shorter whose
slice spacing is the average over the gap, so the mask no longer lines up with the CT, and it says so only on
stderr. Here a gap between consecutive slice positions (more than 1.5x the median step) is refused, naming the
files on either side of it and any file of the folder that could not be read; ``allow_missing_slices`` reads it
anyway, with a warning that says what that costs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputImageError

#: A step between consecutive slices larger than this times the median step is a gap.
GAP_FACTOR = 1.5


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` file, or a file of any name with the DICOM preamble's ``DICM`` at byte 128."""
    if not path.is_file() or path.name.startswith("."):
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_series(folder: str | Path) -> list[tuple[str, list[str]]]:
    """The DICOM series of a folder as (series instance UID, files), in the order of the choice rule: the series
    with the most files (slices) first; on a tie, the smallest UID."""
    reader = sitk.ImageSeriesReader()
    series = [(uid, list(reader.GetGDCMSeriesFileNames(str(folder), uid)))
              for uid in reader.GetGDCMSeriesIDs(str(folder))]
    return sorted(series, key=lambda s: (-len(s[1]), s[0]))


def series_note(series: list[tuple[str, list[str]]]) -> str | None:
    """The warning for a folder of several series: which one is read, by which rule, and every other one."""
    if len(series) < 2:
        return None
    uid, files = series[0]
    listed = "; ".join(f"{u} ({len(f)} files)" for u, f in series)
    tied = [u for u, f in series[1:] if len(f) == len(files)]
    why = (f"a tie with {', '.join(tied)} at {len(files)} files, so the smallest UID was taken" if tied else
           "the one with most files")
    return (f"{len(series)} DICOM series in the folder; read {uid} ({why}). All: {listed}. To read another one, put "
            "it alone in a folder")


def unreadable_files(folder: Path, series: list[tuple[str, list[str]]]) -> list[str]:
    """Files of the folder that look like DICOM but belong to no series (GDCM could not read them)."""
    known = {Path(f).name for _, files in series for f in files}
    return sorted(p.name for p in folder.iterdir() if p.name not in known and p.name.upper() != "DICOMDIR"
                  and is_dicom_file(p))


def slice_gaps(reader: sitk.ImageSeriesReader, files: list[str]) -> tuple[list[str], float]:
    """The gaps of a series read with ``MetaDataDictionaryArrayUpdateOn``: one text per gap (the files on either
    side, its size and the slices it lacks), and the median step in mm."""
    if len(files) < 3 or not reader.HasMetaDataKey(0, "0020|0037"):
        return [], 0.0
    cosines = [float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")]
    normal = np.cross(cosines[:3], cosines[3:6])
    try:
        along = np.array([float(np.dot([float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")], normal))
                          for i in range(len(files))])
    except (RuntimeError, ValueError):  # a slice without a readable position: nothing to measure
        return [], 0.0
    steps = np.abs(np.diff(along))
    median = float(np.median(steps))
    gaps = []
    for i in np.flatnonzero(steps > GAP_FACTOR * median):
        lost = max(1, round(steps[i] / median) - 1) if median > 0 else 1
        gaps.append(f"{Path(files[i]).name} and {Path(files[i + 1]).name} are {steps[i]:.2f} mm apart ({lost} "
                    f"slice{'s' if lost > 1 else ''} missing)")
    return gaps, median


def read_series(folder: Path, allow_missing_slices: bool = False) -> tuple[sitk.Image, list[str]]:
    """The folder's series chosen by the rule, checked for missing slices; returns (image, warnings)."""
    series = dicom_series(folder)
    if not series:
        raise InputImageError(f"No DICOM series found in folder {folder}. Give a NIfTI (.nii/.nii.gz), NRRD (.nrrd), "
                              "MetaImage (.mha/.mhd) file or a folder with one DICOM series.")
    warnings = [note] if (note := series_note(series)) else []
    files = series[0][1]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    gaps, median = slice_gaps(reader, files)
    unreadable = unreadable_files(folder, series)
    lost = (f"{len(unreadable)} file(s) of the folder could not be read as DICOM: {', '.join(unreadable[:10])}"
            + (" ..." if len(unreadable) > 10 else "")) if unreadable else ""
    if gaps:
        problem = (f"The DICOM series in {folder} has {len(gaps)} gap(s) between slices that are otherwise "
                   f"{median:.2f} mm apart: {'; '.join(gaps[:5])}" + (f". {lost}" if lost else ""))
        if not allow_missing_slices:
            fix = ("Restore the missing slices, or pass --allow-missing-slices to segment it anyway (the slice "
                   "spacing is then averaged over the gap).")
            raise InputImageError(f"{problem}. Read as it is, the volume would be shorter and its slice spacing "
                                  f"stretched, so the mask would not line up with the CT. {fix}", fix=fix)
        warnings.append(f"{problem}. Read anyway (--allow-missing-slices): the slice spacing "
                        f"({image.GetSpacing()[2]:.3f} mm) is the average over the gap, so the mask may not line up "
                        "with the CT near it")
    elif lost:
        warnings.append(f"{lost}; they were left out (no gap between the slices read)")
    return image, warnings
