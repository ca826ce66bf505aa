"""The canonical array layout and the lossless round trip between any input grid and it.

The reference weights were trained on arrays ``img[row, col, slice]`` where the row index runs from the
patient's back to front (row 0 posterior), the column index from the patient's right to left, and the slice
index from head to feet. In LPS (ITK) terms the three canonical axes point toward **A**, **L** and **I**.

``to_canonical`` only permutes and flips axes (each image axis goes to the canonical axis its direction cosine
is closest to), so nothing is resampled and ``from_canonical`` restores the exact input grid, voxel for voxel.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

# Unit vectors (LPS) toward which canonical axes 0, 1, 2 point: anterior, left, inferior.
CANONICAL_AXES_LPS = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
CANONICAL_LAYOUT = ("array[row, col, slice]; rows posterior->anterior, cols right->left, slices superior->inferior "
                    "(LPS axes A, L, I)")


@dataclass(frozen=True)
class CanonicalGeometry:
    """Everything needed to map canonical arrays back onto the input grid exactly.

    ``permutation[c]`` is the ITK index axis (0=i, 1=j, 2=k) that canonical axis ``c`` comes from and
    ``flipped[c]`` tells whether it runs the opposite way.
    """

    size: tuple[int, int, int]  # ITK order (i, j, k)
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # row-major 3x3, as SimpleITK gives it
    permutation: tuple[int, int, int]
    flipped: tuple[bool, bool, bool]

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        return tuple(self.size[m] for m in self.permutation)  # type: ignore[return-value]

    @property
    def canonical_spacing(self) -> tuple[float, float, float]:
        return tuple(self.spacing[m] for m in self.permutation)  # type: ignore[return-value]

    def reference_image(self, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
        """An empty image on the input grid (used to copy its geometry onto results)."""
        image = sitk.Image([int(s) for s in self.size], pixel_type)
        self.apply_to(image)
        return image

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def canonical_box_to_index(self, offset: tuple[int, int, int],
                               shape: tuple[int, int, int]) -> tuple[list[int], list[int]]:
        """Start index (ITK i, j, k) and size of the input-grid box that a canonical box covers."""
        start = [0, 0, 0]
        size = [0, 0, 0]
        for c, m in enumerate(self.permutation):
            n = self.size[m]
            start[m] = n - int(offset[c]) - int(shape[c]) if self.flipped[c] else int(offset[c])
            size[m] = int(shape[c])
        return start, size


def _axis_assignment(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Best one-to-one map from canonical axes to image axes by absolute direction cosines."""
    # dots[c, m]: how much image axis m points along canonical axis c
    dots = CANONICAL_AXES_LPS @ direction
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(dots[c, p[c]]) for c in range(3)))
    flipped = tuple(bool(dots[c, best[c]] < 0) for c in range(3))
    return tuple(best), flipped  # type: ignore[return-value]


def geometry_of(image: sitk.Image) -> CanonicalGeometry:
    if image.GetDimension() != 3:
        from ..errors import InputImageError

        raise InputImageError(f"Expected a 3-D image, got {image.GetDimension()}-D.")
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    permutation, flipped = _axis_assignment(direction)
    return CanonicalGeometry(
        size=tuple(int(s) for s in image.GetSize()),
        spacing=tuple(float(s) for s in image.GetSpacing()),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
        permutation=permutation,
        flipped=flipped,
    )


def array_to_canonical(array_kji: np.ndarray, geometry: CanonicalGeometry) -> np.ndarray:
    """SimpleITK's array (k, j, i) -> canonical (rows, cols, slices). Returns a view where possible."""
    ijk = array_kji.transpose(2, 1, 0)
    out = ijk.transpose(geometry.permutation)
    flips = tuple(c for c in range(3) if geometry.flipped[c])
    return np.flip(out, axis=flips) if flips else out


def canonical_to_array(canonical: np.ndarray, geometry: CanonicalGeometry) -> np.ndarray:
    """Inverse of ``array_to_canonical``: canonical -> SimpleITK (k, j, i) array (a view where possible)."""
    flips = tuple(c for c in range(3) if geometry.flipped[c])
    out = np.flip(canonical, axis=flips) if flips else canonical
    inverse = np.argsort(geometry.permutation)
    return out.transpose(inverse).transpose(2, 1, 0)


def to_canonical(image: sitk.Image) -> tuple[np.ndarray, CanonicalGeometry]:
    """Image -> (contiguous canonical array, geometry for the way back)."""
    geometry = geometry_of(image)
    # Always a copy: a view would dangle once SimpleITK frees the image.
    array = sitk.GetArrayViewFromImage(image)
    return np.array(array_to_canonical(array, geometry), order="C", copy=True), geometry


def from_canonical(canonical: np.ndarray, geometry: CanonicalGeometry) -> sitk.Image:
    """Canonical array -> image on the exact input grid (size, spacing, origin, direction)."""
    if tuple(canonical.shape) != geometry.canonical_shape:
        raise ValueError(f"canonical array shape {canonical.shape} != expected {geometry.canonical_shape}")
    if canonical.dtype == bool:
        canonical = canonical.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(canonical_to_array(canonical, geometry)))
    return geometry.apply_to(image)


def canonical_box_to_image(sub: np.ndarray, offset: tuple[int, int, int], geometry: CanonicalGeometry) -> sitk.Image:
    """Place a canonical sub-volume (e.g. saliency over the fine stage's region) on the input grid: the
    result's voxels coincide exactly with input voxels (same spacing and direction, shifted origin)."""
    start, _ = geometry.canonical_box_to_index(offset, sub.shape)
    flips = tuple(c for c in range(3) if geometry.flipped[c])
    data = np.flip(sub, axis=flips) if flips else sub
    data = data.transpose(np.argsort(geometry.permutation)).transpose(2, 1, 0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data))
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    image.SetOrigin(geometry.reference_image().TransformIndexToPhysicalPoint([int(s) for s in start]))
    return image


#: how far two headers may differ and still describe one grid: the round-off of the file formats (NIfTI stores
#: float32), never another acquisition or a resampled copy
GRID_SPACING_RTOL = 1e-3
GRID_ORIGIN_MIN_MM = 1e-2  # or 1 % of the finest spacing, if that is more
GRID_DIRECTION_ATOL = 1e-3


def grid_differences(image: sitk.Image, reference: sitk.Image | CanonicalGeometry, whose: str = "the CT's"
                     ) -> list[str]:
    """How ``image``'s voxel grid differs from ``reference``'s (empty: the same grid), in words for an error
    message: ``"size 64x64x30 vs the CT's 64x64x40"``. The one comparison of grids, for a label against its
    image, a prediction against its label and a person's prior against the CT."""
    if image.GetDimension() != 3:
        return [f"it is {image.GetDimension()}-D, not 3-D"]
    if isinstance(reference, CanonicalGeometry):
        size, spacing, origin, direction = reference.size, reference.spacing, reference.origin, reference.direction
    else:
        size, spacing = reference.GetSize(), reference.GetSpacing()
        origin, direction = reference.GetOrigin(), reference.GetDirection()

    def shown(values: tuple[float, ...], digits: int) -> str:
        return str(tuple(round(float(v), digits) for v in values))

    found = []
    if tuple(int(s) for s in image.GetSize()) != tuple(int(s) for s in size):
        found.append(f"size {'x'.join(map(str, image.GetSize()))} vs {whose} {'x'.join(map(str, size))}")
    if not np.allclose(image.GetSpacing(), spacing, rtol=GRID_SPACING_RTOL, atol=0):
        found.append(f"spacing {shown(image.GetSpacing(), 4)} vs {whose} {shown(spacing, 4)} mm")
    origin_tolerance = max(GRID_ORIGIN_MIN_MM, 0.01 * min(spacing))
    if not np.allclose(image.GetOrigin(), origin, atol=origin_tolerance, rtol=0):
        found.append(f"origin {shown(image.GetOrigin(), 2)} vs {whose} {shown(origin, 2)} mm")
    if not np.allclose(image.GetDirection(), direction, atol=GRID_DIRECTION_ATOL, rtol=0):
        found.append("direction cosines differ")
    return found
