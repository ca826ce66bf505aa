"""A person's prior and region of interest, from images, boxes and Slicer ROI files, onto the CT's canonical grid.

Why a module of its own: the command line (``segment --prior/--roi``) and the Slicer panel ("Refine from
segment", "Limit to ROI") build the same ``Guidance`` from the same kinds of input, with the same refusals, each
made before any work: a prior on another grid than the CT, an empty prior, a label the prior does not hold, a
region that misses the image.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputImageError, OptionsError
from ..io.geometry import CanonicalGeometry, array_to_canonical, grid_differences
from .guidance import DrawnSlices, Guidance
from .slice_fill import contoured_slices, fill_between_slices, is_sparse_contouring

Box = tuple[float, float, float, float, float, float]  # x0, x1, y0, y1, z0, z1 in LPS mm


def _require_same_grid(image: sitk.Image, ct: CanonicalGeometry, what: str) -> None:
    differences = grid_differences(image, ct)
    if differences:
        raise InputImageError(f"{what} lies on another grid than the CT: {'; '.join(differences)}. Give a mask on "
                              "the CT's own grid (in Slicer, export the segment with the CT as reference volume; "
                              "elsewhere, resample it onto the CT with nearest-neighbour interpolation).")


def _canonical(image: sitk.Image, ct: CanonicalGeometry) -> np.ndarray:
    return np.ascontiguousarray(array_to_canonical(sitk.GetArrayViewFromImage(image), ct))


class PriorInput(NamedTuple):
    prior: np.ndarray  # float32 in [0, 1], canonical, on the CT's grid
    report: dict
    drawn: DrawnSlices | None  # a sparse prior's contoured slices, which the results keep


def prior_from_image(image: sitk.Image, ct: CanonicalGeometry, label: int | None = None,
                     fill: bool = True) -> PriorInput:
    """A prior on the CT's canonical grid from a label map (``label``: the value that marks the organ; None: the
    one non-zero value it holds) or a probability map in [0, 1]. A binary prior contoured on some axial slices
    only is filled between them first (``slice_fill``) unless ``fill`` is False, and its contoured slices are
    returned to be kept as drawn."""
    _require_same_grid(image, ct, "The prior")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputImageError("The prior has several components per voxel (a colour or vector image). Give a "
                              "label map or a probability map.")
    values = _canonical(image, ct)
    if not np.isfinite(values).all():
        raise InputImageError("The prior holds NaN or infinite values. Give a label map or a probability map.")
    integral = np.issubdtype(values.dtype, np.integer) or bool(np.all(values == np.round(values)))
    report: dict = {"kind": "label map" if integral else "probability map"}
    drawn = None
    if integral:
        present = [int(v) for v in np.unique(values) if v != 0]
        if label is None:
            if len(present) > 1:
                raise OptionsError(f"The prior holds several labels ({', '.join(map(str, present[:8]))}). Pick the "
                                   "organ's with --prior-label N.")
            label = present[0] if present else 1
        elif label not in present:
            raise OptionsError(f"--prior-label {label} is not in the prior (it holds "
                               f"{', '.join(map(str, present[:8])) or 'only 0'}). Give one of its labels.")
        prior = values == label
        report["label"] = int(label)
        if not prior.any():
            raise InputImageError("The prior is empty: no voxel of the organ. Give a mask that holds the organ, "
                                  "or run without --prior.")
        if fill:
            filled_prior, filled = fill_between_slices(prior, ct.canonical_spacing, axis=2)
            report.update(filled)
            if is_sparse_contouring(filled):  # the person drew these slices: they are kept as drawn
                drawn = DrawnSlices.of(prior, contoured_slices(prior, axis=2))
                report["drawn_slices_kept"] = len(drawn.indices)
            prior = filled_prior
        prior = prior.astype(np.float32)
    else:
        if values.min() < 0 or values.max() > 1:
            raise InputImageError(f"The prior's values run from {values.min():g} to {values.max():g}: neither "
                                  "labels nor probabilities. Give a label map or a probability map in [0, 1].")
        prior = values.astype(np.float32)
    report["voxels"] = int((prior >= 0.5).sum())
    report["volume_ml"] = round(report["voxels"] * float(np.prod(ct.spacing)) / 1000.0, 3)
    return PriorInput(prior, report, drawn)


def roi_from_box(box: Sequence[float], ct: CanonicalGeometry) -> np.ndarray:
    """The CT voxels whose centres lie in an axis-aligned box (x0, x1, y0, y1, z0, z1) in LPS mm, canonical."""
    lo = np.array([min(box[0], box[1]), min(box[2], box[3]), min(box[4], box[5])])
    hi = np.array([max(box[0], box[1]), max(box[2], box[3]), max(box[4], box[5])])
    direction = np.array(ct.direction).reshape(3, 3)
    origin, spacing = np.array(ct.origin), np.array(ct.spacing)
    inside = np.zeros(ct.size[::-1], dtype=bool)  # SimpleITK array order (k, j, i)
    # index -> LPS: origin + direction @ (spacing * index); the box's corners bound the indices to look at
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    index = np.linalg.solve(direction * spacing, (corners - origin).T).T
    start = np.clip(np.floor(index.min(axis=0)).astype(int), 0, np.array(ct.size))
    stop = np.clip(np.ceil(index.max(axis=0)).astype(int) + 1, 0, np.array(ct.size))
    if np.any(stop <= start):
        return array_to_canonical(inside, ct).copy()
    i, j = (np.arange(start[a], stop[a], dtype=np.float64) for a in (0, 1))
    ii, jj = np.meshgrid(i, j, indexing="xy")  # (j, i)
    for k in range(start[2], stop[2]):  # one slab of points at a time: bounded memory for any box
        points = np.stack([ii, jj, np.full_like(ii, k)], axis=-1) * spacing @ direction.T + origin
        inside[k, start[1]:stop[1], start[0]:stop[0]] = np.all((points >= lo - 1e-6) & (points <= hi + 1e-6), axis=-1)
    return np.ascontiguousarray(array_to_canonical(inside, ct))


def roi_from_box_reported(box: Sequence[float], ct: CanonicalGeometry) -> tuple[np.ndarray, dict]:
    """``roi_from_box`` with what a summary says of it (the box, its voxels)."""
    roi = roi_from_box(box, ct)
    return roi, {"kind": "box", "lps_mm": [round(float(v), 3) for v in box], "voxels": int(roi.sum())}


def roi_from_image(image: sitk.Image, ct: CanonicalGeometry) -> np.ndarray:
    """A region given as a mask on the CT's grid (any non-zero voxel is inside)."""
    _require_same_grid(image, ct, "The region of interest")
    return _canonical(image, ct) != 0


def box_from_markups(path: Path) -> Box:
    """The LPS box of a Slicer markups ROI file (.mrk.json): its centre and size (a rotated ROI gives the box
    around its corners)."""
    try:
        markups = json.loads(Path(path).read_text())["markups"]
        roi = next(m for m in markups if m.get("type") == "ROI")
        centre, size = np.array(roi["center"], dtype=float), np.array(roi["size"], dtype=float)
        orientation = np.array(roi.get("orientation", np.eye(3).ravel()), dtype=float).reshape(3, 3)
    except (OSError, ValueError, KeyError, StopIteration, TypeError) as exc:
        raise OptionsError(f"--roi {path}: not a readable Slicer markups ROI file ({exc}). Save the ROI from Slicer "
                           "as .mrk.json, or give x0,x1,y0,y1,z0,z1 in LPS mm.") from exc
    corners = np.array([[sx, sy, sz] for sx in (-.5, .5) for sy in (-.5, .5) for sz in (-.5, .5)]) * size
    points = corners @ orientation.T + centre
    if str(markups[0].get("coordinateSystem", roi.get("coordinateSystem", "LPS"))).upper() == "RAS":
        points[:, :2] *= -1
    lo, hi = points.min(axis=0), points.max(axis=0)
    return (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_box(text: str) -> Box | None:
    """x0,x1,y0,y1,z0,z1 (LPS mm) -> a box; None when ``text`` is not six numbers (it is then a file)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 6 and all(re.fullmatch(_NUMBER, p) for p in parts):
        box = tuple(float(p) for p in parts)
        if box[0] == box[1] or box[2] == box[3] or box[4] == box[5]:
            raise OptionsError(f"--roi {text}: the box is flat. Give x0,x1,y0,y1,z0,z1 with x0 != x1, y0 != y1, "
                               "z0 != z1 (LPS mm).")
        return box  # type: ignore[return-value]
    return None


def roi_from_argument(text: str, ct: CanonicalGeometry) -> tuple[np.ndarray, dict]:
    """``--roi``: six numbers (an LPS box in mm), a Slicer markups ROI (.mrk.json) or a mask on the CT's grid."""
    box = parse_box(text)
    if box is None:
        path = Path(text)
        if not path.exists():
            raise OptionsError(f"--roi {text}: neither x0,x1,y0,y1,z0,z1 (LPS mm) nor an existing file. Give a box "
                               "or a Slicer ROI (.mrk.json) or a mask file on the CT's grid.")
        if path.name.endswith(".json"):
            box = box_from_markups(path)
        else:
            from ..io.volume_io import read_image

            return roi_from_image(read_image(path), ct), {"kind": "mask", "file": str(path)}
    return roi_from_box_reported(box, ct)


def guidance_from_images(ct: CanonicalGeometry, prior: sitk.Image | None = None, prior_label: int | None = None,
                         roi: np.ndarray | None = None, roi_report: dict | None = None) -> Guidance:
    """The run's ``Guidance`` on the CT's canonical grid, checked (empty prior, region off the image)."""
    prior_array, report, drawn = (None, {}, None)
    if prior is not None:
        prior_array, prior_report, drawn = prior_from_image(prior, ct, prior_label)
        report["prior"] = prior_report
    if roi is not None:
        report["roi"] = roi_report or {"kind": "mask", "voxels": int(roi.sum())}
    guidance = Guidance(prior_array, roi, report, drawn)
    guidance.check(ct.canonical_shape)
    return guidance
