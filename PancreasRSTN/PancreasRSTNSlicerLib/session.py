"""One segmentation run in the scene: the nodes of every round (labelmap, saliency volumes, table row, sequence
item), the final segmentation (organs arbitrated by probability, SNOMED CT terminology), and, on a failure or
cancel, the removal of everything the run made. Everything sits in one subject-hierarchy folder under the input's
study. MRML only (no Qt): tested with slicer-core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from PancreasRSTNLib.errors import RSTNError
from PancreasRSTNLib.organs import get_organ

from .background_run import Job
from .mrml_geometry import place_like, update_volume_node_from_image
from .scene import SceneContext
from .scene_nodes import (
    EN_DASH,
    INPUT_ATTRIBUTE,
    REFINED_FROM_ATTRIBUTE,
    ROLE_ATTRIBUTE,
    RUN_ATTRIBUTE,
    next_run_number,
    organ_color_table,
    remove_browser,
    remove_folder,
    remove_node,
    remove_previous_runs,
    terminology_entry,
    viridis_color_node,
)

if TYPE_CHECKING:
    from PancreasRSTNLib.engine.guidance import Guidance
    from PancreasRSTNLib.engine.segmentation import CheckedCT, GridRound
    from PancreasRSTNLib.io.geometry import CanonicalGeometry

    from .guidance_nodes import GuidanceNodes

#: The columns of an organ's rounds table, in order, with their VTK array class names.
TABLE_COLUMNS = (("round", "vtkIntArray"), ("stage", "vtkStringArray"), ("dsc_to_previous", "vtkDoubleArray"),
                 ("voxels", "vtkIntArray"), ("volume_ml", "vtkDoubleArray"), ("seconds", "vtkDoubleArray"),
                 ("device", "vtkStringArray"), ("converged", "vtkIntArray"))
#: the two more columns of a refinement's table: what each round changed of the person's segment
REFINE_COLUMNS = (("dsc_to_prior", "vtkDoubleArray"), ("volume_change_ml", "vtkDoubleArray"))
#: the word that marks a refinement's nodes (folder, segmentation)
REFINED = "refined"


@dataclass
class RoundNodes:
    """One round's nodes, with the line the panel shows about it (so nobody reads it back out of the table)."""

    organ: str
    index: int
    stage: str
    labelmap: Any
    saliency: dict[str, list[Any]] = field(default_factory=dict)  # view -> 3 scalar volume nodes
    summary: str = ""


def round_summary(result: GridRound, change: tuple[float, float] | None = None) -> str:
    """One line about a round for the panel: its voxels on the input grid and its DSC to the previous round;
    in a refinement also its DSC to the person's segment and the volume change (``change``)."""
    dsc = "-" if result.dsc_to_previous is None else f"{result.dsc_to_previous:.4f}"
    text = f"Round {result.index} ({result.stage}): {result.voxel_count} voxels, DSC to previous {dsc}"
    if change is not None:
        text += f", DSC to segment {change[0]:.4f} ({change[1]:+.2f} ml)"
    return text


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
    """One run on one input volume: opened by ``RunController`` after all checks passed."""

    def __init__(self, context: SceneContext, input_node, ct: CheckedCT, options, jobs: list[Job],
                 guidance: Guidance | None = None, guidance_nodes: GuidanceNodes | None = None) -> None:
        self.context = context
        self.scene = context.scene
        self.input_node = input_node
        self.ct = ct  # the input, checked once for the whole run (every organ starts from it)
        self.options = options
        self.jobs = jobs
        self.settings = options.run_settings()
        self.guidance = guidance  # a person's prior and/or region (checked), steering every round
        self.guidance_nodes = guidance_nodes  # the person's nodes it came from: only read, never changed
        # the person's segment on the canonical input grid, for each round's DSC to it and volume change
        self.prior_mask = None if guidance is None else guidance.prior_mask()
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
        sh = context.sh_node
        self.run_number = next_run_number(sh, input_node)
        parent = sh.GetItemParent(sh.GetItemByDataNode(input_node)) if sh.GetItemByDataNode(input_node) else 0
        if not parent:
            parent = sh.GetSceneItemID()
        names = "+".join(get_organ(j.organ).display_name for j in jobs)
        refined = f" {REFINED}" if self.refined else ""
        self.folder_item = sh.CreateFolderItem(
            parent, f"PancreasRSTN {names}{refined} {EN_DASH} {input_node.GetName()} {EN_DASH} run {self.run_number}")
        sh.SetItemAttribute(self.folder_item, RUN_ATTRIBUTE, str(self.run_number))
        sh.SetItemAttribute(self.folder_item, INPUT_ATTRIBUTE, input_node.GetID())
        if self.refined and guidance_nodes is not None and guidance_nodes.segmentation is not None:
            sh.SetItemAttribute(self.folder_item, REFINED_FROM_ATTRIBUTE,
                                f"{guidance_nodes.segmentation.GetID()}/{guidance_nodes.segment_id}")
        self.saliency_folder = 0

    @property
    def refined(self) -> bool:
        """A refinement of a person's segment (round 0 is their segment, stage "prior")."""
        return self.prior_mask is not None

    # ---------------------------------------------------------------- node helpers
    def _shared(self, make) -> object:
        """A node shared across runs (colour tables); removed on abort only if this run created it."""
        node, created = make(self.scene)
        if created:
            self.created.append(node.GetID())
        return node

    def _add(self, class_name: str, name: str, parent_item: int | None = None, role: str = ""):
        node = self.scene.AddNewNodeByClass(class_name, name)
        self.created.append(node.GetID())
        if role:
            node.SetAttribute(ROLE_ATTRIBUTE, role)
        sh = self.context.sh_node
        item = sh.GetItemByDataNode(node)
        target = parent_item or self.folder_item
        if item:
            sh.SetItemParent(item, target)
        else:
            sh.CreateItem(target, node)
        return node

    def _volume(self, class_name: str, name: str, image: sitk.Image, dtype, parent_item: int | None = None,
                role: str = ""):
        node = self._add(class_name, name, parent_item, role)
        update_volume_node_from_image(node, image, dtype)
        place_like(node, self.input_node)
        node.CreateDefaultDisplayNodes()
        for i in range(node.GetNumberOfDisplayNodes()):
            self.created.append(node.GetNthDisplayNode(i).GetID())
        return node

    def _ensure_chart(self):
        if self.chart is None:
            self.chart = self._add("vtkMRMLPlotChartNode",
                                   f"PancreasRSTN {EN_DASH} DSC vs round {EN_DASH} run {self.run_number}", role="chart")
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
        for name, class_name in TABLE_COLUMNS + (REFINE_COLUMNS if self.refined else ()):
            column = getattr(vtk, class_name)()
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
    def add_round(self, organ: str, result: GridRound) -> RoundNodes:
        """Turn one round of one organ into nodes (mask, saliency, table row, sequence item)."""
        if self.closed:
            raise RSTNError("This run is finished; start a new one.")
        display_name = get_organ(organ).display_name
        labelmap = self._volume("vtkMRMLLabelMapVolumeNode", f"{display_name} {EN_DASH} round {result.index}",
                                result.mask_image(get_organ(organ).label_value), np.uint8, role="round")
        labelmap.GetDisplayNode().SetAndObserveColorNodeID(self._shared(organ_color_table).GetID())
        labelmap.SetAttribute("PancreasRSTN.Round", str(result.index))
        labelmap.SetAttribute("PancreasRSTN.Organ", organ)
        change = self._change_from_prior(result)
        nodes = RoundNodes(organ, result.index, result.stage, labelmap, summary=round_summary(result, change))
        for view in result.saliency_views:
            nodes.saliency[view] = self._add_saliency(display_name, result, view)
        self._add_table_row(organ, result, change)
        self._sequence(organ).SetDataNodeAtValue(labelmap, str(result.index))
        self.rounds.setdefault(organ, []).append(nodes)
        self.final[organ] = result
        self.converged[organ] = result.converged
        if self.options.keep_only_final and len(self.rounds[organ]) > 1:
            self._drop_round_nodes(self.rounds[organ][-2])  # show only the newest round while running
        return nodes

    def _add_saliency(self, display_name: str, result: GridRound, view: str) -> list:
        """The three saliency channels of ``view`` as scalar volumes (Viridis) in the run's saliency folder."""
        if not self.saliency_folder:
            self.saliency_folder = self.context.sh_node.CreateFolderItem(self.folder_item, "Saliency maps")
        colors = self._shared(viridis_color_node)
        channels = []
        for c, image in enumerate(result.saliency_images(view)):
            node = self._volume("vtkMRMLScalarVolumeNode",
                                f"{display_name} {EN_DASH} round {result.index} {EN_DASH} saliency {view} ch{c}",
                                image, np.float32, self.saliency_folder, role="saliency")
            display = node.GetDisplayNode()
            display.SetAndObserveColorNodeID(colors.GetID())
            array = sitk.GetArrayViewFromImage(image)
            lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(lo, hi if hi > lo else lo + 1.0)
            node.SetAttribute("PancreasRSTN.Round", str(result.index))
            node.SetAttribute("PancreasRSTN.View", view)
            node.SetAttribute("PancreasRSTN.Channel", str(c))
            channels.append(node)
        return channels

    def _change_from_prior(self, result: GridRound) -> tuple[float, float] | None:
        """(DSC to the person's segment, volume change in ml) of a round of a refinement (the core's measure)."""
        from PancreasRSTNLib.engine.guidance import change_from_prior

        if self.prior_mask is None:
            return None
        return change_from_prior(self.prior_mask, result.canonical_mask, result.mapping.voxel_ml)

    def _add_table_row(self, organ: str, result: GridRound, change: tuple[float, float] | None = None) -> None:
        """The round's row of the organ's table (and so a point of the DSC plot); a refinement's row also holds
        the round's DSC to the person's segment and the volume change."""
        table = self._table(organ)
        dsc = result.dsc_to_previous
        values = {"round": result.index, "stage": result.stage,
                  "dsc_to_previous": float("nan") if dsc is None else float(dsc), "voxels": result.voxel_count,
                  "volume_ml": result.volume_ml, "seconds": float(sum(result.seconds.values())),
                  "device": result.device, "converged": int(result.converged)}
        if change is not None:
            values.update(dsc_to_prior=float(change[0]), volume_change_ml=float(change[1]))
        row = table.AddEmptyRow()
        vtable = table.GetTable()
        for name, value in values.items():
            column = vtable.GetColumnByName(name)
            if isinstance(value, str):
                column.SetValue(row, value)
            else:
                column.SetTuple1(row, value)
        vtable.Modified()
        table.Modified()

    def _final_mask_and_probability(self, organ: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(mask, probability) of an organ's newest round on the input grid, as [k, j, i] arrays; the probability
        only when several organs must be arbitrated."""
        result = self.final[organ]
        mask = sitk.GetArrayFromImage(result.mask_image()) > 0
        if len(self.final) == 1:
            return mask, None
        # GetArrayFromImage copies: a view of the temporary image would dangle
        return mask, sitk.GetArrayFromImage(result.probability_image()).astype(np.float32, copy=False)

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
        label_array = arbitrate({o: self._final_mask_and_probability(o) for o in self.final})
        organs = " + ".join(get_organ(o).display_name for o in self.final)
        name = (f"{self.input_node.GetName()} {organs} {REFINED} {EN_DASH} run {self.run_number}" if self.refined
                else f"{organs} {EN_DASH} RSTN {EN_DASH} run {self.run_number}")
        seg = self._add("vtkMRMLSegmentationNode", name, role="segmentation")
        seg.CreateDefaultDisplayNodes()
        for i in range(seg.GetNumberOfDisplayNodes()):
            self.created.append(seg.GetNthDisplayNode(i).GetID())
        seg.SetReferenceImageGeometryParameterFromVolumeNode(self.input_node)
        place_like(seg, self.input_node)
        fill_segmentation(self.scene, seg, label_array, self.ct.geometry, list(self.final), self.input_node)
        if self.options.keep_only_final:
            for organ_rounds in self.rounds.values():
                for nodes in organ_rounds:
                    self._drop_round_nodes(nodes)
            for organ in list(self.sequences):
                remove_browser(self.scene, self.browsers.pop(organ))
                remove_node(self.scene, self.sequences.pop(organ))
            if self.saliency_folder:
                remove_folder(self.scene, self.context.sh_node, self.saliency_folder)
                self.saliency_folder = 0
        if self.options.replace_previous:
            remove_previous_runs(self.scene, self.context.sh_node, self.input_node, keep_folder=self.folder_item,
                                 keep_nodes=self._persons_nodes())
        self.closed = True
        self.created = []
        return RunResult(self.folder_item, seg, dict(self.tables), self.chart, self.rounds, dict(self.sequences),
                         dict(self.converged))

    def _persons_nodes(self) -> list:
        """The person's nodes this run read (the segment's segmentation, the ROI): never removed with the earlier
        runs that "Replace previous" removes, even when they lie in such a run's folder (an edited result)."""
        nodes = self.guidance_nodes
        return [] if nodes is None else [n for n in (nodes.segmentation, nodes.roi) if n is not None]

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
        sh = self.context.sh_node
        if self.folder_item and sh.GetItemDataNode(self.folder_item) is None and sh.GetItemName(self.folder_item):
            remove_folder(self.scene, sh, self.folder_item)
        self.created = []
        self.closed = True


def arbitrate(finals: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """One label array from per-organ (mask, probability): a voxel claimed by several organs goes to the
    organ with the highest probability there (paper, section 5)."""
    organs = list(finals)
    if len(organs) == 1:  # nothing to arbitrate
        return finals[organs[0]][0].astype(np.uint8) * np.uint8(get_organ(organs[0]).label_value)
    masks = np.stack([finals[o][0] for o in organs])
    probs = np.stack([np.where(finals[o][0], finals[o][1], -np.inf) for o in organs])
    winner = np.argmax(probs, axis=0)
    labels = np.array([get_organ(o).label_value for o in organs], dtype=np.uint8)
    return np.where(masks.any(axis=0), labels[winner], 0).astype(np.uint8)


def fill_segmentation(scene, seg, label_array: np.ndarray, geometry: CanonicalGeometry, organs: list[str],
                      input_node) -> None:
    """Import a label array (on the input grid, whose ``geometry`` it gets) into ``seg``: one segment per
    organ, with SNOMED CT terminology and the standard colour, even when an organ ended up empty."""
    import slicer

    image = geometry.apply_to(sitk.GetImageFromArray(label_array))
    temp = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "PancreasRSTN temporary labelmap")
    try:
        update_volume_node_from_image(temp, image, np.uint8)
        place_like(temp, input_node)
        segmentation = seg.GetSegmentation()
        for organ in organs:
            o = get_organ(organ)
            value = get_organ(organ).label_value
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
        remove_node(scene, temp)
