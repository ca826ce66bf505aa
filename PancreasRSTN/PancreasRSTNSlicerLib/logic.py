"""The module's Logic: MRML nodes in, core calls, MRML nodes out. No Qt, so it is tested with slicer-core.

A run is a ``RunSession``: it validates everything before it creates a node, adds nodes round by round as
results arrive (from the GUI's worker thread, or synchronously in ``PancreasRSTNLogic.run``), and on any
failure or cancel removes every node it made. Everything a run makes sits in one subject-hierarchy folder,
under the input's study.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from PancreasRSTNLib.background_run import Job, iterate_jobs, user_message
from PancreasRSTNLib.errors import InputImageError, ModelPackageError, RSTNError
from PancreasRSTNLib.organs import ORGANS, get_organ

from .mrml_geometry import place_like, update_volume_node_from_image, volume_node_to_image
from .scene import SceneContext, application_context

EN_DASH = "\u2013"
RUN_ATTRIBUTE = "PancreasRSTN.Run"
INPUT_ATTRIBUTE = "PancreasRSTN.InputNodeID"
ROLE_ATTRIBUTE = "PancreasRSTN.Role"
ORGAN_COLOR_TABLE_NAME = "PancreasRSTN organs"
VIRIDIS_NAME = "PancreasRSTN viridis"
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMICAL_STRUCTURE = ("123037004", "SCT", "Anatomical Structure")

# matplotlib's viridis sampled at 17 points (perceptually uniform); interpolated to 256 entries.
_VIRIDIS_ANCHORS = (
    (0.267, 0.0049, 0.3294), (0.2823, 0.095, 0.4173), (0.2788, 0.1755, 0.4834), (0.259, 0.2515, 0.5247),
    (0.2297, 0.3224, 0.5457), (0.1994, 0.3876, 0.5546), (0.1727, 0.4488, 0.5579), (0.149, 0.5081, 0.5573),
    (0.1276, 0.5669, 0.5506), (0.1206, 0.6258, 0.5335), (0.1579, 0.6838, 0.5017), (0.2461, 0.7389, 0.452),
    (0.3692, 0.7889, 0.3829), (0.516, 0.8312, 0.2943), (0.6785, 0.8637, 0.1895), (0.8456, 0.8873, 0.0997),
    (0.9932, 0.9062, 0.1439),
)


def round_mask_image(result, label_value: int = 1) -> sitk.Image:
    """The round's mask on the input grid, ``label_value`` inside and 0 outside, as UInt8
    (segmentation.GridRound method, or a 0/1 image attribute)."""
    mask = result.mask_image
    if callable(mask):
        return mask(label_value)
    return sitk.Cast(mask > 0, sitk.sitkUInt8) * label_value


def round_probability_image(result) -> sitk.Image:
    probability = result.probability_image
    return probability() if callable(probability) else probability


def round_saliency_images(result) -> dict[str, list[sitk.Image]]:
    """view -> the three channel images, each on its sub-region of the input grid."""
    saliency = getattr(result, "saliency_images", None)
    if saliency is None:
        return {}
    if callable(saliency):
        return {view: saliency(view) for view in sorted(result.saliency)}
    return dict(saliency)


def remove_node(scene, node) -> None:
    """Remove a node with its display and storage nodes (the Slicer application does this itself; a bare
    slicer-core scene does not)."""
    if node is None or node.GetScene() is None:
        return
    dependents = []
    for i in range(node.GetNumberOfDisplayNodes() if hasattr(node, "GetNumberOfDisplayNodes") else 0):
        dependents.append(node.GetNthDisplayNode(i))
    if hasattr(node, "GetStorageNode"):
        dependents.append(node.GetStorageNode())
    scene.RemoveNode(node)
    for dependent in dependents:
        if dependent is not None and dependent.GetScene() is not None:
            scene.RemoveNode(dependent)


def remove_browser(scene, browser) -> None:
    """Remove a sequence browser, then its proxy nodes (in this order: the sequences logic re-creates a
    proxy removed while its browser still exists)."""
    import vtk

    if browser is None or browser.GetScene() is None:
        return
    proxies = vtk.vtkCollection()
    browser.GetAllProxyNodes(proxies)
    proxy_nodes = [proxies.GetItemAsObject(i) for i in range(proxies.GetNumberOfItems())]
    remove_node(scene, browser)
    for proxy in proxy_nodes:
        remove_node(scene, proxy)


def remove_folder(scene, sh, folder_item: int) -> None:
    """Remove a subject-hierarchy folder, every node under it (browsers with their proxies) and the folder.

    Done node by node: ``RemoveItem(item, removeDataNode=True, recursive=True)`` hangs on a bare slicer-core
    scene holding sequence browsers."""
    import vtk

    children = vtk.vtkIdList()
    sh.GetItemChildren(folder_item, children, True)
    nodes = [sh.GetItemDataNode(children.GetId(i)) for i in range(children.GetNumberOfIds())]
    for node in nodes:
        if node is not None and node.IsA("vtkMRMLSequenceBrowserNode"):
            remove_browser(scene, node)
    for node in reversed(nodes):
        remove_node(scene, node)
    children = vtk.vtkIdList()
    sh.GetItemChildren(folder_item, children, True)
    for i in reversed(range(children.GetNumberOfIds())):
        sh.RemoveItem(children.GetId(i), False, False)
    sh.RemoveItem(folder_item, False, False)


def organ_label_value(organ: str) -> int:
    """Label value of an organ in our labelmaps and colour table (1-based position in ORGANS)."""
    return list(ORGANS).index(get_organ(organ).name) + 1


def terminology_entry(organ: str) -> str:
    """Serialized Slicer terminology entry (SNOMED CT category and type) for an organ."""
    import slicer

    o = get_organ(organ)
    code, scheme, meaning = ANATOMICAL_STRUCTURE
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        TERMINOLOGY_CONTEXT, code, scheme, meaning, o.snomed_code, "SCT", o.snomed_meaning,
        "", "", "", "", "", "", "", "", "", "")


@dataclass
class RunOptions:
    """What the GUI's parameter node holds, in core terms."""

    organs: list[str] = field(default_factory=lambda: ["pancreas"])
    thr: float = 0.99
    max_iter: int = 10
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

    def inference_config(self):
        from PancreasRSTNLib.inference import InferenceConfig

        config = InferenceConfig(thr=self.thr, max_iter=self.max_iter, prob_threshold=self.prob_threshold,
                                 margin=self.margin, postprocess=self.postprocess, views=tuple(self.views),
                                 batch_size=self.batch_size or None)
        config.validate()
        return config


@dataclass
class RoundNodes:
    organ: str
    index: int
    stage: str
    labelmap: Any
    saliency: dict[str, list[Any]] = field(default_factory=dict)  # view -> 3 scalar volume nodes


@dataclass
class RunResult:
    """What a finished run left in the scene."""

    folder_item: int
    segmentation: Any
    tables: dict[str, Any]
    chart: Any
    rounds: dict[str, list[RoundNodes]]
    sequences: dict[str, Any]
    converged: dict[str, bool]


class RunSession:
    """One run on one input volume: created by ``PancreasRSTNLogic.begin_run`` after all checks passed."""

    def __init__(self, logic: PancreasRSTNLogic, input_node, image: sitk.Image, options: RunOptions,
                 jobs: list[Job]) -> None:
        self.logic = logic
        self.scene = logic.context.scene
        self.input_node = input_node
        self.image = image
        self.options = options
        self.jobs = jobs
        self.config = options.inference_config()
        self.created: list[str] = []  # node IDs, removed on abort
        self.rounds: dict[str, list[RoundNodes]] = {}
        self.tables: dict[str, Any] = {}
        self.sequences: dict[str, Any] = {}
        self.browsers: dict[str, Any] = {}
        # organ -> its newest round; the probability is read from it only at the end, and only to arbitrate
        # between several organs (converting it every round cost ~0.9 s per round at 512x512x240)
        self.final: dict[str, Any] = {}
        self.converged: dict[str, bool] = {}
        self.chart = None
        self.closed = False
        sh = logic.context.sh_node
        self.run_number = logic.next_run_number(input_node)
        parent = sh.GetItemParent(sh.GetItemByDataNode(input_node)) if sh.GetItemByDataNode(input_node) else 0
        if not parent:
            parent = sh.GetSceneItemID()
        names = "+".join(get_organ(j.organ).display_name for j in jobs)
        self.folder_item = sh.CreateFolderItem(parent, f"PancreasRSTN {names} {EN_DASH} {input_node.GetName()} {EN_DASH} run {self.run_number}")
        sh.SetItemAttribute(self.folder_item, RUN_ATTRIBUTE, str(self.run_number))
        sh.SetItemAttribute(self.folder_item, INPUT_ATTRIBUTE, input_node.GetID())
        self.saliency_folder = 0

    # ---------------------------------------------------------------- node helpers
    def _add(self, class_name: str, name: str, parent_item: int | None = None, role: str = ""):
        node = self.scene.AddNewNodeByClass(class_name, name)
        self.created.append(node.GetID())
        if role:
            node.SetAttribute(ROLE_ATTRIBUTE, role)
        sh = self.logic.context.sh_node
        item = sh.GetItemByDataNode(node)
        target = parent_item or self.folder_item
        if item:
            sh.SetItemParent(item, target)
        else:
            sh.CreateItem(target, node)
        return node

    def _volume(self, class_name: str, name: str, image: sitk.Image, dtype, parent_item: int | None = None, role: str = ""):
        node = self._add(class_name, name, parent_item, role)
        update_volume_node_from_image(node, image, dtype)
        place_like(node, self.input_node)
        node.CreateDefaultDisplayNodes()
        for i in range(node.GetNumberOfDisplayNodes()):
            self.created.append(node.GetNthDisplayNode(i).GetID())
        return node

    def _ensure_chart(self):
        if self.chart is None:
            self.chart = self._add("vtkMRMLPlotChartNode", f"PancreasRSTN {EN_DASH} DSC vs round {EN_DASH} run {self.run_number}", role="chart")
            self.chart.SetTitle("Inter-round DSC")
            self.chart.SetXAxisTitle("round")
            self.chart.SetYAxisTitle("DSC to previous round")
        return self.chart

    def _table(self, organ: str):
        if organ in self.tables:
            return self.tables[organ]
        import vtk

        display = get_organ(organ).display_name
        table = self._add("vtkMRMLTableNode", f"{display} {EN_DASH} rounds", role="table")
        for name, cls in (("round", vtk.vtkIntArray), ("stage", vtk.vtkStringArray), ("dsc_to_previous", vtk.vtkDoubleArray),
                          ("voxels", vtk.vtkIntArray), ("volume_ml", vtk.vtkDoubleArray), ("seconds", vtk.vtkDoubleArray),
                          ("device", vtk.vtkStringArray), ("converged", vtk.vtkIntArray)):
            column = cls()
            column.SetName(name)
            table.AddColumn(column)
        series = self._add("vtkMRMLPlotSeriesNode", f"{display} {EN_DASH} DSC", role="series")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("round")
        series.SetYColumnName("dsc_to_previous")
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(series.MarkerStyleCircle)
        series.SetColor(*get_organ(organ).color)
        self._ensure_chart().AddAndObservePlotSeriesNodeID(series.GetID())
        self.tables[organ] = table
        return table

    def _sequence(self, organ: str):
        if organ in self.sequences:
            return self.sequences[organ]
        display = get_organ(organ).display_name
        seq = self._add("vtkMRMLSequenceNode", f"{display} {EN_DASH} rounds sequence", role="sequence")
        seq.SetIndexName("round")
        seq.SetIndexUnit("")
        seq.SetIndexType(seq.NumericIndex)
        browser = self._add("vtkMRMLSequenceBrowserNode", f"{display} {EN_DASH} rounds browser", role="browser")
        browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
        self.sequences[organ] = seq
        self.browsers[organ] = browser
        return seq

    # ---------------------------------------------------------------- rounds
    def add_round(self, organ: str, result) -> RoundNodes:
        """Turn one round of one organ into nodes (mask, saliency, table row, sequence item)."""
        if self.closed:
            raise RSTNError("This run is finished; start a new one.")
        o = get_organ(organ)
        index = int(result.index)
        label = organ_label_value(organ)
        mask_image = round_mask_image(result, label)
        labelmap = self._volume("vtkMRMLLabelMapVolumeNode", f"{o.display_name} {EN_DASH} round {index}", mask_image, np.uint8,
                                role="round")
        labelmap.GetDisplayNode().SetAndObserveColorNodeID(self.logic.organ_color_table(self).GetID())
        labelmap.SetAttribute("PancreasRSTN.Round", str(index))
        labelmap.SetAttribute("PancreasRSTN.Organ", organ)
        nodes = RoundNodes(organ, index, str(result.stage), labelmap)

        saliency_images = round_saliency_images(result)
        if saliency_images:
            if not self.saliency_folder:
                sh = self.logic.context.sh_node
                self.saliency_folder = sh.CreateFolderItem(self.folder_item, "Saliency maps")
            colors = self.logic.viridis_color_node(self)
            for view, channels in saliency_images.items():
                nodes.saliency[view] = []
                for c, image in enumerate(channels):
                    node = self._volume("vtkMRMLScalarVolumeNode",
                                        f"{o.display_name} {EN_DASH} round {index} {EN_DASH} saliency {view} ch{c}",
                                        image, np.float32, self.saliency_folder, role="saliency")
                    display = node.GetDisplayNode()
                    display.SetAndObserveColorNodeID(colors.GetID())
                    array = sitk.GetArrayViewFromImage(image)
                    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
                    display.AutoWindowLevelOff()
                    display.SetWindowLevelMinMax(lo, hi if hi > lo else lo + 1.0)
                    node.SetAttribute("PancreasRSTN.Round", str(index))
                    node.SetAttribute("PancreasRSTN.View", view)
                    node.SetAttribute("PancreasRSTN.Channel", str(c))
                    nodes.saliency[view].append(node)

        voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask_image)))
        spacing = self.image.GetSpacing()
        table = self._table(organ)
        dsc = result.dsc_to_previous
        seconds = float(sum((getattr(result, "seconds", None) or {}).values()))
        row = table.AddEmptyRow()
        values = {"round": index, "stage": str(result.stage), "dsc_to_previous": float("nan") if dsc is None else float(dsc),
                  "voxels": voxels, "volume_ml": voxels * float(np.prod(spacing)) / 1000.0, "seconds": seconds,
                  "device": str(getattr(result, "device", "")), "converged": int(bool(getattr(result, "converged", False)))}
        vtable = table.GetTable()
        for name, value in values.items():
            column = vtable.GetColumnByName(name)
            if isinstance(value, str):
                column.SetValue(row, value)
            else:
                column.SetTuple1(row, value)
        vtable.Modified()
        table.Modified()

        self._sequence(organ).SetDataNodeAtValue(labelmap, str(index))
        self.rounds.setdefault(organ, []).append(nodes)
        self.final[organ] = result
        self.converged[organ] = bool(getattr(result, "converged", False))
        if self.options.keep_only_final and len(self.rounds[organ]) > 1:
            self._drop_round_nodes(self.rounds[organ][-2])  # show only the newest round while running
        return nodes

    def _final_mask_and_probability(self, organ: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(mask, probability) of an organ's newest round on the input grid, as [k, j, i] arrays; the probability
        only when several organs must be arbitrated."""
        result = self.final[organ]
        mask = sitk.GetArrayFromImage(round_mask_image(result)) > 0
        if len(self.final) == 1:
            return mask, None
        # GetArrayFromImage copies: a view of the temporary image would dangle
        return mask, sitk.GetArrayFromImage(round_probability_image(result)).astype(np.float32, copy=False)

    def _drop_round_nodes(self, nodes: RoundNodes) -> None:
        for node in [nodes.labelmap] + [n for ns in nodes.saliency.values() for n in ns]:
            remove_node(self.scene, node)
        nodes.labelmap = None
        nodes.saliency = {}

    # ---------------------------------------------------------------- end
    def finish(self) -> RunResult:
        """Arbitrate organs, build the segmentation node, and tidy up as the options ask."""
        if not self.final:
            raise RSTNError("The run produced no rounds, so there is nothing to show.")
        label_array = self.logic.arbitrate({o: self._final_mask_and_probability(o) for o in self.final})
        seg = self._add("vtkMRMLSegmentationNode", f"{' + '.join(get_organ(o).display_name for o in self.final)} "
                        f"{EN_DASH} RSTN {EN_DASH} run {self.run_number}", role="segmentation")
        seg.CreateDefaultDisplayNodes()
        for i in range(seg.GetNumberOfDisplayNodes()):
            self.created.append(seg.GetNthDisplayNode(i).GetID())
        seg.SetReferenceImageGeometryParameterFromVolumeNode(self.input_node)
        place_like(seg, self.input_node)
        self.logic.fill_segmentation(seg, label_array, self.image, list(self.final), self)
        if self.options.keep_only_final:
            for organ_rounds in self.rounds.values():
                for nodes in organ_rounds:
                    self._drop_round_nodes(nodes)
            for organ in list(self.sequences):
                remove_browser(self.scene, self.browsers.pop(organ))
                remove_node(self.scene, self.sequences.pop(organ))
            if self.saliency_folder:
                remove_folder(self.scene, self.logic.context.sh_node, self.saliency_folder)
                self.saliency_folder = 0
        if self.options.replace_previous:
            self.logic.remove_previous_runs(self.input_node, keep_folder=self.folder_item)
        self.closed = True
        self.created = []
        return RunResult(self.folder_item, seg, dict(self.tables), self.chart, self.rounds, dict(self.sequences),
                         dict(self.converged))

    def abort(self) -> None:
        """Remove everything this run created (cancel, error): the scene is left as it was."""
        if self.closed:
            return
        for browser in self.browsers.values():
            remove_browser(self.scene, browser)
        for node_id in reversed(self.created):
            node = self.scene.GetNodeByID(node_id)
            if node is not None:
                remove_node(self.scene, node)
        sh = self.logic.context.sh_node
        if self.folder_item and sh.GetItemDataNode(self.folder_item) is None and sh.GetItemName(self.folder_item):
            remove_folder(self.scene, sh, self.folder_item)
        self.created = []
        self.closed = True


class PancreasRSTNLogic:
    """MRML <-> core. Works in the Slicer application (default context) and on a slicer-core scene."""

    def __init__(self, context: SceneContext | None = None, models_root: str | Path | None = None) -> None:
        self.context = context or application_context()
        self.models_root = Path(models_root) if models_root else None

    # ---------------------------------------------------------------- input and models
    def validate_input(self, input_node, allow_non_ct: bool = False) -> sitk.Image:
        """Check the input node and return a copy of it as a SimpleITK image (LPS, same grid)."""
        from PancreasRSTNLib.volume_io import validate_ct

        if input_node is None:
            raise InputImageError("No input volume selected. Load a CT (File > Add Data or DICOM) and select it as input.")
        if input_node.IsA("vtkMRMLLabelMapVolumeNode") or input_node.IsA("vtkMRMLSegmentationNode"):
            raise InputImageError(
                f"'{input_node.GetName()}' is a labelmap (segmentation), not a CT image. Select the CT volume itself as input."
            )
        if not input_node.IsA("vtkMRMLScalarVolumeNode") or input_node.IsA("vtkMRMLVectorVolumeNode"):
            raise InputImageError(f"'{input_node.GetName()}' ({input_node.GetClassName()}) is not a scalar CT volume.")
        if input_node.GetImageData() is None:
            raise InputImageError(f"'{input_node.GetName()}' has no voxel data (still loading?).")
        transform = input_node.GetParentTransformNode()
        if transform is not None and not transform.IsTransformToWorldLinear():
            raise InputImageError(
                f"'{input_node.GetName()}' is under a non-linear transform. Harden the transform (Transforms module) first."
            )
        image = volume_node_to_image(input_node)
        validate_ct(image, allow_non_ct=allow_non_ct)
        return image

    def installed_models(self):
        from PancreasRSTNLib.user_models import list_models

        return list_models(self.models_root)

    def model_description(self, organ: str) -> str:
        """What the panel says about the model a run would use for ``organ`` (rich text on one line, so Qt renders
        the tags): its name, spacing and measured accuracy, and its warning; or why none would be used."""
        import html

        from PancreasRSTNLib.user_models import find_model

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
        from PancreasRSTNLib.user_models import find_model

        if not organs:
            raise ModelPackageError("No organ chosen. Pick at least one organ with an installed model.")
        models = self.installed_models()
        jobs = []
        for organ in organs:
            name = get_organ(organ).name
            jobs.append(Job(name, find_model(name, models).path))
        return jobs

    # ---------------------------------------------------------------- runs
    def begin_run(self, input_node, options: RunOptions) -> RunSession:
        """Check input, options and models, then open a session (creates the run folder only)."""
        image = self.validate_input(input_node, options.allow_non_ct)
        options.inference_config()
        jobs = self.resolve_jobs(options.organs)
        return RunSession(self, input_node, image, options, jobs)

    def run(self, input_node, options: RunOptions | None = None,
            progress: Callable[[float, str], None] | None = None, cancel: Callable[[], bool] | None = None,
            on_round: Callable[[RoundNodes], None] | None = None, **job_kwargs) -> RunResult:
        """Synchronous run (scripts, tests, the self-test). On any error the scene is left unchanged."""
        options = options or RunOptions()
        session = self.begin_run(input_node, options)
        try:
            for organ, result in iterate_jobs(session.image, session.jobs, session.config, options.device,
                                              progress=progress, cancel=cancel, allow_non_ct=options.allow_non_ct,
                                              resample=options.resample,
                                              **job_kwargs):
                nodes = session.add_round(organ, result)
                if on_round is not None:
                    on_round(nodes)
            return session.finish()
        except BaseException:
            session.abort()
            raise

    @staticmethod
    def error_message(exc: BaseException) -> tuple[str, str]:
        """(user message, kind) for an exception (kind: cancelled | out_of_memory | error)."""
        return user_message(exc)

    # ---------------------------------------------------------------- organs
    @staticmethod
    def arbitrate(finals: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
        """One label array from per-organ (mask, probability): a voxel claimed by several organs goes to the
        organ with the highest probability there (paper, section 5)."""
        organs = list(finals)
        if len(organs) == 1:  # nothing to arbitrate
            return finals[organs[0]][0].astype(np.uint8) * np.uint8(organ_label_value(organs[0]))
        masks = np.stack([finals[o][0] for o in organs])
        probs = np.stack([np.where(finals[o][0], finals[o][1], -np.inf) for o in organs])
        winner = np.argmax(probs, axis=0)
        labels = np.array([organ_label_value(o) for o in organs], dtype=np.uint8)
        return np.where(masks.any(axis=0), labels[winner], 0).astype(np.uint8)

    def fill_segmentation(self, seg, label_array: np.ndarray, reference: sitk.Image, organs: list[str],
                          session: RunSession | None = None) -> None:
        """Import a label array (on the input grid) into ``seg``: one segment per organ, with SNOMED CT
        terminology and the standard colour, even when an organ ended up empty."""
        import slicer

        image = sitk.GetImageFromArray(label_array)
        image.CopyInformation(reference)
        temp = self.context.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "PancreasRSTN temporary labelmap")
        try:
            update_volume_node_from_image(temp, image, np.uint8)
            place_like(temp, session.input_node if session else temp)
            segmentation = seg.GetSegmentation()
            for organ in organs:
                o = get_organ(organ)
                value = organ_label_value(organ)
                single = sitk.Cast(image == value, sitk.sitkUInt8)
                update_volume_node_from_image(temp, single, np.uint8)
                before = set(segmentation.GetSegmentIDs())
                if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temp, seg):
                    raise RSTNError(f"Could not import the {o.display_name} mask into the segmentation.")
                new_ids = [s for s in segmentation.GetSegmentIDs() if s not in before]
                if new_ids:
                    segment_id = new_ids[0]
                else:  # empty mask: keep a named, empty segment so the user sees the organ was not found
                    segment_id = segmentation.AddEmptySegment(o.name)
                segment = segmentation.GetSegment(segment_id)
                segment.SetName(o.display_name)
                segment.SetColor(*o.color)
                segment.SetTerminology(terminology_entry(organ))
                segment.SetTag("PancreasRSTN.Organ", organ)
        finally:
            remove_node(self.context.scene, temp)

    # ---------------------------------------------------------------- shared helper nodes
    def organ_color_table(self, session: RunSession | None = None):
        """The labelmaps' colour table (one entry per organ, standard colours), created once per scene."""
        scene = self.context.scene
        node = scene.GetFirstNodeByName(ORGAN_COLOR_TABLE_NAME)
        if node is not None and node.IsA("vtkMRMLColorTableNode"):
            return node
        node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", ORGAN_COLOR_TABLE_NAME)
        node.SetTypeToUser()
        node.SetNumberOfColors(len(ORGANS) + 1)
        node.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
        for organ in ORGANS.values():
            node.SetColor(organ_label_value(organ.name), organ.display_name, *organ.color, 1.0)
        if session is not None:
            session.created.append(node.GetID())
        return node

    def viridis_color_node(self, session: RunSession | None = None):
        """A perceptual colour map for saliency: Slicer's Viridis when present, else our own copy."""
        scene = self.context.scene
        for name in ("Viridis", VIRIDIS_NAME):
            nodes = scene.GetNodesByName(name)
            for i in range(nodes.GetNumberOfItems()):
                node = nodes.GetItemAsObject(i)
                if node.IsA("vtkMRMLColorNode"):
                    return node
        node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", VIRIDIS_NAME)
        node.SetTypeToUser()
        anchors = np.array(_VIRIDIS_ANCHORS)
        x = np.linspace(0, 1, len(anchors))
        t = np.linspace(0, 1, 256)
        rgb = np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], axis=1)
        node.SetNumberOfColors(256)
        for i, (r, g, b) in enumerate(rgb):
            node.SetColor(i, f"{i}", float(r), float(g), float(b), 1.0)
        if session is not None:
            session.created.append(node.GetID())
        return node

    # ---------------------------------------------------------------- runs in the hierarchy
    def run_folders(self, input_node) -> list[int]:
        """Subject-hierarchy folders of earlier runs on this input."""
        import vtk

        sh = self.context.sh_node
        ids = vtk.vtkIdList()
        sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
        out = []
        for i in range(ids.GetNumberOfIds()):
            item = ids.GetId(i)
            if sh.GetItemAttribute(item, INPUT_ATTRIBUTE) == input_node.GetID() and sh.GetItemAttribute(item, RUN_ATTRIBUTE):
                out.append(item)
        return out

    def next_run_number(self, input_node) -> int:
        sh = self.context.sh_node
        numbers = [int(sh.GetItemAttribute(item, RUN_ATTRIBUTE)) for item in self.run_folders(input_node)]
        return max(numbers, default=0) + 1

    def remove_previous_runs(self, input_node, keep_folder: int = 0) -> int:
        """Remove earlier runs' folders and nodes (only when the user asked to replace them)."""
        sh = self.context.sh_node
        removed = 0
        for item in self.run_folders(input_node):
            if item != keep_folder:
                remove_folder(self.context.scene, sh, item)
                removed += 1
        return removed

    # ---------------------------------------------------------------- export
    def export_segmentation(self, seg, path: str | Path, reference_node=None, overwrite: bool = False) -> Path:
        """Write the segmentation as a labelmap file (.nii.gz, .nii, .nrrd) on the reference volume's grid, or
        as a .seg.nrrd (keeps names, colours and terminology). Refuses to overwrite unless asked."""
        import slicer

        from PancreasRSTNLib.errors import OutputExistsError

        path = Path(path)
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists already. Choose another name or confirm overwriting.")
        path.parent.mkdir(parents=True, exist_ok=True)
        scene = self.context.scene
        if path.name.endswith(".seg.nrrd"):
            storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
            try:
                storage.SetFileName(str(path))
                if not storage.WriteData(seg):
                    raise RSTNError(f"Could not write {path}.")
            finally:
                scene.RemoveNode(storage)
            return path
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "PancreasRSTN export")
        try:
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportVisibleSegmentsToLabelmapNode(seg, labelmap, reference_node)
            if not ok:
                raise RSTNError("Could not convert the segmentation to a labelmap for export.")
            image = volume_node_to_image(labelmap)
            sitk.WriteImage(image, str(path), useCompression=True)
        finally:
            remove_node(scene, labelmap)
        return path

    # ---------------------------------------------------------------- display (no Qt; Slicer app only)
    @staticmethod
    def round_summary(nodes: RoundNodes, table) -> str:
        """One line about a round for the GUI (from the run's table)."""
        vtable = table.GetTable()
        for row in range(vtable.GetNumberOfRows()):
            if int(vtable.GetValueByName(row, "round").ToInt()) == nodes.index:
                dsc = vtable.GetValueByName(row, "dsc_to_previous").ToDouble()
                voxels = vtable.GetValueByName(row, "voxels").ToInt()
                dsc_text = "-" if math.isnan(dsc) else f"{dsc:.4f}"
                return f"Round {nodes.index} ({nodes.stage}): {voxels} voxels, DSC to previous {dsc_text}"
        return f"Round {nodes.index} ({nodes.stage})"


def now() -> float:
    return time.perf_counter()
