"""The Logic on real MRML (slicer-core): nodes, names, geometry, hierarchy, sequences, tables, terminology,
several organs, second runs, and every bad input leaving the scene as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from PancreasRSTNLib.errors import (
    DeviceOutOfMemoryError,
    InputImageError,
    ModelPackageError,
    OutputExistsError,
    RunCancelled,
)
from PancreasRSTNLib.organs import get_organ
from PancreasRSTNSlicerLib.logic import (
    INPUT_ATTRIBUTE,
    RunOptions,
    SceneLogic,
)
from PancreasRSTNSlicerLib.mrml_geometry import (
    ijk_to_ras_array,
    node_array_view,
    same_grid,
    volume_node_to_image,
)
from PancreasRSTNSlicerLib.run_controller import RunController
from PancreasRSTNSlicerLib.scene_nodes import run_folders, viridis_color_node
from PancreasRSTNSlicerLib.session import arbitrate
from slicer_helpers import ORIENTATIONS, add_volume_from_image, ijk_to_ras

FAST = {"max_iter": 2, "device": "cpu", "postprocess": False}


def _segment_array(ctx, seg, segment_id, reference):
    """A segment as a [k, j, i] array on the reference grid (slicer.util's helper needs slicer.mrmlScene)."""
    import slicer
    import vtk

    labelmap = ctx.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "tmp")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg, ids, labelmap, reference)
    array = np.array(node_array_view(labelmap))
    ctx.scene.RemoveNode(labelmap)
    return array


def _scene_state(ctx):
    """Node IDs and subject-hierarchy item count: what 'leaves the scene unchanged' compares."""
    import vtk

    ids = {ctx.scene.GetNthNode(i).GetID() for i in range(ctx.scene.GetNumberOfNodes())}
    items = vtk.vtkIdList()
    ctx.sh_node.GetItemChildren(ctx.sh_node.GetSceneItemID(), items, True)
    return ids, items.GetNumberOfIds()


def _ct_node(ctx, phantom_image, orientation="lps_file", name="CT"):
    direction = ORIENTATIONS[orientation]
    matrix = ijk_to_ras(direction, phantom_image.GetSpacing(), (10.0, -20.0, 30.0))
    return add_volume_from_image(ctx.scene, phantom_image, name=name, ijk_to_ras=matrix)


@pytest.mark.parametrize("orientation", ["lps_file", "oblique", "permuted"])
def test_rounds_on_exact_input_grid(ctx, models_root, phantom_image, orientation):
    """Every round's labelmap is on the input grid, and equals the core's result voxel for voxel."""
    from PancreasRSTNLib.engine.config import InferenceConfig, RunSettings
    from PancreasRSTNSlicerLib.background_run import Job, iterate_jobs

    node = _ct_node(ctx, phantom_image, orientation)
    before = np.array(node_array_view(node))
    logic = SceneLogic(ctx, models_root)
    rounds = []
    result = RunController(logic).run(node, RunOptions(**FAST), on_round=rounds.append)
    np.testing.assert_array_equal(node_array_view(node), before)  # input untouched
    assert len(rounds) >= 2 and rounds[0].stage == "coarse"
    # the same run straight through the core, on the image of the node
    settings = RunSettings(InferenceConfig(max_iter=2, postprocess=False), device="cpu")
    core = [r for _, r in iterate_jobs(volume_node_to_image(node), [Job("pancreas", models_root / "tiny-pancreas")],
                                       settings)]
    assert len(core) == len(rounds)
    for nodes, core_round in zip(rounds, core, strict=True):
        assert same_grid(nodes.labelmap, node)
        expected = sitk.GetArrayFromImage(core_round.mask_image())
        got = np.array(node_array_view(nodes.labelmap))
        np.testing.assert_array_equal(got > 0, expected > 0)
        assert set(np.unique(got)) <= {0, get_organ("pancreas").label_value}
        for view, channels in nodes.saliency.items():  # saliency maps: same voxels as the core's
            for sal, core_image in zip(channels, core_round.saliency_images(view), strict=True):
                np.testing.assert_array_equal(node_array_view(sal), sitk.GetArrayFromImage(core_image))
                np.testing.assert_allclose(volume_node_to_image(sal).GetOrigin(), core_image.GetOrigin(), atol=1e-6)
    assert result.segmentation.GetSegmentation().GetNumberOfSegments() == 1


def test_names_table_plot_sequence_and_saliency(ctx, models_root, phantom_image):
    node = _ct_node(ctx, phantom_image)
    logic = SceneLogic(ctx, models_root)
    rounds = []
    result = RunController(logic).run(node, RunOptions(**FAST), on_round=rounds.append)
    n = len(rounds)
    assert [r.labelmap.GetName() for r in rounds] == [f"Pancreas \u2013 round {i}" for i in range(n)]

    # table: one row per round, DSC empty (NaN) for the coarse round, present afterwards
    table = result.tables["pancreas"].GetTable()
    assert table.GetNumberOfRows() == n
    dsc = [table.GetValueByName(i, "dsc_to_previous").ToDouble() for i in range(n)]
    assert math.isnan(dsc[0]) and all(0.0 <= d <= 1.0 for d in dsc[1:])
    voxels = [table.GetValueByName(i, "voxels").ToInt() for i in range(n)]
    assert voxels == [int(np.count_nonzero(node_array_view(r.labelmap))) for r in rounds]
    # plot chart of DSC against round, fed by that table
    chart = result.chart
    assert chart.GetNumberOfPlotSeriesNodes() == 1
    series = chart.GetNthPlotSeriesNode(0)
    assert series.GetTableNode() is result.tables["pancreas"]
    assert (series.GetXColumnName(), series.GetYColumnName()) == ("round", "dsc_to_previous")

    # sequence gathering the rounds, scrubbable by a browser
    seq = result.sequences["pancreas"]
    assert seq.GetNumberOfDataNodes() == n
    assert [seq.GetNthIndexValue(i) for i in range(n)] == [str(i) for i in range(n)]
    np.testing.assert_array_equal(node_array_view(seq.GetNthDataNode(n - 1)), node_array_view(rounds[-1].labelmap))

    # saliency: 3 views x 3 channels per fine round, on the input grid (sub-region), perceptual colours
    fine = rounds[1]
    assert sorted(fine.saliency) == ["X", "Y", "Z"] and all(len(v) == 3 for v in fine.saliency.values())
    assert rounds[0].saliency == {}
    input_matrix = ijk_to_ras_array(node)
    dims = np.array(node.GetImageData().GetDimensions())
    for view, channels in fine.saliency.items():
        for c, sal in enumerate(channels):
            assert sal.GetName() == f"Pancreas \u2013 round 1 \u2013 saliency {view} ch{c}"
            m = ijk_to_ras_array(sal)
            np.testing.assert_allclose(m[:3, :3], input_matrix[:3, :3], atol=1e-9)  # same axes and spacing
            origin_ijk = np.linalg.solve(input_matrix, m[:, 3])[:3]  # where the sub-volume starts in input IJK
            np.testing.assert_allclose(origin_ijk, np.round(origin_ijk), atol=1e-6)
            start = np.round(origin_ijk).astype(int)
            size = np.array(sal.GetImageData().GetDimensions())
            assert (start >= 0).all() and (start + size <= dims).all()
            color = sal.GetDisplayNode().GetColorNode()
            assert color.GetName() in ("Viridis", "PancreasRSTN viridis") and color.GetNumberOfColors() == 256


def test_viridis_matches_matplotlib(ctx):
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib gives the reference viridis")
    node = viridis_color_node(ctx.scene)[0]
    rgba = [0.0] * 4
    cmap = matplotlib.colormaps["viridis"]
    for i in (0, 37, 128, 200, 255):
        node.GetColor(i, rgba)
        np.testing.assert_allclose(rgba[:3], cmap(i / 255)[:3], atol=0.02)


def test_segmentation_terminology_colour_and_hierarchy(ctx, models_root, phantom_image):
    import slicer

    from PancreasRSTNLib.organs import get_organ

    node = _ct_node(ctx, phantom_image)
    sh = ctx.sh_node
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "Abdomen CT")
    sh.CreateItem(study, node)  # Slicer's SH plugins do this on load; slicer-core has none
    result = RunController(SceneLogic(ctx, models_root)).run(node, RunOptions(**FAST))

    segmentation = result.segmentation.GetSegmentation()
    segment = segmentation.GetNthSegment(0)
    assert segment.GetName() == "Pancreas"
    np.testing.assert_allclose(segment.GetColor(), get_organ("pancreas").color, atol=1e-6)
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
    assert entry.GetTypeObject().GetCodeValue() == "15776009"
    assert entry.GetTypeObject().GetCodingSchemeDesignator() == "SCT"
    assert entry.GetCategoryObject().GetCodeValue() == "123037004"
    # the final segment equals the last round's mask
    last = result.rounds["pancreas"][-1].labelmap
    seg_array = _segment_array(ctx, result.segmentation, segmentation.GetNthSegmentID(0), node)
    np.testing.assert_array_equal(seg_array > 0, np.array(node_array_view(last)) > 0)

    # one folder for the run, under the input's study, holding every node of the run
    folder = result.folder_item
    assert sh.GetItemParent(folder) == study
    assert sh.GetItemAttribute(folder, INPUT_ATTRIBUTE) == node.GetID()
    for data_node in [result.segmentation, result.chart, result.tables["pancreas"], result.sequences["pancreas"],
                      *(r.labelmap for r in result.rounds["pancreas"])]:
        item = sh.GetItemByDataNode(data_node)
        assert item and (sh.GetItemParent(item) == folder or sh.GetItemParent(sh.GetItemParent(item)) == folder)


def test_second_run_does_not_overwrite_and_replace_on_request(ctx, models_root, phantom_image):
    node = _ct_node(ctx, phantom_image)
    logic = SceneLogic(ctx, models_root)
    first = RunController(logic).run(node, RunOptions(**FAST))
    first_ids = {first.segmentation.GetID(), *(r.labelmap.GetID() for r in first.rounds["pancreas"])}
    second = RunController(logic).run(node, RunOptions(**FAST))
    assert second.folder_item != first.folder_item
    assert "run 2" in second.segmentation.GetName() and "run 1" in first.segmentation.GetName()
    assert all(ctx.scene.GetNodeByID(i) is not None for i in first_ids)  # first run intact
    assert len(run_folders(ctx.sh_node, node)) == 2
    third = RunController(logic).run(node, RunOptions(replace_previous=True, **FAST))
    assert run_folders(ctx.sh_node, node) == [third.folder_item]
    assert all(ctx.scene.GetNodeByID(i) is None for i in first_ids)


def test_keep_only_final(ctx, models_root, phantom_image):
    node = _ct_node(ctx, phantom_image)
    result = RunController(SceneLogic(ctx, models_root)).run(node, RunOptions(keep_only_final=True, **FAST))
    assert ctx.scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0
    assert ctx.scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode") == 0
    scalar_names = [ctx.scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetName()
                    for i in range(ctx.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    assert scalar_names == ["CT"]  # no saliency maps left
    assert result.segmentation.GetScene() is not None
    assert result.tables["pancreas"].GetTable().GetNumberOfRows() >= 2  # the small summary stays


def test_several_organs_highest_probability_wins(ctx, models_root, phantom_image):
    a_mask = np.array([[[1, 1, 0, 0]]], bool)
    b_mask = np.array([[[0, 1, 1, 0]]], bool)
    a_prob = np.array([[[0.9, 0.6, 0.1, 0.0]]], np.float32)
    b_prob = np.array([[[0.2, 0.7, 0.8, 0.0]]], np.float32)
    labels = arbitrate({"pancreas": (a_mask, a_prob), "spleen": (b_mask, b_prob)})
    p, s = get_organ("pancreas").label_value, get_organ("spleen").label_value
    assert labels.tolist() == [[[p, s, s, 0]]]
    # one organ: its mask alone decides, no probability needed
    assert arbitrate({"spleen": (b_mask, None)}).tolist() == [[[0, s, s, 0]]]

    node = _ct_node(ctx, phantom_image)
    result = RunController(SceneLogic(ctx, models_root)).run(node, RunOptions(organs=["pancreas", "spleen"], **FAST))
    segmentation = result.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["Pancreas", "Spleen"]
    assert "78961009" in segmentation.GetNthSegment(1).GetTerminology()
    assert sorted(result.tables) == ["pancreas", "spleen"] and result.chart.GetNumberOfPlotSeriesNodes() == 2

    arrays = [_segment_array(ctx, result.segmentation, segmentation.GetNthSegmentID(i), node) for i in range(2)]
    assert not np.logical_and(arrays[0] > 0, arrays[1] > 0).any()  # no voxel in two organs


# ---------------------------------------------------------------- bad input: message, scene unchanged
def _assert_refused(ctx, logic, node, options, error, match):
    state = _scene_state(ctx)
    with pytest.raises(error, match=match):
        RunController(logic).run(node, options)
    assert _scene_state(ctx) == state


def test_no_volume(ctx, models_root):
    _assert_refused(ctx, SceneLogic(ctx, models_root), None, RunOptions(**FAST), InputImageError,
                    "No input volume")


def test_labelmap_as_input(ctx, models_root, phantom_image):
    label = add_volume_from_image(ctx.scene, phantom_image, "labels", class_name="vtkMRMLLabelMapVolumeNode")
    _assert_refused(ctx, SceneLogic(ctx, models_root), label, RunOptions(**FAST), InputImageError, "labelmap")


def test_2d_image(ctx, models_root, phantom_image):
    one_slice = phantom_image[:, :, 5:6]
    node = add_volume_from_image(ctx.scene, one_slice, "slice")
    _assert_refused(ctx, SceneLogic(ctx, models_root), node, RunOptions(**FAST), InputImageError, "2-D")


def test_not_ct(ctx, models_root):
    mr_like = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 1, (8, 9, 10)).astype(np.float32))
    node = add_volume_from_image(ctx.scene, mr_like, "MR")
    _assert_refused(ctx, SceneLogic(ctx, models_root), node, RunOptions(**FAST), InputImageError, "Hounsfield")


def test_missing_model_for_organ(ctx, models_root, phantom_image, monkeypatch):
    monkeypatch.setattr("PancreasRSTNLib.io.user_models.bundled_models_dirs", lambda: [])
    node = _ct_node(ctx, phantom_image)
    _assert_refused(ctx, SceneLogic(ctx, models_root), node, RunOptions(organs=["liver"], **FAST),
                    ModelPackageError, "No model is installed for organ 'liver'")


def test_cancelled_run_leaves_nothing(ctx, models_root, phantom_image):
    node = _ct_node(ctx, phantom_image)
    logic = SceneLogic(ctx, models_root)
    state = _scene_state(ctx)
    seen = []
    # cancel once the coarse round has been turned into nodes: those must disappear again
    with pytest.raises(RunCancelled):
        RunController(logic).run(node, RunOptions(**FAST), cancel=lambda: bool(seen), on_round=seen.append)
    assert seen and seen[0].labelmap.GetScene() is None
    assert _scene_state(ctx) == state


def test_out_of_memory_message(ctx, models_root, phantom_image, tmp_path):
    """A device out-of-memory error becomes the 'use CPU or a smaller batch' message; nothing is left."""
    from PancreasRSTNLib.io.model_package import default_metadata, save_model_package
    from PancreasRSTNLib.models.backbones import register_backbone
    from PancreasRSTNLib.models.model import RSTN, RSTNConfig

    class OutOfMemoryNet(torch.nn.Module):
        def __init__(self, **kwargs) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)

        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    register_backbone("oom_test", OutOfMemoryNet)
    root = tmp_path / "models"
    save_model_package(root / "oom", {v: RSTN(RSTNConfig(backbone="oom_test")) for v in "XYZ"},
                       default_metadata("oom", "pancreas"))
    logic = SceneLogic(ctx, root)
    node = _ct_node(ctx, phantom_image)
    state = _scene_state(ctx)
    with pytest.raises((torch.OutOfMemoryError, DeviceOutOfMemoryError)) as info:
        RunController(logic).run(node, RunOptions(**FAST))
    message, kind = logic.error_message(info.value)
    assert kind == "out_of_memory" and "CPU" in message
    assert _scene_state(ctx) == state


# ---------------------------------------------------------------- export
def test_export_nifti_and_seg_nrrd(ctx, models_root, phantom_image, tmp_path):
    node = _ct_node(ctx, phantom_image, "oblique")
    logic = SceneLogic(ctx, models_root)
    result = RunController(logic).run(node, RunOptions(**FAST))
    nii = logic.export_segmentation(result.segmentation, tmp_path / "pancreas.nii.gz", node)
    image = sitk.ReadImage(str(nii))
    expected = volume_node_to_image(result.rounds["pancreas"][-1].labelmap)
    assert image.GetSize() == expected.GetSize()
    np.testing.assert_allclose(image.GetDirection(), expected.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image) > 0, sitk.GetArrayFromImage(expected) > 0)
    seg_file = logic.export_segmentation(result.segmentation, tmp_path / "pancreas.seg.nrrd")
    assert "15776009" in seg_file.read_bytes()[:20000].decode("latin-1")
    with pytest.raises(OutputExistsError):
        logic.export_segmentation(result.segmentation, nii, node)


def test_the_controller_runs_any_logic_that_answers_run_logic(ctx, models_root, phantom_image):
    """RunController asks the Logic only what ``RunLogic`` declares, so a stand-in Logic needs no test hooks in
    production code: here every organ is segmented by the tiny pancreas model."""
    from PancreasRSTNSlicerLib.background_run import Job

    real = SceneLogic(ctx, models_root)

    class OneModelLogic:
        context = ctx
        validate_input = staticmethod(real.validate_input)

        def resolve_jobs(self, organs):
            return [Job(organ, models_root / "tiny-pancreas") for organ in organs]

    node = _ct_node(ctx, phantom_image)
    result = RunController(OneModelLogic()).run(node, RunOptions(organs=["spleen"], **FAST))
    assert list(result.rounds) == ["spleen"] and result.rounds["spleen"][0].labelmap.GetName().startswith("Spleen")


def test_a_panel_run_with_every_view_ticked_runs_a_z_only_model(tmp_path):
    """The panel ticks X, Y and Z by default; the default pancreas model has view Z only: the run uses Z (it used
    to refuse: 'no weights for view(s) X, Y')."""
    from helpers import ct_image, tiny_package
    from PancreasRSTNLib.engine.config import InferenceConfig, RunSettings
    from PancreasRSTNLib.errors import ModelPackageError
    from PancreasRSTNSlicerLib.background_run import Job, iterate_jobs

    model = tiny_package(tmp_path / "z_only", views="Z")
    settings = RunSettings(InferenceConfig(views=("X", "Y", "Z"), max_iter=1), device="cpu", allow_non_ct=True)
    rounds = list(iterate_jobs(ct_image(), [Job("pancreas", model)], settings))
    assert rounds and rounds[0][1].stage == "coarse"
    xy_only = RunSettings(InferenceConfig(views=("X", "Y"), max_iter=1), device="cpu", allow_non_ct=True)
    with pytest.raises(ModelPackageError, match="The model has view\\(s\\) Z only.*Tick one of the model's views"):
        list(iterate_jobs(ct_image(), [Job("pancreas", model)], xy_only))
