"""PancreasRSTN: pancreas and small-organ CT segmentation with the Recurrent Saliency Transformation Network.

The 3D Slicer scripted module: Module, parameter node, a Widget that binds the .ui to the library, the Logic
(``PancreasRSTNSlicerLib.logic`` plus the parameter node) and the self-test. The work is done by
``PancreasRSTNSlicerLib`` (MRML <-> core: runs, sessions, display, models, training, dependencies) over the
pure-Python core ``PancreasRSTNLib``. The Qt imports are guarded so that the Logic also works with the Qt-free
slicer-core wheel.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import slicer
from slicer.util import VTKObservationMixin

_MODULE_DIR = Path(__file__).resolve().parent
if str(_MODULE_DIR) not in sys.path:  # the core and the Slicer helpers ship next to this file
    sys.path.insert(0, str(_MODULE_DIR))

from PancreasRSTNSlicerLib import display  # noqa: E402
from PancreasRSTNSlicerLib.logic import PancreasRSTNLogic as _CoreLogic  # noqa: E402
from PancreasRSTNSlicerLib.logic import RunOptions, RunResult, RunSession  # noqa: E402,F401

try:  # the Slicer application (Qt, CTK, scripted-module base classes)
    import ctk  # noqa: F401
    import qt
    import vtk
    from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )

    HAS_GUI = True
except ImportError:  # slicer-core: no Qt; only the Logic is usable
    HAS_GUI = False

    class _NoApplication:  # the base of the classes that need the Slicer application
        def __init__(self, *args) -> None:
            pass

    ScriptedLoadableModule = ScriptedLoadableModuleLogic = _NoApplication
    ScriptedLoadableModuleWidget = ScriptedLoadableModuleTest = _NoApplication

    def parameterNodeWrapper(cls):  # type: ignore[no-redef]  # noqa: N802
        return cls

    def WithinRange(lo, hi):  # type: ignore[no-redef]  # noqa: N802
        return (lo, hi)


class PancreasRSTN(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "PancreasRSTN"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["PancreasRSTN contributors"]
        self.parent.helpText = ("Segments the pancreas (and other small abdominal organs with a model) in CT with the "
                                "Recurrent Saliency Transformation Network, showing every refinement round and the "
                                "saliency maps that steered it. Research use only: not a medical device.")
        self.parent.acknowledgementText = (
            "RSTN: Q. Yu, L. Xie, Y. Wang, Y. Zhou, E. K. Fishman, A. L. Yuille, 'Recurrent Saliency Transformation "
            "Network: Incorporating Multi-Stage Visual Cues for Small Organ Segmentation', CVPR 2018.")


@parameterNodeWrapper
class PancreasRSTNParameterNode:
    """GUI state saved with the scene. Names match the SlicerParameterName properties of the .ui file."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    organ: str = "pancreas"
    convergenceThreshold: Annotated[float, WithinRange(0.5, 1.0)] = 0.99
    maxRounds: Annotated[int, WithinRange(1, 50)] = 10
    keepOnlyFinal: bool = False
    replacePrevious: bool = False
    probThreshold: Annotated[float, WithinRange(0.05, 0.95)] = 0.5
    margin: Annotated[int, WithinRange(0, 100)] = 20
    viewX: bool = True
    viewY: bool = True
    viewZ: bool = True
    postprocess: bool = True
    allowNonCT: bool = False
    resample: bool = True
    batchSize: Annotated[int, WithinRange(0, 256)] = 0
    device: str = "Auto"
    trainDatasetDir: Path = Path()
    trainOutputDir: Path = Path()
    trainOrgan: str = "pancreas"
    trainLabelValue: Annotated[int, WithinRange(1, 255)] = 1
    trainViewX: bool = True
    trainViewY: bool = True
    trainViewZ: bool = True


class PancreasRSTNLogic(ScriptedLoadableModuleLogic, _CoreLogic):
    """``PancreasRSTNSlicerLib.logic.PancreasRSTNLogic`` plus the parameter node."""

    def __init__(self, context=None, models_root=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        _CoreLogic.__init__(self, context, models_root)

    def getParameterNode(self):  # noqa: N802 - Slicer API name
        return PancreasRSTNParameterNode(super().getParameterNode())

    @staticmethod
    def options_from_parameters(p, organs: list[str] | None = None) -> RunOptions:
        views = tuple(v for v, on in (("X", p.viewX), ("Y", p.viewY), ("Z", p.viewZ)) if on)
        return RunOptions(organs=organs or [p.organ], thr=float(p.convergenceThreshold), max_iter=int(p.maxRounds),
                          prob_threshold=float(p.probThreshold), margin=int(p.margin), postprocess=bool(p.postprocess),
                          views=views, batch_size=int(p.batchSize) or None, device=str(p.device).lower(),
                          keep_only_final=bool(p.keepOnlyFinal), replace_previous=bool(p.replacePrevious),
                          allow_non_ct=bool(p.allowNonCT), resample=bool(p.resample))


class PancreasRSTNWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node and the library. Runs go through a RunController polled by a timer; the
    model manager and training sections are their own classes (PancreasRSTNPanel)."""

    POLL_MS = 100

    def __init__(self, parent=None) -> None:
        from PancreasRSTNSlicerLib.run_controller import RunController

        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = PancreasRSTNLogic()
        self.runs = RunController(self.logic)
        self._parameterNode = self._parameterNodeGuiTag = self._result = self._timer = self._dicomDialog = None
        self._rounds = []
        self.models = self.training = None  # the sections, made in setup()

    def setup(self) -> None:
        from PancreasRSTNPanel.models_section import ModelsSection
        from PancreasRSTNPanel.training_section import TrainingSection

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PancreasRSTN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for widget, signal, slot in (
            ("segmentButton", "clicked(bool)", self.onSegment), ("cancelButton", "clicked(bool)", self.onCancel),
            ("organComboBox", "currentIndexChanged(int)", self.onOrganChanged),
            ("deviceComboBox", "currentIndexChanged(int)", self.onDeviceChanged),
            ("roundSlider", "valueChanged(int)", self.onRoundChanged),
            ("showSaliencyCheckBox", "toggled(bool)", self.updateSaliency),
            ("saliencyViewComboBox", "currentIndexChanged(int)", self.updateSaliency),
            ("saliencyChannelComboBox", "currentIndexChanged(int)", self.updateSaliency),
            ("showPlotButton", "clicked(bool)", self.onShowPlot),
            ("editInSegmentEditorButton", "clicked(bool)", self.onEditInSegmentEditor),
            ("exportNiftiButton", "clicked(bool)", lambda: self.onExport(".nii.gz")),
            ("exportNrrdButton", "clicked(bool)", lambda: self.onExport(".seg.nrrd")),
            ("exportDicomButton", "clicked(bool)", self.onExportDicom),
        ):
            getattr(self.ui, widget).connect(signal, slot)
        self.models = ModelsSection(self.ui, self.logic, self._showException, self.onOrganChanged)
        self.training = TrainingSection(self.ui, lambda: self._parameterNode, self.models.install, _MODULE_DIR)
        self.models.refresh_dependencies()
        self.models.refresh()
        self.initializeParameterNode()

    def onReload(self) -> None:
        """Developer mode's Reload: also re-import the library folders, so their edits take effect."""
        packages = ("PancreasRSTNLib", "PancreasRSTNSlicerLib", "PancreasRSTNPanel")
        for name in [n for n in sys.modules if n.split(".")[0] in packages]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        self.onCancel()
        self.removeObservers()
        self.setParameterNode(None)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not self._parameterNode.inputVolume and first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
            self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            for combo, value in ((self.ui.organComboBox, parameterNode.organ),
                                 (self.ui.deviceComboBox, parameterNode.device)):
                combo.currentIndex = max(combo.findData(value), combo.findText(value), combo.currentIndex)
            self.updateButtons()

    def updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(p and p.inputVolume and self.ui.organComboBox.count and (p.viewX or p.viewY or p.viewZ))
        self.ui.segmentButton.enabled = ready and not self.runs.running
        self.ui.cancelButton.enabled = self.runs.running
        self.ui.segmentButton.toolTip = "Run RSTN on the input volume." if ready else (
            "Select an input CT volume, an organ with an installed model and at least one view.")
        self.onDeviceChanged()

    def onOrganChanged(self, index: int = -1) -> None:
        organ = self.ui.organComboBox.currentData
        if self._parameterNode and organ:
            self._parameterNode.organ = organ
        self.ui.modelInfoLabel.text = self.logic.model_description(organ) if organ else (
            "No model installed: open the Model manager.")
        self.updateButtons()

    def onDeviceChanged(self, index: int = -1) -> None:
        from PancreasRSTNLib.devices import describe_device

        choice = self.ui.deviceComboBox.currentText
        if self._parameterNode and self._parameterNode.device != choice:
            self._parameterNode.device = choice
        device, why = describe_device(choice)
        self.ui.deviceLabel.text = f"Runs on: {device.upper()} \u2014 {why}"

    # ------------------------------------------------------------------ a run
    def onSegment(self) -> None:
        try:
            self.runs.start(self._parameterNode.inputVolume,
                            PancreasRSTNLogic.options_from_parameters(self._parameterNode))
        except Exception as exc:  # noqa: BLE001 - shown to the user; nothing was created
            return self._showException(exc)
        self._rounds, self._result = [], None
        self.ui.progressBar.value, self.ui.statusLabel.text = 0, "Starting..."
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self.onPoll)
        self._timer.start()
        self.updateButtons()

    def onCancel(self) -> None:
        if self.runs.running:
            self.runs.cancel()
            self.ui.statusLabel.text = "Cancelling (stops after the current batch)..."

    def onPoll(self) -> None:
        from PancreasRSTNSlicerLib.run_controller import Progressed, RoundShown, RunFinished

        for event in self.runs.poll():
            if isinstance(event, Progressed):
                self.ui.progressBar.value, self.ui.statusLabel.text = int(round(1000 * event.fraction)), event.stage
            elif isinstance(event, RoundShown):
                self._rounds.append(event.nodes)
                self.ui.roundSlider.enabled, self.ui.roundSlider.maximum = True, len(self._rounds) - 1
                self.ui.roundSlider.value = len(self._rounds) - 1  # follows the newest round
                self.onRoundChanged(len(self._rounds) - 1)
            elif isinstance(event, RunFinished):
                self._result = event.result
                done = ", ".join(f"{k}: {'converged' if v else 'stopped at max rounds'}"
                                 for k, v in event.result.converged.items())
                self.ui.progressBar.value, self.ui.statusLabel.text = 1000, f"Done in {event.seconds:.1f} s ({done})."
                display.show_final(event.result, self._parameterNode.inputVolume)
            elif event.kind == "cancelled":
                self.ui.progressBar.value, self.ui.statusLabel.text = 0, "Cancelled: nothing was added to the scene."
            else:
                logging.error(event.details)
                self.ui.progressBar.value = 0
                self._showError(event.message, event.kind)
        if not self.runs.running and self._timer is not None:
            self._timer.stop()
            self._timer = None
            self.updateButtons()

    def _showException(self, exc: BaseException) -> None:
        self._showError(*self.logic.error_message(exc))

    def _showError(self, message: str, kind: str = "error") -> None:
        self.ui.statusLabel.text = "Failed."
        slicer.util.errorDisplay(message, windowTitle="PancreasRSTN")
        if kind == "out_of_memory" and self.ui.deviceComboBox.currentText != "CPU":
            if slicer.util.confirmYesNoDisplay("Switch the device to CPU and try again?"):
                self.ui.deviceComboBox.currentIndex = self.ui.deviceComboBox.findText("CPU")
                self.onSegment()

    # ------------------------------------------------------------------ results
    def onRoundChanged(self, value: int) -> None:
        if value < len(self._rounds):
            nodes = self._rounds[value]
            display.show_round(self._parameterNode.inputVolume, nodes)
            table = self.runs.session.tables.get(nodes.organ)
            self.ui.roundLabel.text = self.logic.round_summary(nodes, table) if table else ""
            self.updateSaliency()

    def updateSaliency(self, *args) -> None:
        if self._rounds:
            nodes = self._rounds[min(self.ui.roundSlider.value, len(self._rounds) - 1)]
            display.show_saliency(nodes, self.ui.saliencyViewComboBox.currentText,
                                  self.ui.saliencyChannelComboBox.currentIndex, self.ui.showSaliencyCheckBox.checked)

    def onShowPlot(self) -> None:
        if self._result is not None:
            slicer.modules.plots.logic().ShowChartInLayout(self._result.chart)

    def onEditInSegmentEditor(self) -> None:  # needs the Slicer application (main window, Segment Editor)
        if self._result is not None:
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(self._result.segmentation)
            editor.setSourceVolumeNode(self._parameterNode.inputVolume)

    def onExport(self, extension: str) -> None:
        name = self._result.segmentation.GetName().replace(" ", "_") if self._result else ""
        path = self._result and qt.QFileDialog.getSaveFileName(None, "Export segmentation", name + extension,
                                                               f"*{extension}")
        if path:
            try:  # the save dialog already asked the user to confirm replacing an existing file
                self.logic.export_segmentation(self._result.segmentation, path, self._parameterNode.inputVolume,
                                               overwrite=os.path.exists(path))
                self.ui.statusLabel.text = f"Exported {path}"
            except Exception as exc:  # noqa: BLE001
                self._showException(exc)

    def onExportDicom(self) -> None:  # Slicer's DICOM export dialog (DICOM module): needs the Slicer application
        if self._result is not None:
            item = slicer.mrmlScene.GetSubjectHierarchyNode().GetItemByDataNode(self._result.segmentation)
            self._dicomDialog = slicer.qSlicerDICOMExportDialog()  # DICOM SEG: the CT must come from DICOM
            self._dicomDialog.setMRMLScene(slicer.mrmlScene)
            self._dicomDialog.execDialog(item)


class PancreasRSTNTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (``Slicer --testing``): the default model on SampleData's abdominal CTA
    (CTAAbdomenPanoramix), and bad inputs."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_default_model_on_sample_ct()
        self.setUp()
        self.test_bad_inputs_leave_scene_unchanged()

    def test_default_model_on_sample_ct(self) -> None:
        import numpy as np
        import SampleData

        self.delayDisplay("Loading the SampleData abdominal CTA (downloads once)")
        volume = SampleData.SampleDataLogic().downloadSample("CTAAbdomenPanoramix")
        before = slicer.util.arrayFromVolume(volume).copy()
        logic = PancreasRSTNLogic()
        self.assertTrue([m for m in logic.installed_models() if m.organ == "pancreas" and not m.synthetic],
                        "the bundled real-CT pancreas model must be installed with the extension")
        self.delayDisplay("Segmenting with the default pancreas model (2 rounds)")
        rounds = []
        result = logic.run(volume, RunOptions(organs=["pancreas"], max_iter=2, device="cpu"), on_round=rounds.append)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)  # input untouched
        self.assertGreaterEqual(len(rounds), 2)
        self.assertEqual(rounds[0].labelmap.GetName(), "Pancreas \u2013 round 0")
        self.assertIn("15776009", result.segmentation.GetSegmentation().GetNthSegment(0).GetTerminology())
        self.assertEqual(rounds[-1].labelmap.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())

    def test_bad_inputs_leave_scene_unchanged(self) -> None:
        import numpy as np

        from PancreasRSTNLib.errors import InputImageError

        logic = PancreasRSTNLogic()
        label = slicer.util.addVolumeFromArray(np.zeros((4, 5, 6), np.uint8), nodeClassName="vtkMRMLLabelMapVolumeNode")
        for node in (None, label):
            n_before = slicer.mrmlScene.GetNumberOfNodes()
            with self.assertRaises(InputImageError):
                logic.run(node, RunOptions(organs=["pancreas"], max_iter=2, device="cpu"))
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n_before)
        self.delayDisplay("Bad inputs OK")
