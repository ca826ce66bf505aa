"""The voxel spacing a volume file's header states, read before SimpleITK reads the file.

Why: SimpleITK mends a bad spacing without a word. A NIfTI ``pixdim`` of 0 becomes 1 mm, a negative one becomes
a flip of the axis, and a MetaImage's negative ``ElementSpacing`` loses its sign; the mask would then be written on
a grid the header never meant. So the raw header's spacing is checked here, and a zero, negative or non-finite
value is refused, naming the file and the values.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
from pathlib import Path

from ..errors import InputImageError


def header_spacing(path: Path) -> tuple[float, ...] | None:
    """The spacing in the header of a NIfTI, NRRD or MetaImage file (None: another format, or not found)."""
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            with (gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")) as f:
                return _nifti(f.read(540))
        if name.endswith((".nrrd", ".nhdr")):
            return _nrrd(_head(path))
        if name.endswith((".mha", ".mhd")):
            return _meta(_head(path))
    except (OSError, EOFError, struct.error, ValueError):
        return None  # unreadable here: SimpleITK's read says why
    return None


def check_header_spacing(path: Path) -> None:
    spacing = header_spacing(path)
    if spacing is not None and not all(math.isfinite(s) and s > 0 for s in spacing):
        shown = ", ".join(f"{s:g}" for s in spacing)
        raise InputImageError(
            f"The header of {path} gives the voxel spacing ({shown}) mm: every spacing must be a positive number "
            "(SimpleITK would read a zero as 1 mm and a negative one as a flip, and the mask would not line up with "
            "the CT). Fix the header's spacing (e.g. re-save the image from 3D Slicer with the right spacing).",
            fix="Fix the header's spacing (e.g. re-save the image from 3D Slicer with the right spacing).")


def _head(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(1 << 16).decode("latin-1")


def _nifti(header: bytes) -> tuple[float, ...] | None:
    for order in ("<", ">"):
        size = struct.unpack(order + "i", header[:4])[0]
        if size == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            pixdim = struct.unpack(order + "8f", header[76:108])
        elif size == 540:
            dims = struct.unpack(order + "8q", header[16:80])
            pixdim = struct.unpack(order + "8d", header[104:168])
        else:
            continue
        n = max(1, min(int(dims[0]), 3))
        return tuple(float(v) for v in pixdim[1:1 + n])
    return None


def _nrrd(text: str) -> tuple[float, ...] | None:
    header = text.split("\n\n", 1)[0]
    directions = re.search(r"^space directions:(.*)$", header, re.MULTILINE)
    if directions:
        vectors = re.findall(r"\(([^)]*)\)", directions.group(1))
        return tuple(math.sqrt(sum(float(v) ** 2 for v in vec.split(","))) for vec in vectors) or None
    spacings = re.search(r"^spacings:(.*)$", header, re.MULTILINE)
    if spacings:
        return tuple(float(v) for v in spacings.group(1).split() if v.lower() != "nan") or None
    return None


def _meta(text: str) -> tuple[float, ...] | None:
    found = re.search(r"^ElementSpacing\s*=(.*)$", text, re.MULTILINE)
    return tuple(float(v) for v in found.group(1).split()) if found else None
