"""Spacing-aware inference: the canonical input grid <-> the model's grid, with SimpleITK (linear).

Why: a network only knows the voxel spacing it was trained at, while scanners give 0.57-0.98 mm pixels and
1-5 mm slices. The model grid has the input's canonical axes and physical extent, at (about) the model's
spacing: ``n = round(N * s / t)`` voxels of ``N * s / n`` mm per axis, so its voxel centres sit symmetrically
inside the input's extent and a linear resampling is a pure per-axis rescaling.

Memory stays bounded for large CTs (768x768x400): both directions run in slabs of slices, the way in is read
from the int16 input, and the way back is computed only inside the bounding box of what can be non-zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from numpy.typing import DTypeLike

from .boxes import bounding_box

#: Resample only when the input's spacing differs from the model's by more than this on some axis.
SPACING_TOLERANCE = 0.10
#: Output slices per slab: bounds the transient memory of one resampling step.
SLAB_SLICES = 32
AIR_HU = -1024.0


def needs_resampling(input_spacing: Sequence[float], model_spacing: Sequence[float] | None,
                     tolerance: float = SPACING_TOLERANCE) -> bool:
    """True when some axis of the input differs from the model's spacing by more than ``tolerance``."""
    if model_spacing is None:
        return False
    return any(abs(float(s) / float(t) - 1.0) > tolerance for s, t in zip(input_spacing, model_spacing, strict=True))


def _as_sitk(array: np.ndarray, spacing: Sequence[float], origin: Sequence[float]) -> sitk.Image:
    """A canonical (rows, cols, slices) array as an image whose index (i, j, k) is (row, col, slice)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    return image


def _from_sitk(image: sitk.Image) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


@dataclass(frozen=True)
class Resampling:
    """The linear map between a canonical input grid and the model grid that covers the same extent.

    Coordinates are in canonical voxel units of the input grid, with the input voxel (0, 0, 0) at 0: model
    voxel ``n`` along axis ``c`` has its centre at input index ``(n + 0.5) * ratio[c] - 0.5``."""

    input_shape: tuple[int, int, int]
    input_spacing: tuple[float, float, float]
    model_shape: tuple[int, int, int]

    @classmethod
    def between(cls, input_shape: Sequence[int], input_spacing: Sequence[float],
                model_spacing: Sequence[float]) -> Resampling:
        shape = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(input_shape, input_spacing, model_spacing,
                                                                        strict=True))
        return cls(tuple(int(n) for n in input_shape), tuple(float(s) for s in input_spacing), shape)  # type: ignore[arg-type]

    @property
    def ratio(self) -> np.ndarray:
        """Input voxels per model voxel, per canonical axis."""
        return np.array(self.input_shape, float) / np.array(self.model_shape, float)

    @property
    def model_spacing(self) -> tuple[float, float, float]:
        return tuple(float(s * r) for s, r in zip(self.input_spacing, self.ratio, strict=True))  # type: ignore[return-value]

    def _model_origin(self, start: Sequence[int]) -> np.ndarray:
        """Input-grid coordinates (mm, input voxel 0 at 0) of the model voxel at index ``start``."""
        return ((np.asarray(start, float) + 0.5) * self.ratio - 0.5) * np.asarray(self.input_spacing)

    def _input_span(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input voxel range [a, b) whose centres lie between model voxels lo and hi-1 (inclusive), widened by
        one voxel for the interpolation stencil and clamped to the input."""
        first = np.floor((lo + 0.5) * self.ratio - 0.5).astype(int) - 1
        last = np.ceil((hi - 0.5) * self.ratio - 0.5).astype(int) + 2
        return np.maximum(first, 0), np.minimum(last, self.input_shape)

    def _model_span(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model voxel range [a, b) needed to interpolate input voxels lo .. hi-1 (with one voxel of stencil)."""
        first = np.floor((lo + 0.5) / self.ratio - 0.5).astype(int) - 1
        last = np.ceil((hi - 0.5) / self.ratio - 0.5).astype(int) + 2
        return np.maximum(first, 0), np.minimum(last, self.model_shape)

    # ------------------------------------------------------------------------------------- input -> model
    def to_model(self, array: np.ndarray, default: float = AIR_HU, dtype: DTypeLike = np.float32) -> np.ndarray:
        """Linear resampling of a canonical input-grid array onto the model grid, slab by slab: only one slab
        of the input is ever copied (as float) at a time."""
        out = np.empty(self.model_shape, dtype=dtype)
        spacing = self.input_spacing
        for k0 in range(0, self.model_shape[2], SLAB_SLICES):
            k1 = min(k0 + SLAB_SLICES, self.model_shape[2])
            a, b = self._input_span(np.array([0, 0, k0]), np.array([*self.model_shape[:2], k1]))
            src = _as_sitk(array[:, :, a[2]:b[2]], spacing, (0.0, 0.0, a[2] * spacing[2]))
            ref = sitk.Image([*self.model_shape[:2], k1 - k0], sitk.sitkFloat32)
            ref.SetSpacing(self.model_spacing)
            ref.SetOrigin(self._model_origin((0, 0, k0)).tolist())
            slab = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, float(default), sitk.sitkFloat32)
            values = _from_sitk(slab)
            if np.issubdtype(np.dtype(dtype), np.integer):
                values = np.rint(values)
            out[:, :, k0:k1] = values
        return out

    def mask_to_model(self, mask: np.ndarray) -> np.ndarray:
        """A mask on the model grid: its linearly resampled fraction, thresholded at 0.5."""
        return self.to_model(mask.astype(np.uint8), default=0.0) >= 0.5

    # ------------------------------------------------------------------------------------- model -> input
    def _default_input_box(self, offset: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Input voxels whose centres a model sub-box (at ``offset``) covers. The model grid's outermost voxel
        centres lie half a model voxel inside the input's extent: input voxels beyond them belong to the edge
        voxel too (clamped, as the interpolation does)."""
        end = offset + np.asarray(shape)
        first = np.ceil((offset + 0.5) * self.ratio - 0.5 - 1e-6).astype(int)
        last = np.floor((end - 0.5) * self.ratio - 0.5 + 1e-6).astype(int) + 1
        first = np.where(offset == 0, 0, first)
        last = np.where(end == np.asarray(self.model_shape), np.asarray(self.input_shape), last)
        return np.maximum(first, 0), np.minimum(np.maximum(last, first + 1), self.input_shape)

    def _slabs_to_input(self, sub: np.ndarray, offset: np.ndarray, out_lo: np.ndarray, out_hi: np.ndarray):
        """Yield (k0, k1, float32 values) of the input box [out_lo, out_hi) slab by slab (k: input slices)."""
        spacing = self.input_spacing
        for k0 in range(int(out_lo[2]), int(out_hi[2]), SLAB_SLICES):
            k1 = min(k0 + SLAB_SLICES, int(out_hi[2]))
            lo = np.array([out_lo[0], out_lo[1], k0])
            hi = np.array([out_hi[0], out_hi[1], k1])
            m_lo, m_hi = self._model_span(lo, hi)
            m_lo, m_hi = np.maximum(m_lo, offset), np.minimum(m_hi, offset + np.asarray(sub.shape))
            if np.any(m_hi <= m_lo):
                yield k0, k1, np.zeros(tuple(int(v) for v in hi - lo), np.float32)
                continue
            part = sub[m_lo[0] - offset[0]:m_hi[0] - offset[0], m_lo[1] - offset[1]:m_hi[1] - offset[1],
                       m_lo[2] - offset[2]:m_hi[2] - offset[2]]
            src = _as_sitk(part.astype(np.float32, copy=False), self.model_spacing, self._model_origin(m_lo))
            ref = sitk.Image([int(v) for v in (hi - lo)], sitk.sitkFloat32)
            ref.SetSpacing(spacing)
            ref.SetOrigin((lo * np.asarray(spacing)).tolist())
            # The sub-array may stop short of the model grid's edge; points beyond it are clamped to the grid's
            # edge voxels like everywhere else, so extrapolate the edge value instead of inserting 0.
            values = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32,
                                   useNearestNeighborExtrapolator=True)
            yield k0, k1, _from_sitk(values)

    def region_to_input(self, sub: np.ndarray, offset: Sequence[int],
                        out_lo: np.ndarray | None = None, out_hi: np.ndarray | None = None,
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Linear resampling of a model-grid sub-array (at ``offset``) onto the input voxels whose centres it
        covers (or onto the input box [out_lo, out_hi)). Returns (float32 values, input offset)."""
        offset = np.asarray(offset, int)
        if out_lo is None or out_hi is None:
            out_lo, out_hi = self._default_input_box(offset, sub.shape)
        out = np.zeros(tuple(int(s) for s in np.maximum(out_hi - out_lo, 0)), np.float32)
        if out.size:
            for k0, k1, values in self._slabs_to_input(sub, offset, out_lo, out_hi):
                out[:, :, k0 - int(out_lo[2]):k1 - int(out_lo[2])] = values
        return out, out_lo

    def probability_to_input(self, probability: np.ndarray) -> np.ndarray:
        """The whole probability volume on the input grid (float32), slab by slab."""
        values, _ = self.region_to_input(probability, (0, 0, 0), np.zeros(3, int), np.asarray(self.input_shape))
        return values

    def mask_to_input(self, probability: np.ndarray, mask: np.ndarray, threshold: float) -> np.ndarray:
        """The mask on the input grid: the linearly resampled probability, thresholded, within the support of
        ``mask`` (the engine's mask, post-processed). Never a nearest-neighbour copy of the mask.

        Outside a 26-neighbourhood of ``mask`` the probability is set to 0 first: every input voxel whose
        interpolation stencil touches the mask gets exactly the resampled probability, and components the
        post-processing removed cannot come back."""
        out = np.zeros(self.input_shape, dtype=bool)
        if not mask.any():
            return out
        found = bounding_box(mask)  # not None: the mask is not empty
        lo, hi = np.array([s.start for s in found]), np.array([s.stop for s in found])
        lo, hi = np.maximum(lo - 2, 0), np.minimum(hi + 2, self.model_shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        support = _dilate26(mask[box])
        restricted = np.where(support, probability[box], np.float32(0.0)).astype(np.float32, copy=False)
        out_lo, out_hi = self._default_input_box(lo, restricted.shape)
        for k0, k1, values in self._slabs_to_input(restricted, lo, out_lo, out_hi):  # thresholded slab by slab
            out[out_lo[0]:out_hi[0], out_lo[1]:out_hi[1], k0:k1] = values >= threshold
        return out


def _dilate26(mask: np.ndarray) -> np.ndarray:
    """One-voxel dilation with the 3x3x3 cube (separable: three 1-D maxima)."""
    out = mask.copy()
    for axis in range(3):
        shifted = out.copy()
        front = [slice(None)] * 3
        back = [slice(None)] * 3
        front[axis], back[axis] = slice(1, None), slice(None, -1)
        shifted[tuple(front)] |= out[tuple(back)]
        shifted[tuple(back)] |= out[tuple(front)]
        out = shifted
    return out
