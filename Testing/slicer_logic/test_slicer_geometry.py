"""Volume node <-> SimpleITK on real MRML: voxels and physical positions identical in every orientation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from PancreasRSTNSlicerLib.mrml_geometry import (
    ijk_to_ras_array,
    same_grid,
    update_volume_node_from_image,
    volume_node_to_image,
)
from slicer_helpers import ORIENTATIONS, add_volume_from_image, ijk_to_ras


def _random_volume(shape_kji=(7, 9, 11), seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    return sitk.GetImageFromArray(rng.integers(-1000, 1000, size=shape_kji).astype(np.int16))


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_node_to_image_same_voxels_and_points(ctx, orientation):
    matrix = ijk_to_ras(ORIENTATIONS[orientation], (0.7, 0.8, 2.5), (12.0, -30.0, 140.0))
    node = add_volume_from_image(ctx.scene, _random_volume(), ijk_to_ras=matrix)
    before = np.array(node.GetImageData().GetPointData().GetScalars())  # snapshot of the input's voxels
    image = volume_node_to_image(node)
    # voxel values identical, same [k, j, i] order
    arr = sitk.GetArrayFromImage(image)
    node_arr = np.array(before).reshape(arr.shape)
    np.testing.assert_array_equal(arr, node_arr)
    # every corner voxel is at the same physical point (RAS in Slicer = LPS in ITK with x, y negated)
    for ijk in [(0, 0, 0), (10, 0, 0), (0, 8, 0), (0, 0, 6), (10, 8, 6), (3, 5, 2)]:
        ras = (matrix @ np.array([*ijk, 1.0]))[:3]
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        np.testing.assert_allclose(lps, ras * np.array([-1, -1, 1]), atol=1e-9)
    # the input is not modified and the image owns a copy
    arr[...] = 0
    np.testing.assert_array_equal(np.array(node.GetImageData().GetPointData().GetScalars()), before)
    np.testing.assert_allclose(ijk_to_ras_array(node), matrix)


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_round_trip_node_image_node(ctx, orientation):
    matrix = ijk_to_ras(ORIENTATIONS[orientation], (1.1, 0.9, 3.0), (-5.0, 7.0, -60.0))
    node = add_volume_from_image(ctx.scene, _random_volume(seed=1), ijk_to_ras=matrix)
    image = volume_node_to_image(node)
    out = ctx.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "out")
    update_volume_node_from_image(out, image, np.int16)
    assert same_grid(node, out)
    np.testing.assert_allclose(ijk_to_ras_array(out), matrix, atol=1e-9)
    back = volume_node_to_image(out)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-12)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-12)


def test_same_grid_detects_a_shift(ctx):
    matrix = ijk_to_ras(ORIENTATIONS["lps_file"], (1, 1, 1), (0, 0, 0))
    a = add_volume_from_image(ctx.scene, _random_volume(), ijk_to_ras=matrix)
    matrix[0, 3] += 0.5
    b = add_volume_from_image(ctx.scene, _random_volume(), ijk_to_ras=matrix)
    assert not same_grid(a, b)


def test_canonical_layout_is_anatomical(ctx):
    """A bright voxel at the patient's anterior-left-superior corner must land at canonical row high
    (anterior), column high (left), slice low (superior), whatever the storage orientation: this fails if
    RAS and LPS are confused (the result would be mirrored)."""
    from PancreasRSTNLib.io.geometry import to_canonical

    for name, direction in ORIENTATIONS.items():
        if name == "oblique":
            continue  # nearest-axis assignment; covered by the exact round trip above
        matrix = ijk_to_ras(direction, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        shape_kji = (5, 6, 7)
        array = np.zeros(shape_kji, np.int16)
        # the voxel most anterior (+y in RAS), then most left (-x: RAS +x is the patient's right), then superior (+z)
        kji = np.indices(shape_kji).reshape(3, -1)
        ijk = kji[::-1]
        ras = (matrix[:3, :3] @ ijk) + matrix[:3, 3:4]
        best = np.argmax(ras[1] * 1e6 - ras[0] * 1e3 + ras[2])
        array[tuple(kji[:, best])] = 1000
        node = add_volume_from_image(ctx.scene, sitk.GetImageFromArray(array), name=name, ijk_to_ras=matrix)
        canonical, _ = to_canonical(volume_node_to_image(node))
        r, c, s = np.unravel_index(np.argmax(canonical), canonical.shape)
        assert (r, c, s) == (canonical.shape[0] - 1, canonical.shape[1] - 1, 0), name
