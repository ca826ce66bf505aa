"""Volume node <-> SimpleITK image, voxel for voxel and without resampling.

Slicer stores geometry in the node (IJK-to-RAS); ITK and files use LPS. A point (x, y, z) in RAS is
(-x, -y, z) in LPS, so the direction matrix and origin get their first two rows negated; spacing and the
voxel array ([k, j, i] in both numpy views) are unchanged.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def ijk_to_ras_array(node) -> np.ndarray:
    """The node's 4x4 IJK-to-RAS matrix as numpy."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_ras_from_image(image: sitk.Image) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of a (3-D) SimpleITK image."""
    direction_lps = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.array(image.GetSpacing(), dtype=float)
    origin_lps = np.array(image.GetOrigin(), dtype=float)
    out = np.eye(4)
    out[:3, :3] = _RAS_TO_LPS @ direction_lps @ np.diag(spacing)
    out[:3, 3] = _RAS_TO_LPS @ origin_lps
    return out


def _vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r, c]))
    return m


def node_array_view(node) -> np.ndarray:
    """The node's voxels as a read-only numpy view [k, j, i] (no copy; never written to)."""
    image_data = node.GetImageData()
    if image_data is None or image_data.GetPointData() is None or image_data.GetPointData().GetScalars() is None:
        raise ValueError(f"Volume '{node.GetName()}' has no voxel data.")
    dims = image_data.GetDimensions()
    components = image_data.GetNumberOfScalarComponents()
    shape = tuple(reversed(dims)) + ((components,) if components > 1 else ())
    array = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars()).reshape(shape)
    array.flags.writeable = False
    return array


def volume_node_to_image(node) -> sitk.Image:
    """Copy a scalar volume node into a SimpleITK image (LPS) on exactly the same voxel grid.

    The node is only read; the image owns a copy of the voxels. A parent transform is not applied (results
    are placed under the same transform, see ``place_like``)."""
    array = node_array_view(node)
    image = sitk.GetImageFromArray(np.array(array, copy=True), isVector=array.ndim == 4)
    ijk_to_ras = ijk_to_ras_array(node)
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    direction_ras = ijk_to_ras[:3, :3] / spacing
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (_RAS_TO_LPS @ direction_ras).ravel()))
    image.SetOrigin(tuple(float(v) for v in _RAS_TO_LPS @ ijk_to_ras[:3, 3]))
    return image


def update_volume_node_from_image(node, image: sitk.Image, dtype=None) -> None:
    """Fill ``node`` (a new node this module created) with the voxels and geometry of ``image``."""
    array = sitk.GetArrayFromImage(image)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    array = np.ascontiguousarray(array)
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(tuple(int(s) for s in image.GetSize()))
    vtk_array = numpy_support.numpy_to_vtk(array.ravel(), deep=True,
                                           array_type=numpy_support.get_vtk_array_type(array.dtype))
    image_data.GetPointData().SetScalars(vtk_array)
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras_from_image(image)))
    node.SetAndObserveImageData(image_data)


def same_grid(node_a, node_b, tolerance: float = 1e-6) -> bool:
    """True when two volume nodes share dimensions and IJK-to-RAS (so voxel (i, j, k) is the same point)."""
    dims_a = node_a.GetImageData().GetDimensions()
    dims_b = node_b.GetImageData().GetDimensions()
    return dims_a == dims_b and np.allclose(ijk_to_ras_array(node_a), ijk_to_ras_array(node_b), atol=tolerance)


def place_like(node, reference) -> None:
    """Put ``node`` under the same parent transform as ``reference`` so both stay aligned in the views."""
    transform_id = reference.GetTransformNodeID()
    if transform_id:
        node.SetAndObserveTransformNodeID(transform_id)
