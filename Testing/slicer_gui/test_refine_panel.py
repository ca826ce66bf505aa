"""Refine from segment and Limit to ROI on the real panel (PySide6 offscreen, slicer-core MRML).

A person's segment becomes round 0 (stage "prior") of a new run that the fine rounds refine; a markups ROI limits
Segment and Refine. The person's segmentation is only ever read: every test checks it is unchanged.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from test_panel import EN_DASH, _click, _ct, _nodes

from gui_helpers import tiny_package
from PancreasRSTNSlicerLib.mrml_geometry import (
    ijk_to_ras_array,
    node_array_view,
    same_grid,
    volume_node_to_image,
)
from pythonqt import unwrap

pytestmark = pytest.mark.slicer

BOX = (slice(6, 14), slice(10, 24), slice(12, 28))  # [k, j, i] of the person's segment in the 40x36x20 CT


@pytest.fixture
def always_on(models_root):
    """The user's pancreas model replaced by one that finds organ everywhere: runs are deterministic."""
    shutil.rmtree(models_root / "tiny-pancreas")
    tiny_package(models_root / "tiny-pancreas", always_on=True)
    return models_root


def _segmentation(scene, ct, name="My segmentation", segments=(("pancreas (mine)", BOX),)):
    """A segmentation node with one segment per (name, [k, j, i] box) on the CT's grid (None: an empty one)."""
    import SimpleITK as sitk
    import slicer

    from PancreasRSTNSlicerLib.mrml_geometry import update_volume_node_from_image
    from PancreasRSTNSlicerLib.scene_nodes import remove_node

    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    reference = volume_node_to_image(ct)
    for segment_name, box in segments:
        if box is None:
            seg.GetSegmentation().AddEmptySegment("", segment_name)
            continue
        array = np.zeros(reference.GetSize()[::-1], np.uint8)
        array[box] = 1
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(reference)
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "temporary")
        update_volume_node_from_image(labelmap, image)
        before = set(seg.GetSegmentation().GetSegmentIDs())
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, seg)
        new = [s for s in seg.GetSegmentation().GetSegmentIDs() if s not in before][0]
        seg.GetSegmentation().GetSegment(new).SetName(segment_name)
        remove_node(scene, labelmap)
    return seg


def _segment_array(scene, seg, segment_id, reference) -> np.ndarray:
    """A segment's voxels on the reference grid, [k, j, i] (the scene is left as it was)."""
    import SimpleITK as sitk

    from PancreasRSTNSlicerLib.guidance_nodes import segment_to_image

    return sitk.GetArrayFromImage(segment_to_image(scene, seg, segment_id, reference))


def _state_of(scene, seg, reference) -> tuple:
    """Everything of a person's segmentation a refinement must not change: names, IDs, colours, voxels."""
    segmentation = seg.GetSegmentation()
    segments = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        voxels = None
        try:
            voxels = _segment_array(scene, seg, segment_id, reference).tobytes()
        except Exception:  # noqa: BLE001 - an empty segment
            voxels = b"empty"
        segments.append((segment_id, segment.GetName(), tuple(segment.GetColor()), voxels))
    return seg.GetName(), seg.GetID(), tuple(segments)


def _choose(panel, seg=None, segment_id=None, roi=None) -> None:
    panel.ui.refineSegmentationSelector.setCurrentNode(seg)
    if segment_id is not None:
        combo = unwrap(panel.ui.refineSegmentComboBox)
        combo.setCurrentIndex(combo.findData(segment_id))
    if roi is not None:
        panel.ui.roiSelector.setCurrentNode(roi)


def _run(panel, qtbot, ct, button="refineButton", rounds=2) -> None:
    panel.ui.inputVolumeSelector.setCurrentNode(ct)
    panel.ui.maxRoundsSpinBox.value = rounds
    _click(qtbot, getattr(panel.ui, button))
    qtbot.waitUntil(lambda: not panel.segment.runs.running, timeout=60_000)


def _column(table, name) -> list:
    column = table.GetTable().GetColumnByName(name)
    assert column is not None, f"no column {name}"
    return [column.GetValue(r) for r in range(table.GetTable().GetNumberOfRows())]


def _roi(scene, center, size, name="R"):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetCenter(*center)
    roi.SetSize(*size)
    return roi


def _voxels_ras(labelmap) -> np.ndarray:
    """The RAS positions of a labelmap's non-zero voxel centres."""
    k, j, i = np.nonzero(node_array_view(labelmap))
    ijk = np.stack([i, j, k, np.ones_like(i)]).astype(float)
    return (ijk_to_ras_array(labelmap) @ ijk)[:3].T


def _bounds(roi) -> list[float]:
    bounds = [0.0] * 6
    roi.GetRASBounds(bounds)
    return bounds


def _inside(points, roi, tolerance=1e-4) -> bool:
    bounds = _bounds(roi)
    lo, hi = np.array(bounds[0::2]), np.array(bounds[1::2])
    return bool(np.all((points >= lo - tolerance) & (points <= hi + tolerance)))


# ---------------------------------------------------------------------------------------------- refine
def test_refine_from_a_segment_is_a_new_run_whose_round_0_is_the_segment(panel, scene, qtbot, always_on):
    ct = _ct(scene)
    seg = _segmentation(scene.scene, ct)
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    before = _state_of(scene.scene, seg, ct)
    _choose(panel, seg, segment_id)
    assert panel.ui.refineSegmentComboBox.currentText == "pancreas (mine)"
    assert panel._parameterNode.refineSegment == segment_id
    panel.ui.inputVolumeSelector.setCurrentNode(ct)
    assert panel.ui.refineButton.enabled and panel.ui.roiAroundSegmentButton.enabled
    _run(panel, qtbot, ct)
    assert panel.ui.statusLabel.text.startswith("Done in"), panel.ui.statusLabel.text
    rounds = panel.segment.rounds
    assert [r.stage for r in rounds][:2] == ["prior", "fine"] and len(rounds) >= 2
    zero = rounds[0].labelmap
    assert same_grid(zero, ct)
    assert np.array_equal(np.array(node_array_view(zero)) != 0, _segment_array(scene.scene, seg, segment_id, ct) != 0)
    assert rounds[0].summary.startswith("Round 0 (prior)") and "DSC to segment 1.0000 (+0.00 ml)" in rounds[0].summary
    # the round table: DSC to the person's segment and the volume change, per round
    table = panel.segment.result.tables["pancreas"]
    dsc, change = _column(table, "dsc_to_prior"), _column(table, "volume_change_ml")
    assert _column(table, "stage")[0] == "prior" and dsc[0] == pytest.approx(1.0) and change[0] == pytest.approx(0.0)
    assert len(dsc) == len(rounds) and all(0.0 <= d <= 1.0 for d in dsc)
    voxel_ml = float(np.prod(volume_node_to_image(ct).GetSpacing())) / 1000.0
    for r, nodes in enumerate(rounds):
        grown = np.count_nonzero(node_array_view(nodes.labelmap)) - np.count_nonzero(_segment_array(
            scene.scene, seg, segment_id, ct))
        assert change[r] == pytest.approx(grown * voxel_ml, abs=1e-6)
    assert change[-1] > 0  # the always-on model grows it
    # a new result, named as a refinement; the person's segmentation is untouched
    result = panel.segment.result.segmentation
    assert result is not seg and result.GetName() == f"CT Pancreas refined {EN_DASH} run 1"
    sh = scene.sh_node
    assert "refined" in sh.GetItemName(panel.segment.result.folder_item)
    assert _state_of(scene.scene, seg, ct) == before


def test_refine_on_a_resampled_grid_starts_from_the_segment(panel, scene, qtbot, always_on):
    """The model's spacing differs from the CT's by 25 %: the run resamples, round 0 is still the segment."""
    meta_path = always_on / "tiny-pancreas" / "model.json"
    ct = _ct(scene)
    spacing = volume_node_to_image(ct).GetSpacing()  # x, y, z; a model's spacing is canonical (rows, cols, slices)
    meta = json.loads(meta_path.read_text())
    meta["spacing"] = [spacing[1] * 1.25, spacing[0] * 1.25, spacing[2] * 1.25]
    meta_path.write_text(json.dumps(meta))
    panel.models.refresh()
    seg = _segmentation(scene.scene, ct)
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    before = _state_of(scene.scene, seg, ct)
    _choose(panel, seg, segment_id)
    _run(panel, qtbot, ct)
    assert panel.ui.statusLabel.text.startswith("Done in"), panel.ui.statusLabel.text
    session = panel.segment.runs.session
    assert session.final["pancreas"].mapping.resampling is not None  # it did run on the model's grid
    rounds = panel.segment.rounds
    assert rounds[0].stage == "prior" and same_grid(rounds[0].labelmap, ct)
    dsc = _column(panel.segment.result.tables["pancreas"], "dsc_to_prior")
    assert dsc[0] >= 0.9, dsc  # round 0 is the segment, through the model grid and back
    assert _state_of(scene.scene, seg, ct) == before


# ---------------------------------------------------------------------------------------------- limit to ROI
@pytest.mark.parametrize("button", ["segmentButton", "refineButton"])
def test_the_roi_limits_every_round_of_segment_and_refine(panel, scene, qtbot, always_on, button):
    ct = _ct(scene)
    seg = _segmentation(scene.scene, ct)
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    before = _state_of(scene.scene, seg, ct)
    centre = _voxels_ras(_segment_labelmap(scene.scene, seg, segment_id, ct)).mean(axis=0)
    roi = _roi(scene.scene, centre, (60.0, 50.0, 40.0))
    roi.SetAndObserveObjectToNodeMatrix(_rotation_z(20.0, centre))  # a rotated ROI: the box around it counts
    _choose(panel, seg, segment_id, roi)
    assert panel._parameterNode.roi is roi
    _run(panel, qtbot, ct, button)
    assert panel.ui.statusLabel.text.startswith("Done in"), panel.ui.statusLabel.text
    for nodes in panel.segment.rounds:
        points = _voxels_ras(nodes.labelmap)
        assert len(points) and _inside(points, roi), nodes.labelmap.GetName()
    assert _state_of(scene.scene, seg, ct) == before


def test_roi_around_segment_places_an_roi_that_holds_the_segment(panel, scene, qtbot):
    ct = _ct(scene)
    seg = _segmentation(scene.scene, ct)
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    before = _state_of(scene.scene, seg, ct)
    _choose(panel, seg, segment_id)
    panel.ui.inputVolumeSelector.setCurrentNode(ct)
    _click(qtbot, panel.ui.roiAroundSegmentButton)
    roi = panel._parameterNode.roi
    assert roi is not None and roi.GetName() == "pancreas (mine) ROI"
    assert panel.ui.roiSelector.currentNode() is roi
    points = _voxels_ras(_segment_labelmap(scene.scene, seg, segment_id, ct))
    assert _inside(points, roi)
    bounds = [0.0] * 6
    roi.GetRASBounds(bounds)
    half_voxel = np.array(volume_node_to_image(ct).GetSpacing()) / 2.0  # the box holds the voxels' outer faces
    np.testing.assert_allclose(np.array(bounds[0::2]), points.min(axis=0) - half_voxel - 10.0, atol=1e-6)
    np.testing.assert_allclose(np.array(bounds[1::2]), points.max(axis=0) + half_voxel + 10.0, atol=1e-6)
    _click(qtbot, panel.ui.roiAroundSegmentButton)  # again: the same ROI is placed again, not a second one
    assert scene.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsROINode") == 1
    mine = _roi(scene.scene, (0, 0, 0), (5, 5, 5), "my ROI")  # a person's own ROI is never moved
    panel.ui.roiSelector.setCurrentNode(mine)
    _click(qtbot, panel.ui.roiAroundSegmentButton)
    assert _bounds(mine) == [-2.5, 2.5, -2.5, 2.5, -2.5, 2.5]
    assert panel._parameterNode.roi is not mine and panel._parameterNode.roi.GetName() == "pancreas (mine) ROI_1"
    assert _state_of(scene.scene, seg, ct) == before


# ---------------------------------------------------------------------------------------------- refusals
def _refused(panel, qtbot, scene, ct, caplog, expected: str, button="refineButton") -> None:
    before = _nodes(scene.scene)
    with caplog.at_level(logging.ERROR):
        _run(panel, qtbot, ct, button)
    assert panel.ui.statusLabel.text == "Failed."
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(expected in m for m in messages), messages
    assert _nodes(scene.scene) == before  # nothing made, nothing left behind
    assert panel.segment.result is None and panel.ui.refineButton.enabled
    caplog.clear()


def test_refusals_show_the_error_and_leave_the_scene_as_it_was(panel, scene, qtbot, always_on, caplog,
                                                               monkeypatch):
    ct = _ct(scene)
    seg = _segmentation(scene.scene, ct, segments=(("mine", BOX), ("nothing yet", None)))
    mine, empty = seg.GetSegmentation().GetNthSegmentID(0), seg.GetSegmentation().GetNthSegmentID(1)
    before = _state_of(scene.scene, seg, ct)
    # no segmentation, then no segment
    _refused(panel, qtbot, scene, ct, caplog, "No segment chosen")
    _choose(panel, seg, empty)
    _choose(panel, seg, mine)
    unwrap(panel.ui.refineSegmentComboBox).setCurrentIndex(-1)
    _refused(panel, qtbot, scene, ct, caplog, "No segment chosen")
    # an empty segment
    _choose(panel, seg, empty)
    _refused(panel, qtbot, scene, ct, caplog, "'nothing yet' of 'My segmentation' is empty")
    # an ROI that misses the CT, for Refine and for Segment; an ROI not placed yet
    _choose(panel, seg, mine, _roi(scene.scene, (5000.0, 5000.0, 5000.0), (10.0, 10.0, 10.0), "far away"))
    _refused(panel, qtbot, scene, ct, caplog, "The region of interest misses the image")
    _refused(panel, qtbot, scene, ct, caplog, "The region of interest misses the image", "segmentButton")
    panel.ui.roiSelector.setCurrentNode(scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "unplaced"))
    _refused(panel, qtbot, scene, ct, caplog, "The ROI 'unplaced' is not placed yet")
    # a prior on another grid than the CT (injected: Slicer's export onto the CT's grid gave another grid)
    import PancreasRSTNSlicerLib.guidance_nodes as guidance_nodes

    panel.ui.roiSelector.setCurrentNode(None)
    real = guidance_nodes.segment_to_image
    with monkeypatch.context() as patch:
        patch.setattr(guidance_nodes, "segment_to_image", lambda *a: real(*a)[2:, :, :])
        _refused(panel, qtbot, scene, ct, caplog, "lies on another grid than the CT")
    # "ROI around segment" without a segment, and around an empty one
    _choose(panel, None)
    with caplog.at_level(logging.ERROR):
        _click(qtbot, panel.ui.roiAroundSegmentButton)
        assert any("No segment chosen" in r.getMessage() for r in caplog.records)
        caplog.clear()
        _choose(panel, seg, empty)
        _click(qtbot, panel.ui.roiAroundSegmentButton)
        assert any("is empty" in r.getMessage() for r in caplog.records)
    assert _state_of(scene.scene, seg, ct) == before
    # and after all that, a refinement still works
    _choose(panel, seg, mine)
    _run(panel, qtbot, ct)
    assert panel.segment.rounds[0].stage == "prior" and _state_of(scene.scene, seg, ct) == before


def test_the_segment_list_follows_the_segmentation(panel, scene):
    ct = _ct(scene)
    seg = _segmentation(scene.scene, ct)
    _choose(panel, seg)
    combo = unwrap(panel.ui.refineSegmentComboBox)
    assert [combo.itemText(i) for i in range(combo.count())] == ["pancreas (mine)"]
    second = seg.GetSegmentation().AddEmptySegment("", "second")
    assert [combo.itemText(i) for i in range(combo.count())] == ["pancreas (mine)", "second"]
    combo.setCurrentIndex(1)
    assert panel._parameterNode.refineSegment == second
    seg.GetSegmentation().GetSegment(second).SetName("renamed")
    assert combo.itemText(1) == "renamed" and panel._parameterNode.refineSegment == second
    seg.GetSegmentation().RemoveSegment(second)
    assert combo.count() == 1 and panel._parameterNode.refineSegment == seg.GetSegmentation().GetNthSegmentID(0)
    _choose(panel, None)
    assert combo.count() == 0 and panel._parameterNode.refineSegment == ""


def test_replace_previous_never_removes_the_segmentation_being_refined(panel, scene, qtbot, always_on):
    """A person corrects an earlier result and refines it with "Replace previous" on: that result's folder stays."""
    ct = _ct(scene)
    _run(panel, qtbot, ct, "segmentButton", rounds=1)
    earlier = panel.segment.result.segmentation
    segment_id = earlier.GetSegmentation().GetNthSegmentID(0)
    before = _state_of(scene.scene, earlier, ct)
    panel.ui.replacePreviousCheckBox.checked = True
    _choose(panel, earlier, segment_id)
    _run(panel, qtbot, ct, rounds=1)
    assert panel.segment.rounds[0].stage == "prior"
    assert earlier.GetScene() is scene.scene and _state_of(scene.scene, earlier, ct) == before


# ---------------------------------------------------------------------------------------------- helpers
def _segment_labelmap(scene, seg, segment_id, reference):
    """A labelmap node holding the segment on the reference grid (for positions; removed with the scene)."""
    import SimpleITK as sitk

    from PancreasRSTNSlicerLib.guidance_nodes import segment_to_image
    from PancreasRSTNSlicerLib.mrml_geometry import update_volume_node_from_image

    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "segment voxels")
    image = segment_to_image(scene, seg, segment_id, reference)
    update_volume_node_from_image(node, sitk.Cast(image, sitk.sitkUInt8))
    return node


def _rotation_z(degrees: float, centre) -> object:
    import vtk

    transform = vtk.vtkTransform()
    transform.Translate(*centre)
    transform.RotateZ(degrees)
    return transform.GetMatrix()


def test_a_refine_that_fails_mid_run_removes_what_it_made_and_keeps_the_segment(panel, scene, qtbot, always_on,
                                                                                caplog, monkeypatch):
    """Injected: the engine fails after round 0 (the person's segment) has been shown."""
    import PancreasRSTNLib.engine.segmentation as segmentation

    real = segmentation.segment_image

    def failing(*args, **kwargs):
        for result in real(*args, **kwargs):
            yield result
            raise RuntimeError("injected failure after the prior round")

    monkeypatch.setattr(segmentation, "segment_image", failing)
    ct = _ct(scene)
    seg = _segmentation(scene.scene, ct)
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    before, nodes = _state_of(scene.scene, seg, ct), _nodes(scene.scene)
    _choose(panel, seg, segment_id)
    with caplog.at_level(logging.ERROR):
        _run(panel, qtbot, ct)
    assert panel.ui.statusLabel.text == "Failed." and panel.segment.result is None
    assert any("injected failure" in r.getMessage() for r in caplog.records)
    from PancreasRSTNSlicerLib.scene_nodes import organ_color_table

    assert _nodes(scene.scene) - nodes <= {organ_color_table(scene.scene)[0].GetID()}
    assert _state_of(scene.scene, seg, ct) == before
