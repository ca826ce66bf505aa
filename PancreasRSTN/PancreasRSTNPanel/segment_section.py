"""The Segment and Results sections: the organ and device choice, a run (started, polled from a timer, cancelled,
its errors shown, an out-of-memory run offered again on the CPU), a refinement of a person's segment ("Refine
from segment") and a region that limits either ("Limit to ROI", "ROI around segment"), and the results (round
slider, saliency maps, the DSC plot, the Segment Editor, exports)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import qt
import slicer

from PancreasRSTNSlicerLib import display
from PancreasRSTNSlicerLib.guidance_nodes import GuidanceNodes, segments
from PancreasRSTNSlicerLib.logic import RunOptions
from PancreasRSTNSlicerLib.run_controller import Progressed, RoundShown, RunController, RunFinished


def options_from_parameters(p) -> RunOptions:
    """The run the parameter node asks for, in the library's terms."""
    views = tuple(v for v, on in (("X", p.viewX), ("Y", p.viewY), ("Z", p.viewZ)) if on)
    return RunOptions(organs=[p.organ], thr=float(p.convergenceThreshold), max_iter=int(p.maxRounds) or None,
                      prob_threshold=float(p.probThreshold), margin=int(p.margin), postprocess=bool(p.postprocess),
                      views=views, batch_size=int(p.batchSize) or None, device=str(p.device).lower(),
                      keep_only_final=bool(p.keepOnlyFinal), replace_previous=bool(p.replacePrevious),
                      allow_non_ct=bool(p.allowNonCT), resample=bool(p.resample))


class SegmentSection:
    POLL_MS = 100

    def __init__(self, ui, logic, parameters: Callable[[], object]) -> None:
        self.ui, self.logic, self.parameters = ui, logic, parameters
        self.runs = RunController(logic)
        self.rounds: list = []
        self.result = self.timer = self.dicom_dialog = None
        self.refining = False  # the current (or last) run refines a person's segment
        self._segments_shown: tuple = ()  # (segmentation ID, its segments) the segment list shows
        self._observed = None  # (segmentation node, observer tags): its segments are followed
        for widget, signal, slot in (
            ("segmentButton", "clicked(bool)", self.start), ("cancelButton", "clicked(bool)", self.cancel),
            ("refineButton", "clicked(bool)", self.refine),
            ("roiAroundSegmentButton", "clicked(bool)", self.roi_around_segment),
            ("refineSegmentComboBox", "currentIndexChanged(int)", self.segment_chosen),
            ("organComboBox", "currentIndexChanged(int)", self.organ_changed),
            ("deviceComboBox", "currentIndexChanged(int)", self.device_changed),
            ("roundSlider", "valueChanged(int)", self.show_round),
            ("showSaliencyCheckBox", "toggled(bool)", self.update_saliency),
            ("saliencyViewComboBox", "currentIndexChanged(int)", self.update_saliency),
            ("saliencyChannelComboBox", "currentIndexChanged(int)", self.update_saliency),
            ("showPlotButton", "clicked(bool)", self.show_plot),
            ("editInSegmentEditorButton", "clicked(bool)", self.edit_in_segment_editor),
            ("exportNiftiButton", "clicked(bool)", lambda: self.export(".nii.gz")),
            ("exportNrrdButton", "clicked(bool)", lambda: self.export(".seg.nrrd")),
            ("exportDicomButton", "clicked(bool)", self.export_dicom),
        ):
            getattr(ui, widget).connect(signal, slot)

    # ------------------------------------------------------------------ the choices
    def bind(self, p) -> None:
        """A parameter node was connected: show its organ and device; without an input, take the first CT."""
        first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not p.inputVolume and first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
            p.inputVolume = first
        for combo, value in ((self.ui.organComboBox, p.organ), (self.ui.deviceComboBox, p.device)):
            combo.currentIndex = max(combo.findData(value), combo.findText(value), combo.currentIndex)
        self.update_buttons()

    def update_buttons(self, caller=None, event=None) -> None:
        p = self.parameters()
        ready = bool(p and p.inputVolume and self.ui.organComboBox.count and (p.viewX or p.viewY or p.viewZ))
        self.ui.segmentButton.enabled = ready and not self.runs.running
        self.ui.cancelButton.enabled = self.runs.running
        self.ui.segmentButton.toolTip = "Run RSTN on the input volume." if ready else (
            "Select an input CT volume, an organ with an installed model and at least one view.")
        self.ui.refineButton.enabled = ready and not self.runs.running
        self.ui.roiAroundSegmentButton.enabled = not self.runs.running
        self.update_segments()
        self.device_changed()

    # ------------------------------------------------------------------ refine from segment, limit to ROI
    def update_segments(self) -> None:
        """The segment list follows the chosen segmentation node and its segments (added, removed, renamed)."""
        p = self.parameters()
        node = p.refineSegmentation if p else None
        self._observe(node)
        shown = (node.GetID() if node is not None else "", tuple(segments(node)))
        if shown == self._segments_shown:
            return
        self._segments_shown = shown
        combo = self.ui.refineSegmentComboBox
        combo.blockSignals(True)
        combo.clear()
        for segment_id, name in shown[1]:
            combo.addItem(name, segment_id)
        combo.blockSignals(False)
        wanted = combo.findData(p.refineSegment) if p and p.refineSegment else -1
        combo.currentIndex = wanted if wanted >= 0 else (0 if shown[1] else -1)
        self.segment_chosen()

    def _observe(self, node) -> None:
        import vtk

        if self._observed is not None and self._observed[0] is node:
            return
        if self._observed is not None:
            old, tags = self._observed
            for tag in tags:
                old.RemoveObserver(tag)
        self._observed = None
        if node is not None:
            events = (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved,
                      slicer.vtkSegmentation.SegmentModified, vtk.vtkCommand.ModifiedEvent)
            self._observed = (node, [node.AddObserver(e, lambda *args: self.update_segments()) for e in events])

    def release(self) -> None:
        """Stop following the segmentation node (the panel is cleaned up)."""
        self._observe(None)

    def segment_chosen(self, index: int = -1) -> None:
        segment_id = self.ui.refineSegmentComboBox.currentData or ""
        p = self.parameters()
        if p is not None and p.refineSegment != segment_id:
            p.refineSegment = segment_id

    def guidance(self, refine: bool) -> GuidanceNodes | None:
        """What the person chose for this run: the segment to refine (Refine) and the ROI (both)."""
        p = self.parameters()
        if not refine:
            return GuidanceNodes(roi=p.roi) if p.roi is not None else None
        # no segmentation or segment chosen: the Logic refuses it before anything is made
        return GuidanceNodes(p.refineSegmentation, self.ui.refineSegmentComboBox.currentData or "", p.roi, refine=True)

    def refine(self) -> None:
        """A new run whose round 0 is the chosen segment (stage "prior"); the segment itself is never changed."""
        self._start(refine=True)

    def roi_around_segment(self) -> None:
        p = self.parameters()
        try:
            roi = self.logic.place_roi_around_segment(p.refineSegmentation,
                                                      self.ui.refineSegmentComboBox.currentData or "",
                                                      p.inputVolume, p.roi)
        except Exception as exc:  # noqa: BLE001 - shown to the user; nothing was created
            return self.show_exception(exc)
        p.roi = roi
        self.ui.statusLabel.text = f"'{roi.GetName()}' placed around the segment (10 mm margin)."

    def organ_changed(self, index: int = -1) -> None:
        organ = self.ui.organComboBox.currentData
        if self.parameters() and organ:
            self.parameters().organ = organ
        self.ui.modelInfoLabel.text = self.logic.model_description(organ) if organ else (
            "No model installed: open the Model manager.")
        self.update_buttons()

    def device_changed(self, index: int = -1) -> None:
        from PancreasRSTNLib.devices import describe_device

        choice = self.ui.deviceComboBox.currentText
        if self.parameters() and self.parameters().device != choice:
            self.parameters().device = choice
        device, why = describe_device(choice)
        self.ui.deviceLabel.text = f"Runs on: {device.upper()} \u2014 {why}"

    # ------------------------------------------------------------------ a run
    def start(self) -> None:
        self._start(refine=False)

    def _start(self, refine: bool) -> None:
        self.refining = refine
        try:
            self.runs.start(self.parameters().inputVolume, options_from_parameters(self.parameters()),
                            self.guidance(refine))
        except Exception as exc:  # noqa: BLE001 - shown to the user; nothing was created
            return self.show_exception(exc)
        self.rounds, self.result = [], None
        self.ui.progressBar.value, self.ui.statusLabel.text = 0, "Starting..."
        self.timer = qt.QTimer()
        self.timer.setInterval(self.POLL_MS)
        self.timer.connect("timeout()", self.poll)
        self.timer.start()
        self.update_buttons()

    def cancel(self) -> None:
        if self.runs.running:
            self.runs.cancel()
            self.ui.statusLabel.text = "Cancelling (stops after the current batch)..."

    def poll(self) -> None:
        for event in self.runs.poll():
            if isinstance(event, Progressed):
                self.ui.progressBar.value, self.ui.statusLabel.text = int(round(1000 * event.fraction)), event.stage
            elif isinstance(event, RoundShown):
                self.rounds.append(event.nodes)
                self.ui.roundSlider.enabled, self.ui.roundSlider.maximum = True, len(self.rounds) - 1
                self.ui.roundSlider.value = len(self.rounds) - 1  # follows the newest round
                self.show_round(len(self.rounds) - 1)
            elif isinstance(event, RunFinished):
                self.result = event.result
                done = ", ".join(f"{k}: {'converged' if v else 'stopped at max rounds'}"
                                 for k, v in event.result.converged.items())
                self.ui.progressBar.value, self.ui.statusLabel.text = 1000, f"Done in {event.seconds:.1f} s ({done})."
                display.show_final(event.result, self.parameters().inputVolume)
            elif event.kind == "cancelled":
                self.ui.progressBar.value, self.ui.statusLabel.text = 0, "Cancelled: nothing was added to the scene."
            else:
                logging.error(event.details)
                self.ui.progressBar.value = 0
                self.show_error(event.message, event.kind)
        if not self.runs.running and self.timer is not None:
            self.timer.stop()
            self.timer = None
            self.update_buttons()

    def show_exception(self, exc: BaseException) -> None:
        self.show_error(*self.logic.error_message(exc))

    def show_error(self, message: str, kind: str = "error") -> None:
        self.ui.statusLabel.text = "Failed."
        slicer.util.errorDisplay(message, windowTitle="PancreasRSTN")
        if kind == "out_of_memory" and self.ui.deviceComboBox.currentText != "CPU":
            if slicer.util.confirmYesNoDisplay("Switch the device to CPU and try again?"):
                self.ui.deviceComboBox.currentIndex = self.ui.deviceComboBox.findText("CPU")
                self._start(self.refining)

    # ------------------------------------------------------------------ results
    def show_round(self, value: int) -> None:
        if value < len(self.rounds):
            nodes = self.rounds[value]
            display.show_round(self.parameters().inputVolume, nodes)
            self.ui.roundLabel.text = nodes.summary
            self.update_saliency()

    def update_saliency(self, *args) -> None:
        if self.rounds:
            nodes = self.rounds[min(self.ui.roundSlider.value, len(self.rounds) - 1)]
            display.show_saliency(nodes, self.ui.saliencyViewComboBox.currentText,
                                  self.ui.saliencyChannelComboBox.currentIndex, self.ui.showSaliencyCheckBox.checked)

    def show_plot(self) -> None:
        if self.result is not None:
            slicer.modules.plots.logic().ShowChartInLayout(self.result.chart)

    def edit_in_segment_editor(self) -> None:  # needs the Slicer application (main window, Segment Editor)
        if self.result is not None:
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(self.result.segmentation)
            editor.setSourceVolumeNode(self.parameters().inputVolume)

    def export(self, extension: str) -> None:
        name = self.result.segmentation.GetName().replace(" ", "_") if self.result else ""
        path = self.result and qt.QFileDialog.getSaveFileName(None, "Export segmentation", name + extension,
                                                              f"*{extension}")
        if path:
            try:  # the save dialog already asked the user to confirm replacing an existing file
                self.logic.export_segmentation(self.result.segmentation, path, self.parameters().inputVolume,
                                               overwrite=os.path.exists(path))
                self.ui.statusLabel.text = f"Exported {path}"
            except Exception as exc:  # noqa: BLE001
                self.show_exception(exc)

    def export_dicom(self) -> None:  # Slicer's DICOM export dialog (DICOM module): needs the Slicer application
        if self.result is not None:
            item = slicer.mrmlScene.GetSubjectHierarchyNode().GetItemByDataNode(self.result.segmentation)
            self.dicom_dialog = slicer.qSlicerDICOMExportDialog()  # DICOM SEG: the CT must come from DICOM
            self.dicom_dialog.setMRMLScene(slicer.mrmlScene)
            self.dicom_dialog.execDialog(item)
