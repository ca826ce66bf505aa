"""Helpers shared by the slicer-core tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from helpers import rotation  # noqa: F401 (re-exported to the Slicer tests)


def add_volume_from_image(scene, image: sitk.Image, name: str = "CT", ijk_to_ras: np.ndarray | None = None,
                          class_name: str = "vtkMRMLScalarVolumeNode"):
    """Add a volume node holding ``image``'s voxels; ``ijk_to_ras`` overrides the geometry (oblique, flipped)."""
    from PancreasRSTNSlicerLib.mrml_geometry import _vtk_matrix, update_volume_node_from_image

    node = scene.AddNewNodeByClass(class_name, name)
    update_volume_node_from_image(node, image)
    if ijk_to_ras is not None:
        node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras))
    node.CreateDefaultDisplayNodes()
    return node


def ijk_to_ras(direction_ras: np.ndarray, spacing, origin_ras) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction_ras) @ np.diag(spacing)
    m[:3, 3] = origin_ras
    return m


# Orientations a CT can come in: Slicer's usual (LPS files -> RAS flip), RAS-stored, flipped slices,
# permuted (sagittal acquisition) and oblique.
ORIENTATIONS = {
    "lps_file": np.diag([-1.0, -1.0, 1.0]),
    "ras": np.eye(3),
    "flipped_slices": np.diag([-1.0, -1.0, -1.0]),
    "permuted": np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    "oblique": np.diag([-1.0, -1.0, 1.0]) @ rotation(0, 17.0) @ rotation(2, -11.0),
}
