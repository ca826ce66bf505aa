"""Expert-labelled axial slices stored as display-windowed 8-bit JPEGs, turned into HU training samples.

Why: besides two full NIH volumes, the real data hold 264 single slices of 61 other NIH patients, but only as
JPEGs of a display-windowed image (no HU). Their window is recovered from the slices of the cases whose DICOM
we have (``fit_display_window``); a linear map then gives HU inside that window. Below it, fat and air both
read 0, so these slices can only train a model whose HU window lies inside the display window.

Layout: ``images/<CASE>-1<SSS>.jpg`` and ``masks/<same name>`` (mask binarised at 127), 512x512, in the NIH
array orientation (rows posterior -> anterior, columns right -> left), ``SSS`` the 1-based slice number.
A slice has no neighbours: its 3-slice input repeats it (``triplet`` replicates the single slice).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..engine.resampling import Resampling
from ..errors import DatasetError

NAME_PATTERN = re.compile(r"^(?P<case>.+)-1(?P<slice>\d{3})\.jpe?g$", re.IGNORECASE)
#: NIH Pancreas-CT pixels measure 0.66-0.98 mm; the JPEGs carry no spacing, so the middle of that range is
#: assumed (the in-plane scale augmentation of +-20 % covers the rest).
ASSUMED_PIXEL_SPACING_MM = 0.82
#: Grey levels used to fit the window: clear of the clipped ends and of the JPEG noise around them.
FIT_GREY_RANGE = (20, 235)
#: Grey levels at the bottom of the display window that are JPEG noise over clipped tissue (fat, air) rather
#: than water: measured 0-7 over pixels below -10 HU in cases 0001/0002.
FLOOR_GREY = 8


@dataclass(frozen=True)
class JpegSlice:
    name: str  # file stem, e.g. PANCREAS_0001-1106
    case: str  # e.g. PANCREAS_0001
    slice_number: int  # 1-based
    grey: np.ndarray  # (rows, cols) uint8
    mask: np.ndarray  # (rows, cols) bool

    @property
    def slice_index(self) -> int:
        """0-based index of the slice in its DICOM series."""
        return self.slice_number - 1


@dataclass(frozen=True)
class WindowFit:
    """A display window ``grey = 255 * (HU - low) / (high - low)``, clipped to [0, 255]."""

    low: float
    high: float
    rms_grey: float  # residual over the fitted (unclipped) pixels, in grey levels
    correlation: float
    pixels: int

    def to_hu(self, grey: np.ndarray, floor_hu: float | None = None) -> np.ndarray:
        """HU inside the window. Values at or below ``low`` are unknown: they come out as ``low``, or, with
        ``floor_hu``, every grey level up to FLOOR_GREY (the clipped end plus JPEG noise) becomes ``floor_hu``
        (e.g. -100 HU: in the abdomen most of it is fat)."""
        hu = (self.low + grey.astype(np.float32) * np.float32((self.high - self.low) / 255.0)).astype(np.float32)
        if floor_hu is not None:
            hu[grey <= FLOOR_GREY] = np.float32(floor_hu)
        return hu

    def to_dict(self) -> dict:
        return {"low": round(self.low, 2), "high": round(self.high, 2), "rms_grey": round(self.rms_grey, 2),
                "correlation": round(self.correlation, 5), "pixels": self.pixels}


def _read_grey(path: Path) -> np.ndarray:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DatasetError(f"Cannot read the JPEG slice {path}: {str(exc).strip().splitlines()[-1]}.") from exc
    array = sitk.GetArrayFromImage(image)
    return array[..., 0] if array.ndim == 3 else array  # grey stored as RGB: R = G = B


def read_jpeg_slices(folder: str | Path, exclude_cases: Iterable[str] = ()) -> list[JpegSlice]:
    """Every slice of ``folder`` (images/ + masks/), except those of ``exclude_cases`` (held-out patients)."""
    folder = Path(folder)
    images, masks = folder / "images", folder / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise DatasetError(f"{folder} is not a JPEG slice folder: it needs images/ and masks/ with matching names.")
    excluded = set(exclude_cases)
    out = []
    for path in sorted(images.iterdir()):
        match = NAME_PATTERN.match(path.name)
        if match is None:
            continue
        case = match.group("case")
        if case in excluded:
            continue
        mask_path = masks / path.name
        if not mask_path.is_file():
            raise DatasetError(f"The slice {path.name} has no mask in {masks}. Add it or remove the slice.")
        grey = _read_grey(path)
        mask = _read_grey(mask_path) > 127
        if grey.shape != mask.shape:
            raise DatasetError(f"The slice {path.name} ({grey.shape}) and its mask ({mask.shape}) differ in size.")
        out.append(JpegSlice(path.stem, case, int(match.group("slice")), grey, mask))
    if not out:
        raise DatasetError(f"No slice named like CASE-1SSS.jpg in {images}.")
    return out


def fit_display_window(grey: np.ndarray, hu: np.ndarray) -> WindowFit:
    """Fit ``grey = a * HU + b`` on the pixels between the clipped ends (robust: 5 rounds of dropping pixels
    beyond 3 scaled MADs, which JPEG ringing at edges produces)."""
    grey = np.asarray(grey, float).ravel()
    hu = np.asarray(hu, float).ravel()
    if grey.shape != hu.shape:
        raise DatasetError(f"A JPEG slice ({grey.size} pixels) and its HU slice ({hu.size} pixels) differ in size.")
    used = (grey > FIT_GREY_RANGE[0]) & (grey < FIT_GREY_RANGE[1])
    if used.sum() < 100:
        raise DatasetError("Too few unclipped pixels to fit the display window of a JPEG slice.")
    g, h = grey[used], hu[used]
    design = np.stack([h, np.ones_like(h)], axis=1)
    keep = np.ones(g.size, bool)
    coef = np.zeros(2)
    for _ in range(5):
        coef = np.linalg.lstsq(design[keep], g[keep], rcond=None)[0]
        residual = g - design @ coef
        scale = 1.4826 * np.median(np.abs(residual[keep])) or 1.0
        keep = np.abs(residual) < 3 * scale
    a, b = coef
    if a <= 0:
        raise DatasetError("The JPEG slice does not follow its HU slice (negative slope): wrong slice or case?")
    residual = g[keep] - design[keep] @ coef
    return WindowFit(low=float(-b / a), high=float((255 - b) / a), rms_grey=float(np.sqrt(np.mean(residual**2))),
                     correlation=float(np.corrcoef(g[keep], h[keep])[0, 1]), pixels=int(keep.sum()))


def fit_window_from_volumes(slices: Sequence[JpegSlice], volumes: Mapping[str, np.ndarray]) -> dict:
    """Fit the display window on every slice whose case has an HU volume (canonical, rows x cols x slices).

    Returns the per-slice fits, the pooled window (median of the per-slice ends) and its residual."""
    per_slice = {}
    for s in slices:
        volume = volumes.get(s.case)
        if volume is None:
            continue
        if not 0 <= s.slice_index < volume.shape[2] or volume.shape[:2] != s.grey.shape:
            raise DatasetError(f"{s.name}: slice {s.slice_number} or size {s.grey.shape} does not fit the volume "
                               f"of {s.case} ({volume.shape}).")
        per_slice[s.name] = fit_display_window(s.grey, volume[:, :, s.slice_index])
    if not per_slice:
        raise DatasetError("No JPEG slice belongs to a case with an HU volume: the display window cannot be fitted.")
    fits = list(per_slice.values())
    pooled = WindowFit(low=float(np.median([f.low for f in fits])), high=float(np.median([f.high for f in fits])),
                       rms_grey=float(np.sqrt(np.mean([f.rms_grey**2 for f in fits]))),
                       correlation=float(np.min([f.correlation for f in fits])), pixels=sum(f.pixels for f in fits))
    return {"window": pooled, "slices": per_slice}


def slice_sample(s: JpegSlice, window: WindowFit, model_spacing: Sequence[float],
                 pixel_spacing: float = ASSUMED_PIXEL_SPACING_MM, floor_hu: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The slice as a one-slice canonical volume at the model's in-plane spacing: (HU int16, mask uint8), both
    (rows, cols, 1); the image linearly resampled, the mask resampled as a fraction and thresholded at 0.5.
    ``floor_hu``: see ``WindowFit.to_hu``."""
    hu = np.rint(window.to_hu(s.grey, floor_hu)).astype(np.int16)[:, :, None]
    resampling = Resampling.between(hu.shape, (pixel_spacing, pixel_spacing, float(model_spacing[2])),
                                     model_spacing)
    image = resampling.to_model(hu, default=window.low, dtype=np.int16)
    mask = resampling.mask_to_model(s.mask[:, :, None]).astype(np.uint8)
    return image, mask


def check_window_inside(display: WindowFit, model_low: float, model_high: float, tolerance_hu: float = 2.0,
                        floor_hu: float | None = None) -> None:
    """The slices carry no information below ``display.low``: a model whose HU window starts lower would see
    fat and air at the wrong intensity in them, unless the clipped floor is mapped to a chosen value
    (``floor_hu``, e.g. fat)."""
    if floor_hu is None and model_low < display.low - tolerance_hu:
        raise DatasetError(
            f"The model's HU window starts at {model_low:g} HU, below the JPEG slices' display window "
            f"({display.low:.1f} to {display.high:.1f} HU), where fat and air both read 0. Train with an HU window "
            f"inside it (e.g. --hu-window 0,250), or leave the JPEG slices out."
        )
