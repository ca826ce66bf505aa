"""Canonical layout and the lossless round trip onto the exact input grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import rotation
from PancreasRSTNLib.io.geometry import canonical_box_to_image, from_canonical, to_canonical


def _image(direction: np.ndarray, size=(13, 11, 7), spacing=(0.8, 1.3, 2.5), origin=(-12.5, 40.25, 7.0)) -> sitk.Image:
    rng = np.random.default_rng(0)
    img = sitk.GetImageFromArray(rng.integers(-1000, 1500, size=size[::-1]).astype(np.int16))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(tuple(direction.reshape(-1)))
    return img


def _directions():
    """Every axis permutation with every flip, plus oblique rotations."""
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            d = np.zeros((3, 3))
            for col, (row, sign) in enumerate(zip(perm, signs)):
                d[row, col] = sign
            yield f"perm{perm}-flip{signs}", d
    yield "oblique-20deg-z", rotation(2, 20)
    yield "oblique-35deg-x-flipped", rotation(0, 35) @ np.diag([1, -1, -1])
    yield "oblique-compound", rotation(1, 25) @ rotation(2, -30)


@pytest.mark.parametrize("name,direction", list(_directions()), ids=[n for n, _ in _directions()])
def test_round_trip_is_lossless(name, direction):
    img = _image(direction)
    canonical, geometry = to_canonical(img)
    back = from_canonical(canonical, geometry)
    assert back.GetSize() == img.GetSize()
    assert back.GetSpacing() == img.GetSpacing()
    assert back.GetOrigin() == img.GetOrigin()
    assert back.GetDirection() == img.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))


@pytest.mark.parametrize("name,direction", list(_directions())[::7], ids=[n for n, _ in list(_directions())[::7]])
def test_canonical_axes_point_anterior_left_inferior(name, direction):
    """Walking one voxel along each canonical axis moves the physical point toward A, L, I (LPS: -y, +x, -z)."""
    img = _image(direction)
    canonical, geometry = to_canonical(img)
    ref = geometry.reference_image()
    # index of canonical voxel (0,0,0) and (1,0,0) etc. in the input grid via a marker image
    for axis, (lps_axis, sign) in enumerate([(1, -1), (0, 1), (2, -1)]):
        a = np.zeros(canonical.shape, np.uint8)
        a[(0, 0, 0)] = 1
        step = [0, 0, 0]
        step[axis] = 1
        a[tuple(step)] = 2
        marks = sitk.GetArrayFromImage(from_canonical(a, geometry))
        p0 = np.array(ref.TransformIndexToPhysicalPoint([int(v) for v in np.argwhere(marks == 1)[0][::-1]]))
        p1 = np.array(ref.TransformIndexToPhysicalPoint([int(v) for v in np.argwhere(marks == 2)[0][::-1]]))
        move = p1 - p0
        assert np.argmax(np.abs(move)) == lps_axis and np.sign(move[lps_axis]) == sign


def test_sub_box_lands_on_the_same_voxels():
    img = _image(rotation(0, 35) @ np.diag([1, -1, -1]))
    canonical, geometry = to_canonical(img)
    offset, shape = (2, 3, 1), (4, 5, 3)
    sub = canonical[offset[0]:offset[0] + shape[0], offset[1]:offset[1] + shape[1], offset[2]:offset[2] + shape[2]]
    sub_img = canonical_box_to_image(sub, offset, geometry)
    assert sub_img.GetDirection() == img.GetDirection() and sub_img.GetSpacing() == img.GetSpacing()
    # every sub-image voxel sits exactly on an input voxel with the same value
    resampled = sitk.Resample(sub_img, img, sitk.Transform(), sitk.sitkNearestNeighbor, -32768)
    a = sitk.GetArrayFromImage(resampled)
    inside = a != -32768
    assert inside.sum() == np.prod(shape)
    assert np.array_equal(a[inside], sitk.GetArrayFromImage(img)[inside])


def test_real_ct_canonical_anatomy(shared_dir):
    """On the real TotalSegmentator CT (direction (-1,-1,1)): kidneys posterior of the pancreas, liver on the
    patient's right of the spleen, liver above the kidneys; and the round trip is exact."""
    img = sitk.ReadImage(str(shared_dir / "data" / "totalseg_ct_abdomen_3mm.nii.gz"))
    labels = sitk.ReadImage(str(shared_dir / "data" / "totalseg_ct_abdomen_3mm_labels.nii.gz"))
    lab, geometry = to_canonical(labels)
    centre = {v: np.argwhere(lab == v).mean(axis=0) for v in (1, 2, 3, 5, 7)}  # spleen, kidneys, liver, pancreas
    assert centre[2][0] < centre[7][0] and centre[3][0] < centre[7][0]  # kidneys posterior (lower row)
    assert centre[5][1] < centre[1][1]  # liver (patient right) at a lower column than the spleen
    assert centre[2][1] < centre[3][1]  # right kidney at a lower column than the left kidney
    assert centre[5][2] < centre[2][2]  # liver above (lower slice index than) the right kidney
    ct, g2 = to_canonical(img)
    back = from_canonical(ct, g2)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    assert back.GetOrigin() == img.GetOrigin() and back.GetDirection() == img.GetDirection()


def test_nih_arrays_are_in_the_canonical_layout(shared_dir):
    """The reference's NIH arrays: spine (bone) posterior = small row index; pancreas left of centre column."""
    d = np.load(shared_dir / "data" / "nih_pancreas_slices.npz")
    images, masks = d["images"], d["masks"]
    for img, mask in zip(images[:: 5], masks[:: 5]):
        bone = np.argwhere(img > 300)
        body = np.argwhere(img > -300)
        assert bone[:, 0].mean() < body[:, 0].mean()  # spine behind the body's centre
        assert np.argwhere(mask)[:, 0].mean() > bone[:, 0].mean()  # pancreas in front of the bone
    vol = np.load(shared_dir / "data" / "nih0001_pancreas_label.npz")["volume"]
    assert np.argwhere(vol)[:, 1].mean() > vol.shape[1] / 2  # the pancreas lies on the patient's left


def test_grid_differences_names_each_difference_and_forgives_header_round_off():
    """The one comparison of grids (a label and its image, a prediction and its label, a prior and the CT)."""
    from PancreasRSTNLib.io.geometry import geometry_of, grid_differences

    ct = sitk.Image([40, 30, 20], sitk.sitkInt16)
    ct.SetSpacing((0.8, 0.8, 2.5))
    ct.SetOrigin((-100.0, 20.0, 300.0))
    same = sitk.Image(ct)
    same.SetSpacing(tuple(float(np.float32(s * (1 + 2e-7))) for s in ct.GetSpacing()))  # NIfTI float32 round-off
    same.SetOrigin(tuple(o + 1e-3 for o in ct.GetOrigin()))
    assert grid_differences(same, ct) == [] and grid_differences(same, geometry_of(ct)) == []
    other = sitk.Image([40, 30, 21], sitk.sitkInt16)
    other.SetSpacing((0.8, 0.81, 2.5))
    other.SetOrigin((-100.0, 25.0, 300.0))
    other.SetDirection((1, 0, 0, 0, 0, 1, 0, -1, 0))
    found = grid_differences(other, ct, "the label's")
    assert found == ["size 40x30x21 vs the label's 40x30x20",
                     "spacing (0.8, 0.81, 2.5) vs the label's (0.8, 0.8, 2.5) mm",
                     "origin (-100.0, 25.0, 300.0) vs the label's (-100.0, 20.0, 300.0) mm",
                     "direction cosines differ"]
    assert grid_differences(sitk.Image([40, 30], sitk.sitkInt16), ct) == ["it is 2-D, not 3-D"]
