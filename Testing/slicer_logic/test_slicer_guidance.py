"""A person's guidance from MRML nodes on real MRML (slicer-core): a segment as the prior of a refinement, a
markups ROI as the region, and the run path that takes them (``RunController`` with ``guidance=``)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from PancreasRSTNLib.errors import InputImageError, OptionsError
from PancreasRSTNSlicerLib.guidance_nodes import (
    GuidanceNodes,
    roi_box_lps,
    segment_to_image,
)
from PancreasRSTNSlicerLib.logic import RunOptions, SceneLogic
from PancreasRSTNSlicerLib.mrml_geometry import node_array_view, volume_node_to_image
from PancreasRSTNSlicerLib.run_controller import RunController
from slicer_helpers import ORIENTATIONS, add_volume_from_image, ijk_to_ras

FAST = {"max_iter": 1, "device": "cpu", "postprocess": False}
BOX = (slice(6, 14), slice(10, 24), slice(12, 28))


def _ct(ctx, image, orientation="lps_file"):
    matrix = ijk_to_ras(ORIENTATIONS[orientation], image.GetSpacing(), (10.0, -20.0, 30.0))
    return add_volume_from_image(ctx.scene, image, "CT", ijk_to_ras=matrix)


def _segmentation(ctx, ct, box=BOX):
    import slicer

    from PancreasRSTNSlicerLib.mrml_geometry import update_volume_node_from_image
    from PancreasRSTNSlicerLib.scene_nodes import remove_node

    reference = volume_node_to_image(ct)
    array = np.zeros(reference.GetSize()[::-1], np.uint8)
    array[box] = 1
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    labelmap = ctx.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "temporary")
    update_volume_node_from_image(labelmap, image)
    seg = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Mine")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, seg)
    remove_node(ctx.scene, labelmap)
    return seg, seg.GetSegmentation().GetNthSegmentID(0), array


def _ids(ctx) -> set[str]:
    return {ctx.scene.GetNthNode(i).GetID() for i in range(ctx.scene.GetNumberOfNodes())}


@pytest.mark.parametrize("orientation", ["lps_file", "oblique"])
def test_a_refinement_starts_from_the_segment_on_the_input_grid(ctx, models_root, phantom_image, orientation):
    ct = _ct(ctx, phantom_image, orientation)
    seg, segment_id, array = _segmentation(ctx, ct)
    rounds = []
    result = RunController(SceneLogic(ctx, models_root)).run(ct, RunOptions(**FAST), on_round=rounds.append,
                                                             guidance=GuidanceNodes(seg, segment_id))
    assert rounds[0].stage == "prior" and np.array_equal(np.array(node_array_view(rounds[0].labelmap)) != 0, array > 0)
    table = result.tables["pancreas"].GetTable()
    assert table.GetColumnByName("dsc_to_prior").GetValue(0) == pytest.approx(1.0)
    assert table.GetColumnByName("volume_change_ml").GetValue(0) == pytest.approx(0.0)
    assert "refined" in result.segmentation.GetName()
    assert np.array_equal(sitk.GetArrayFromImage(segment_to_image(ctx.scene, seg, segment_id, ct)), array)


def test_a_run_without_guidance_has_no_refinement_columns(ctx, models_root, phantom_image):
    ct = _ct(ctx, phantom_image)
    result = RunController(SceneLogic(ctx, models_root)).run(ct, RunOptions(**FAST))
    assert result.tables["pancreas"].GetTable().GetColumnByName("dsc_to_prior") is None
    assert "refined" not in result.segmentation.GetName()


def test_the_segment_export_leaves_the_scene_as_it_was(ctx, phantom_image):
    ct = _ct(ctx, phantom_image, "oblique")
    seg, segment_id, array = _segmentation(ctx, ct)
    before = _ids(ctx)
    image = segment_to_image(ctx.scene, seg, segment_id, ct)
    assert _ids(ctx) == before and np.array_equal(sitk.GetArrayFromImage(image), array)
    empty = seg.GetSegmentation().AddEmptySegment("", "empty")
    with pytest.raises(InputImageError, match="'empty' of 'Mine' is empty"):
        segment_to_image(ctx.scene, seg, empty, ct)
    with pytest.raises(OptionsError, match="No segment chosen"):
        segment_to_image(ctx.scene, seg, "", ct)
    assert _ids(ctx) == before


def test_roi_box_is_lps_and_the_box_around_a_rotated_roi(ctx):
    import vtk

    roi = ctx.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "R")
    with pytest.raises(OptionsError, match="not placed yet"):
        roi_box_lps(roi)
    roi.SetCenter(10.0, 20.0, 30.0)
    roi.SetSize(4.0, 6.0, 8.0)
    assert roi_box_lps(roi) == pytest.approx((-12.0, -8.0, -23.0, -17.0, 26.0, 34.0))
    transform = vtk.vtkTransform()
    transform.Translate(10.0, 20.0, 30.0)
    transform.RotateZ(90.0)
    roi.SetAndObserveObjectToNodeMatrix(transform.GetMatrix())  # x and y swap their extents
    assert roi_box_lps(roi) == pytest.approx((-13.0, -7.0, -22.0, -18.0, 26.0, 34.0))


def test_the_roi_limits_the_run_and_a_roi_off_the_ct_is_refused(ctx, models_root, phantom_image):
    ct = _ct(ctx, phantom_image)
    seg, segment_id, array = _segmentation(ctx, ct)
    logic = SceneLogic(ctx, models_root)
    roi = logic.place_roi_around_segment(seg, segment_id, ct)
    from PancreasRSTNLib.engine.guidance_input import roi_from_box
    from PancreasRSTNLib.io.geometry import canonical_to_array

    ct_check = logic.validate_input(ct)
    inside = canonical_to_array(roi_from_box(roi_box_lps(roi, ct), ct_check.geometry), ct_check.geometry)
    assert inside[array > 0].all() and not inside.all()
    result = RunController(logic).run(ct, RunOptions(**FAST), guidance=GuidanceNodes(roi=roi))
    for nodes in result.rounds["pancreas"]:
        assert not (np.array(node_array_view(nodes.labelmap))[~inside]).any()
    before = _ids(ctx)
    far = ctx.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far")
    far.SetCenter(9000.0, 0.0, 0.0)
    far.SetSize(10.0, 10.0, 10.0)
    before.add(far.GetID())
    with pytest.raises(InputImageError, match="misses the image"):
        RunController(logic).run(ct, RunOptions(**FAST), guidance=GuidanceNodes(seg, segment_id, far))
    with pytest.raises(OptionsError, match="No segment chosen"):
        RunController(logic).run(ct, RunOptions(**FAST), guidance=GuidanceNodes(refine=True))
    with pytest.raises(OptionsError, match="refines one organ"):
        RunController(logic).run(ct, RunOptions(organs=["pancreas", "spleen"], **FAST),
                                 guidance=GuidanceNodes(seg, segment_id))
    assert _ids(ctx) == before
