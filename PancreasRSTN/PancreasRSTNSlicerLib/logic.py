"""The module's Logic: MRML nodes in, core calls, MRML nodes out. No Qt, so it is tested with slicer-core.

It answers what a run needs (the checked input, the jobs and their models) and exports results; the run itself
belongs to ``RunController`` (``run_controller.py``), which asks this Logic through the ``RunLogic`` interface.
Scene-node helpers live in ``scene_nodes.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import SimpleITK as sitk

from PancreasRSTNLib.errors import InputImageError, ModelPackageError, RSTNError
from PancreasRSTNLib.organs import get_organ

from .background_run import Job, user_message
from .guidance_nodes import GuidanceNodes, build_guidance, place_roi_around_segment
from .mrml_geometry import volume_node_to_image
from .scene import SceneContext, application_context
from .scene_nodes import (
    INPUT_ATTRIBUTE,  # noqa: F401 - re-exported: scripts and tests read run folders by it
    organ_color_table,
    remove_node,
)
from .session import RoundNodes, RunResult, RunSession  # noqa: F401 - re-exported to the module and scripts

if TYPE_CHECKING:
    from PancreasRSTNLib.engine.guidance import Guidance
    from PancreasRSTNLib.engine.segmentation import CheckedCT

#: A segmentation file that keeps segment names, colours and terminology (Slicer's own format).
SEG_NRRD = ".seg.nrrd"


@dataclass
class RunOptions:
    """What the GUI's parameter node holds, in core terms."""

    organs: list[str] = field(default_factory=lambda: ["pancreas"])
    thr: float = 0.99
    max_iter: int | None = None  # None: the model's validated count, else 10
    prob_threshold: float = 0.5
    margin: int = 20
    postprocess: bool = True
    views: tuple[str, ...] = ("X", "Y", "Z")
    batch_size: int | None = None
    device: str = "auto"
    keep_only_final: bool = False
    replace_previous: bool = False
    allow_non_ct: bool = False
    resample: bool = True  # to the model's spacing, when the CT's differs by more than 10 %

    def run_settings(self):
        """The run's one settings record (``RunSettings``), its engine settings checked."""
        from PancreasRSTNLib.engine.config import InferenceConfig, RunSettings

        config = InferenceConfig(thr=self.thr, max_iter=self.max_iter, prob_threshold=self.prob_threshold,
                                 margin=self.margin, postprocess=self.postprocess, views=tuple(self.views),
                                 batch_size=self.batch_size or None)
        config.validate()
        return RunSettings(config, device=self.device, resample=self.resample, allow_non_ct=self.allow_non_ct)


class SceneLogic:
    """MRML <-> core. Works in the Slicer application (default context) and on a slicer-core scene."""

    def __init__(self, context: SceneContext | None = None, models_root: str | Path | None = None) -> None:
        self.context = context or application_context()
        self.models_root = Path(models_root) if models_root else None

    # ---------------------------------------------------------------- input and models
    def validate_input(self, input_node, allow_non_ct: bool = False) -> CheckedCT:
        """Check the input node and its voxels (a 3-D CT in HU) and return them canonical, with the geometry back
        to the node's grid (LPS). The run's one check of its input: every organ of the run starts from it."""
        from PancreasRSTNLib.engine.segmentation import prepare_ct

        if input_node is None:
            raise InputImageError("No input volume selected. Load a CT (File > Add Data or DICOM) and select it as "
                                  "input.")
        name = input_node.GetName()
        if input_node.IsA("vtkMRMLLabelMapVolumeNode") or input_node.IsA("vtkMRMLSegmentationNode"):
            raise InputImageError(f"'{name}' is a labelmap (segmentation), not a CT image. Select the CT volume "
                                  "itself as input.")
        if not input_node.IsA("vtkMRMLScalarVolumeNode") or input_node.IsA("vtkMRMLVectorVolumeNode"):
            raise InputImageError(f"'{name}' ({input_node.GetClassName()}) is not a scalar CT volume.")
        if input_node.GetImageData() is None:
            raise InputImageError(f"'{name}' has no voxel data (still loading?).")
        transform = input_node.GetParentTransformNode()
        if transform is not None and not transform.IsTransformToWorldLinear():
            raise InputImageError(f"'{name}' is under a non-linear transform. Harden the transform (Transforms "
                                  "module) first.")
        return prepare_ct(volume_node_to_image(input_node), allow_non_ct)

    def installed_models(self):
        from PancreasRSTNLib.io.user_models import list_models

        return list_models(self.models_root)

    def model_description(self, organ: str) -> str:
        """What the panel says about the model a run would use for ``organ`` (rich text on one line, so Qt renders
        the tags): its name, spacing and measured accuracy, and its warning; or why none would be used."""
        import html

        from PancreasRSTNLib.io.user_models import find_model

        try:
            model = find_model(get_organ(organ).name, self.installed_models())
        except RSTNError as exc:
            return f"<b>{html.escape(str(exc))}</b>"
        details = []
        if model.spacing:
            details.append("x".join(f"{s:g}" for s in model.spacing) + " mm")
        if model.held_out_dsc is not None:
            details.append(f"held-out DSC {model.held_out_dsc:.2f}")
        text = f"Model: {html.escape(model.label)}" + (f" ({', '.join(details)})" if details else "")
        if model.warning:
            text += f"<br><b>{html.escape(model.warning)}</b>"
        return text

    def resolve_jobs(self, organs: Sequence[str]) -> list[Job]:
        """One job per organ, with the model that segments it (ModelPackageError when one is missing)."""
        from PancreasRSTNLib.io.user_models import find_model

        if not organs:
            raise ModelPackageError("No organ chosen. Pick at least one organ with an installed model.")
        models = self.installed_models()
        jobs = []
        for organ in organs:
            name = get_organ(organ).name
            jobs.append(Job(name, find_model(name, models).path))
        return jobs

    # ---------------------------------------------------------------- guidance (refine from a segment, limit to ROI)
    def build_guidance(self, ct: CheckedCT, input_node, nodes: GuidanceNodes | None) -> Guidance | None:
        """The run's guidance from the person's nodes (a segment to refine, an ROI), checked by the core on the
        CT's grid; None without any. The person's nodes are only read, and the scene is left as it was."""
        return build_guidance(self.context.scene, ct.geometry, input_node, nodes)

    def place_roi_around_segment(self, segmentation_node, segment_id: str, reference_node, roi_node=None):
        """A markups ROI around the segment's voxels on the reference (input) volume, 10 mm margin: ``roi_node``
        when this module made it, else a new one."""
        return place_roi_around_segment(self.context.scene, segmentation_node, segment_id, reference_node, roi_node)

    @staticmethod
    def error_message(exc: BaseException) -> tuple[str, str]:
        """(user message, kind) for an exception (kind: cancelled | out_of_memory | error)."""
        return user_message(exc)

    # ---------------------------------------------------------------- export
    def export_segmentation(self, seg, path: str | Path, reference_node=None, overwrite: bool = False) -> Path:
        """Write the segmentation as a labelmap file (.nii.gz, .nii, .nrrd, .mha) on the reference volume's grid,
        or as a .seg.nrrd (keeps names, colours and terminology). Refuses to overwrite unless asked, and never
        writes over an input (the reference volume's file, the segmentation's own file). The file is written under
        a temporary name, checked, then put in place: whole or not at all (``io.outputs``, as the CLI)."""
        from PancreasRSTNLib.errors import OutputPathError
        from PancreasRSTNLib.io.outputs import VOLUME_SUFFIXES, OutputPlan, check_volume_file

        path = Path(path)
        plan = OutputPlan(overwrite=overwrite)  # the core's one check of an output: format, folder, existing file
        for node, what in ((reference_node, "The reference volume's file"), (seg, "The segmentation's own file")):
            storage = node.GetStorageNode() if node is not None else None
            if storage is not None and storage.GetFileName():
                plan.protect(storage.GetFileName(), what)
        try:
            target = plan.file(path, "The export", suffixes=(SEG_NRRD, *VOLUME_SUFFIXES))
            with plan:
                if path.name.lower().endswith(SEG_NRRD):
                    staged = plan.staged(target)
                    self._write_seg_nrrd(seg, staged)
                    problem = check_volume_file(staged)
                    if problem:
                        raise OutputPathError(f"Could not write {path}: {problem}. Nothing was written there. Check "
                                              "the folder's free space and permissions.")
                else:
                    plan.write(target, self._labelmap_image(seg, reference_node))
        except BaseException:
            plan.abort()
            raise
        return path

    def _write_seg_nrrd(self, seg, path: Path) -> None:
        scene = self.context.scene
        storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        try:
            storage.SetFileName(str(path))
            if not storage.WriteData(seg):
                raise RSTNError(f"Could not write {path}.")
        finally:
            scene.RemoveNode(storage)

    def _labelmap_image(self, seg, reference_node) -> sitk.Image:
        """The visible segments as one labelmap on ``reference_node``'s grid, each organ with its own label value
        (the organs' colour table names them; the label value rule, ``PancreasRSTNLib.organs``)."""
        import slicer
        import vtk

        scene = self.context.scene
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "PancreasRSTN export")
        try:
            ids = vtk.vtkStringArray()
            seg.GetDisplayNode().GetVisibleSegmentIDs(ids)
            colors = organ_color_table(scene)[0]
            segmentations = slicer.vtkSlicerSegmentationsModuleLogic
            whole_grid = slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
            if not segmentations.ExportSegmentsToLabelmapNode(seg, ids, labelmap, reference_node, whole_grid, colors):
                raise RSTNError("Could not convert the segmentation to a labelmap for export.")
            return volume_node_to_image(labelmap)
        finally:
            remove_node(scene, labelmap)
