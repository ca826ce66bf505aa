"""PancreasRSTN: pancreas and small-organ CT segmentation with the Recurrent Saliency Transformation Network.

Module, Widget, Logic and Test classes of the 3D Slicer scripted module. The Logic lives in
``PancreasRSTNSlicerLib.logic`` (no Qt, tested with slicer-core) and is re-exported here; the Widget is a thin
Qt shell; the engine is the pure-Python ``PancreasRSTNLib`` core.

The Qt/ScriptedLoadableModule imports are guarded so that ``import PancreasRSTN`` also works with the Qt-free
slicer-core wheel (CI): there only the Logic is usable.
"""

from __future__ import annotations

import html
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import slicer

_MODULE_DIR = Path(__file__).resolve().parent
if str(_MODULE_DIR) not in sys.path:  # the core and the Slicer helpers ship next to this file
    sys.path.insert(0, str(_MODULE_DIR))

from PancreasRSTNSlicerLib.logic import (  # noqa: E402
    PancreasRSTNLogic as _CoreLogic,
)
from PancreasRSTNSlicerLib.logic import (  # noqa: E402
    RunOptions,
    RunResult,
    RunSession,
)

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
    from slicer.util import VTKObservationMixin

    HAS_GUI = True
except ImportError:  # slicer-core: no Qt; define stand-ins so the module imports and the Logic works
    HAS_GUI = False

    class ScriptedLoadableModule:  # type: ignore[no-redef]
        def __init__(self, parent) -> None:
            self.parent = parent

    class ScriptedLoadableModuleWidget:  # type: ignore[no-redef]
        pass

    class ScriptedLoadableModuleLogic:  # type: ignore[no-redef]
        def __init__(self) -> None:
            pass

    class ScriptedLoadableModuleTest:  # type: ignore[no-redef]
        pass

    class VTKObservationMixin:  # type: ignore[no-redef]
        def __init__(self) -> None:
            pass

    def parameterNodeWrapper(cls):  # type: ignore[no-redef]
        return cls

    def WithinRange(lo, hi):  # type: ignore[no-redef]  # noqa: N802
        return (lo, hi)


MIN_TORCH_VERSION = "2.1"
PIP_REQUIREMENTS = {"safetensors": "safetensors>=0.4", "tqdm": "tqdm>=4.60"}  # never numpy / SimpleITK / vtk


#
# Module
#


class PancreasRSTN(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "PancreasRSTN"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["PancreasRSTN contributors"]
        self.parent.helpText = (
            "Segments the pancreas (and other small abdominal organs with a model) in CT with the Recurrent "
            "Saliency Transformation Network. Every refinement round and the saliency maps that steered it are "
            "shown as the run goes on. The bundled demo model is synthetic and not for clinical use."
        )
        self.parent.acknowledgementText = (
            "RSTN: Q. Yu, L. Xie, Y. Wang, Y. Zhou, E. K. Fishman, A. L. Yuille, 'Recurrent Saliency "
            "Transformation Network: Incorporating Multi-Stage Visual Cues for Small Organ Segmentation', CVPR 2018."
        )


#
# Parameter node
#


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


#
# Logic
#


class PancreasRSTNLogic(ScriptedLoadableModuleLogic, _CoreLogic):
    """Slicer logic: ``PancreasRSTNSlicerLib.logic.PancreasRSTNLogic`` plus the parameter node."""

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


__all__ = ["PancreasRSTN", "PancreasRSTNLogic", "PancreasRSTNParameterNode", "RunOptions", "RunResult", "RunSession"]


#
# Widget
#


class PancreasRSTNWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin Qt shell: binds the .ui to the parameter node, runs the Logic on a worker thread, shows results."""

    POLL_MS = 100

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None  # BackgroundRun
        self._session = None  # RunSession
        self._result = None  # RunResult
        self._rounds = []  # RoundNodes in arrival order
        self._timer = None
        self._train_process = None
        self._train_timer = None
        self._train_nodes = (None, None)
        self._train_output = None
        self._dicomExportDialog = None  # kept referenced while the dialog is open

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PancreasRSTN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PancreasRSTNLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.organComboBox.connect("currentIndexChanged(int)", self.onOrganChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.roundSlider.connect("valueChanged(int)", self.onRoundChanged)
        self.ui.showSaliencyCheckBox.connect("toggled(bool)", self.updateSaliencyDisplay)
        self.ui.saliencyViewComboBox.connect("currentIndexChanged(int)", self.updateSaliencyDisplay)
        self.ui.saliencyChannelComboBox.connect("currentIndexChanged(int)", self.updateSaliencyDisplay)
        self.ui.showPlotButton.connect("clicked(bool)", self.onShowPlot)
        self.ui.editInSegmentEditorButton.connect("clicked(bool)", self.onEditInSegmentEditor)
        self.ui.exportNiftiButton.connect("clicked(bool)", lambda: self.onExport(".nii.gz"))
        self.ui.exportNrrdButton.connect("clicked(bool)", lambda: self.onExport(".seg.nrrd"))
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.ui.installFolderButton.connect("clicked(bool)", self.onInstallFolder)
        self.ui.installZipButton.connect("clicked(bool)", self.onInstallZip)
        self.ui.importReferenceButton.connect("clicked(bool)", self.onImportReference)
        self.ui.verifyModelsButton.connect("clicked(bool)", self.onVerifyModels)
        self.ui.openModelsFolderButton.connect("clicked(bool)", self.onOpenModelsFolder)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.modelsTableWidget.connect("itemSelectionChanged()", self.onModelSelectionChanged)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.trainCancelButton.connect("clicked(bool)", self.onTrainCancel)
        self.ui.trainOrganComboBox.connect("currentIndexChanged(int)", self.onTrainOrganChanged)

        from PancreasRSTNLib.organs import ORGANS
        from PancreasRSTNSlicerLib.training import PRESETS

        for organ in ORGANS.values():
            self.ui.trainOrganComboBox.addItem(organ.display_name, organ.name)
        for preset in PRESETS:
            self.ui.trainPresetComboBox.addItem(preset)

        self.refreshDependencies()
        self.refreshModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.onCancel()
        self.removeObservers()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self._selectCombo(self.ui.organComboBox, self._parameterNode.organ)
            self._selectCombo(self.ui.deviceComboBox, self._parameterNode.device)
            self.updateButtons()

    @staticmethod
    def _selectCombo(combo, value: str) -> None:
        index = combo.findData(value)
        if index < 0:
            index = combo.findText(value)
        if index >= 0:
            combo.currentIndex = index

    def updateButtons(self, caller=None, event=None) -> None:
        running = self._run is not None
        p = self._parameterNode
        ready = bool(p and p.inputVolume and self.ui.organComboBox.count and (p.viewX or p.viewY or p.viewZ))
        self.ui.segmentButton.enabled = ready and not running
        self.ui.cancelButton.enabled = running
        self.ui.segmentButton.toolTip = "Run RSTN on the input volume." if ready else (
            "Select an input CT volume, an organ with an installed model and at least one view.")
        self.onDeviceChanged()

    # ------------------------------------------------------------------ organ, device
    def onOrganChanged(self, index: int = -1) -> None:
        organ = self.ui.organComboBox.currentData
        if self._parameterNode and organ:
            self._parameterNode.organ = organ
        self.ui.modelInfoLabel.text = self.logic.model_description(organ) if organ else (
            "No model installed: open the Model manager.")
        self.updateButtons()

    def onDeviceChanged(self, index: int = -1) -> None:
        from PancreasRSTNLib.background_run import describe_device

        choice = self.ui.deviceComboBox.currentText
        if self._parameterNode and self._parameterNode.device != choice:
            self._parameterNode.device = choice
        device, why = describe_device(choice)
        self.ui.deviceLabel.text = f"Runs on: {device.upper()} {chr(8212)} {why}"

    # ------------------------------------------------------------------ run
    def onSegment(self) -> None:
        from PancreasRSTNLib.background_run import BackgroundRun

        p = self._parameterNode
        options = PancreasRSTNLogic.options_from_parameters(p)
        try:
            self._session = self.logic.begin_run(p.inputVolume, options)
        except Exception as exc:  # noqa: BLE001 - shown to the user, nothing was created
            self._showError(exc)
            return
        self._rounds = []
        self._result = None
        self._run = BackgroundRun(self._session.image, self._session.jobs, self._session.config,
                                  options.device, allow_non_ct=options.allow_non_ct,
                                  resample=options.resample).start()
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Starting..."
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self.onPoll)
        self._timer.start()
        self.updateButtons()

    def onCancel(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self.ui.statusLabel.text = "Cancelling (stops after the current batch)..."

    def onPoll(self) -> None:
        from PancreasRSTNLib.background_run import Failed, Finished, Progress, RoundReady

        if self._run is None:
            return
        for message in self._run.poll():
            if isinstance(message, Progress):
                self.ui.progressBar.value = int(round(1000 * message.fraction))
                self.ui.statusLabel.text = message.stage
            elif isinstance(message, RoundReady):
                try:
                    nodes = self._session.add_round(message.organ, message.result)
                except Exception as exc:  # noqa: BLE001
                    self._run.cancel()
                    self._endRun()
                    self._session.abort()
                    self._showError(exc)
                    return
                self._rounds.append(nodes)
                self._showRound(nodes)
            elif isinstance(message, Finished):
                try:
                    self._result = self._session.finish()
                except Exception as exc:  # noqa: BLE001
                    self._session.abort()
                    self._endRun()
                    self._showError(exc)
                    return
                self._endRun()
                self.ui.progressBar.value = 1000
                converged = ", ".join(f"{k}: {'converged' if v else 'stopped at max rounds'}" for k, v in self._result.converged.items())
                self.ui.statusLabel.text = f"Done in {message.seconds:.1f} s ({converged})."
                self._showFinal()
            elif isinstance(message, Failed):
                self._session.abort()
                self._endRun()
                self.ui.progressBar.value = 0
                if message.kind == "cancelled":
                    self.ui.statusLabel.text = "Cancelled: nothing was added to the scene."
                else:
                    logging.error(message.details)
                    self.ui.statusLabel.text = "Failed."
                    slicer.util.errorDisplay(message.message, windowTitle="PancreasRSTN")
                    if message.kind == "out_of_memory" and self.ui.deviceComboBox.currentText != "CPU":
                        if slicer.util.confirmYesNoDisplay("Switch the device to CPU and try again?"):
                            self._selectCombo(self.ui.deviceComboBox, "CPU")
                            self.onSegment()
                return

    def _endRun(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._run = None
        self.updateButtons()

    def _showError(self, exc: Exception) -> None:
        from PancreasRSTNLib.errors import RSTNError

        message, kind = self.logic.error_message(exc)
        if not isinstance(exc, RSTNError):
            logging.error("PancreasRSTN: unexpected error", exc_info=exc)
        self.ui.statusLabel.text = "Failed."
        slicer.util.errorDisplay(message, windowTitle="PancreasRSTN")

    # ------------------------------------------------------------------ results
    def _showRound(self, nodes) -> None:
        self.ui.roundSlider.enabled = True
        self.ui.roundSlider.maximum = len(self._rounds) - 1
        self.ui.roundSlider.value = len(self._rounds) - 1  # follows the newest round
        self.onRoundChanged(len(self._rounds) - 1)

    def onRoundChanged(self, value: int) -> None:
        if not self._rounds or value >= len(self._rounds):
            return
        nodes = self._rounds[value]
        if nodes.labelmap is not None and nodes.labelmap.GetScene() is not None:
            slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume, label=nodes.labelmap,
                                             labelOpacity=0.6)
        table = (self._session.tables if self._session else {}).get(nodes.organ)
        self.ui.roundLabel.text = self.logic.round_summary(nodes, table) if table else ""
        self.updateSaliencyDisplay()

    def updateSaliencyDisplay(self, *args) -> None:
        if not self._rounds:
            return
        nodes = self._rounds[min(self.ui.roundSlider.value, len(self._rounds) - 1)]
        view = self.ui.saliencyViewComboBox.currentText
        channel = self.ui.saliencyChannelComboBox.currentIndex
        channels = nodes.saliency.get(view, [])
        if self.ui.showSaliencyCheckBox.checked and channel < len(channels) and channels[channel].GetScene():
            slicer.util.setSliceViewerLayers(foreground=channels[channel], foregroundOpacity=0.5)
        else:
            slicer.util.setSliceViewerLayers(foreground=None)

    def _showFinal(self) -> None:
        seg = self._result.segmentation
        seg.CreateClosedSurfaceRepresentation()
        slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume, label=None)

    def onShowPlot(self) -> None:
        chart = (self._result.chart if self._result else None) or (self._session.chart if self._session else None)
        if chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)

    def onEditInSegmentEditor(self) -> None:
        if self._result is None:
            return
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(self._result.segmentation)
        editor.setSourceVolumeNode(self._parameterNode.inputVolume)

    def onExport(self, extension: str) -> None:
        if self._result is None:
            return
        name = self._result.segmentation.GetName().replace(" ", "_")
        path = qt.QFileDialog.getSaveFileName(None, "Export segmentation", name + extension, f"*{extension}")
        if not path:
            return
        try:
            overwrite = os.path.exists(path)  # the save dialog already asked the user to confirm replacing it
            self.logic.export_segmentation(self._result.segmentation, path, self._parameterNode.inputVolume, overwrite)
            self.ui.statusLabel.text = f"Exported {path}"
        except Exception as exc:  # noqa: BLE001
            self._showError(exc)

    def onExportDicom(self) -> None:
        if self._result is None:
            return
        sh = slicer.mrmlScene.GetSubjectHierarchyNode()
        item = sh.GetItemByDataNode(self._result.segmentation)
        # Slicer's DICOM export dialog (C++ qSlicerDICOMExportDialog, DICOM module): DICOM SEG export needs the
        # input CT to have been loaded from DICOM (the segmentation references its series).
        self._dicomExportDialog = slicer.qSlicerDICOMExportDialog()
        self._dicomExportDialog.setMRMLScene(slicer.mrmlScene)
        self._dicomExportDialog.execDialog(item)

    # ------------------------------------------------------------------ model manager
    def refreshModels(self) -> None:
        from PancreasRSTNLib.organs import get_organ
        from PancreasRSTNLib.user_models import models_by_organ, user_models_dir

        self._models = self.logic.installed_models()
        self._models_by_organ = models_by_organ(self._models)
        self.ui.modelsFolderLabel.text = f"Your models folder: {user_models_dir()}"
        table = self.ui.modelsTableWidget
        headers = ["Name", "Organ", "Backbone", "Views", "Source", "Provenance"]
        table.clear()
        table.setColumnCount(len(headers))
        table.setHorizontalHeaderLabels(headers)
        table.setRowCount(len(self._models))
        for row, m in enumerate(self._models):
            for col, text in enumerate([m.name + (" (synthetic demo)" if m.synthetic else ""), m.organ, m.backbone,
                                        "/".join(m.views), m.source, m.provenance]):
                table.setItem(row, col, qt.QTableWidgetItem(text))
        current = self.ui.organComboBox.currentData
        self.ui.organComboBox.blockSignals(True)
        self.ui.organComboBox.clear()
        for organ in self._models_by_organ:
            try:
                display = get_organ(organ).display_name
            except Exception:  # noqa: BLE001 - a model for an organ this version does not know
                continue
            self.ui.organComboBox.addItem(display, organ)
        self.ui.organComboBox.blockSignals(False)
        self._selectCombo(self.ui.organComboBox, current or (self._parameterNode.organ if self._parameterNode else "pancreas"))
        warnings = {m.warning for m in self._models if m.warning}
        self.ui.modelWarningLabel.text = "<b>" + " ".join(warnings) + "</b>" if warnings else ""
        self.onOrganChanged()

    def onModelSelectionChanged(self) -> None:
        rows = {item.row() for item in self.ui.modelsTableWidget.selectedItems()}
        if rows:
            m = self._models[min(rows)]
            self.ui.modelWarningLabel.text = html.escape(str(m.path)) + (
                f"<br><b>{html.escape(m.warning)}</b>" if m.warning else "")

    def _install(self, source: str) -> None:
        from PancreasRSTNLib.errors import OutputExistsError
        from PancreasRSTNLib.user_models import install_model

        try:
            try:
                info = install_model(source)
            except OutputExistsError as exc:
                if not slicer.util.confirmYesNoDisplay(f"{exc}\n\nReplace the installed model?"):
                    return
                info = install_model(source, overwrite=True)
            slicer.util.infoDisplay(f"Installed '{info.name}' for {info.organ}.", windowTitle="PancreasRSTN")
        except Exception as exc:  # noqa: BLE001
            self._showError(exc)
        self.refreshModels()

    def onInstallFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, "Model folder (with model.json)")
        if folder:
            self._install(folder)

    def onInstallZip(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, "Zipped model", "", "Zip files (*.zip)")
        if path:
            self._install(path)

    def onImportReference(self) -> None:
        from PancreasRSTNLib.user_models import import_reference

        checkpoints = {}
        for view in ("X", "Y", "Z"):
            path = qt.QFileDialog.getOpenFileName(None, f"Reference checkpoint for view {view} (Cancel to skip)", "",
                                                  "PyTorch checkpoints (*.pkl *.pth *.pt)")
            if path:
                checkpoints[view] = path
        if not checkpoints:
            return
        organ = self.ui.trainOrganComboBox.currentData or "pancreas"
        try:
            with slicer.util.tryWithErrorDisplay("Import failed.", waitCursor=True):
                info = import_reference(checkpoints, organ=organ)
                slicer.util.infoDisplay(f"Imported '{info.name}' ({'/'.join(info.views)}).", windowTitle="PancreasRSTN")
        finally:
            self.refreshModels()

    def onVerifyModels(self) -> None:
        from PancreasRSTNLib.user_models import verify_all

        with slicer.util.WaitCursor():
            report = verify_all(self._models)
        lines = [f"{'OK' if status == 'OK' else 'FAILED'}: {path.name}" + ("" if status == "OK" else f" {chr(8212)} {status}")
                 for path, status in report.items()]
        slicer.util.infoDisplay("\n".join(lines) or "No models installed.", windowTitle="PancreasRSTN: verify models")

    def onOpenModelsFolder(self) -> None:
        from PancreasRSTNLib.user_models import user_models_dir

        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(user_models_dir())))

    # ------------------------------------------------------------------ dependencies
    def refreshDependencies(self) -> None:
        missing = missing_packages()
        if missing:
            self.ui.dependenciesLabel.text = "Missing: " + ", ".join(missing) + ". Click Install (needs network)."
            self.ui.dependenciesCollapsibleButton.collapsed = False
        else:
            self.ui.dependenciesLabel.text = f"All dependencies present (torch {_torch_version()})."

    def onInstallDependencies(self) -> None:
        try:
            with slicer.util.WaitCursor():
                install_dependencies()
        except Exception as exc:  # noqa: BLE001
            slicer.util.errorDisplay(str(exc), windowTitle="PancreasRSTN: dependencies")
        self.refreshDependencies()
        self.onDeviceChanged()

    # ------------------------------------------------------------------ training
    def onTrainOrganChanged(self, index: int = -1) -> None:
        organ = self.ui.trainOrganComboBox.currentData
        if self._parameterNode and organ:
            self._parameterNode.trainOrgan = organ

    def onTrain(self) -> None:
        from PancreasRSTNSlicerLib.training import train_command

        p = self._parameterNode
        views = [v for v, on in (("X", p.trainViewX), ("Y", p.trainViewY), ("Z", p.trainViewZ)) if on]
        if not str(p.trainDatasetDir) or str(p.trainDatasetDir) == "." or not Path(p.trainDatasetDir).is_dir():
            slicer.util.errorDisplay("Choose the dataset folder first.")
            return
        if not str(p.trainOutputDir) or str(p.trainOutputDir) == ".":
            slicer.util.errorDisplay("Choose an output folder first.")
            return
        try:
            command = train_command(p.trainDatasetDir, p.trainOutputDir, p.trainOrgan, p.trainLabelValue, views,
                                    self.ui.trainPresetComboBox.currentText, python=shutil_which_python())
        except ValueError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_MODULE_DIR), env.get("PYTHONPATH", "")])
        self._train_output = Path(p.trainOutputDir)
        logging.info("PancreasRSTN training: %s", " ".join(command))
        self._train_process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                               text=True, bufsize=1)
        self._train_log_lines = []
        import threading

        threading.Thread(target=self._readTrainOutput, daemon=True).start()
        self._train_timer = qt.QTimer()
        self._train_timer.setInterval(2000)
        self._train_timer.connect("timeout()", self.onTrainPoll)
        self._train_timer.start()
        self.ui.trainButton.enabled = False
        self.ui.trainCancelButton.enabled = True
        self.ui.trainStatusLabel.text = "Training started..."

    def _readTrainOutput(self) -> None:
        for line in self._train_process.stdout:
            self._train_log_lines.append(line.rstrip())

    def onTrainPoll(self) -> None:
        from PancreasRSTNSlicerLib.training import (
            LOG_RELATIVE_PATH,
            MODEL_RELATIVE_PATH,
            read_loss_log,
            update_loss_nodes,
        )

        columns = read_loss_log(self._train_output / LOG_RELATIVE_PATH)
        table, chart = update_loss_nodes(slicer.mrmlScene, columns, *self._train_nodes)
        if chart is not None and self._train_nodes[1] is None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)
        self._train_nodes = (table, chart)
        if self._train_log_lines:
            self.ui.trainStatusLabel.text = self._train_log_lines[-1][-200:]
        code = self._train_process.poll()
        if code is None:
            return
        self._train_timer.stop()
        self.ui.trainButton.enabled = True
        self.ui.trainCancelButton.enabled = False
        if code != 0:
            tail = "\n".join(self._train_log_lines[-15:])
            slicer.util.errorDisplay(f"Training stopped (exit code {code}).\n\n{tail}", windowTitle="PancreasRSTN training")
            return
        self.ui.trainProgressBar.value = 1000
        self._install(str(self._train_output / MODEL_RELATIVE_PATH))

    def onTrainCancel(self) -> None:
        if self._train_process is not None and self._train_process.poll() is None:
            self._train_process.terminate()
            self.ui.trainStatusLabel.text = "Training cancelled (resume later with the same output folder)."


#
# Dependencies (Slicer only)
#


def missing_packages() -> list[str]:
    """Python packages the core needs that are not importable in Slicer's Python."""
    import importlib.util

    missing = [name for name in ("torch", *PIP_REQUIREMENTS) if importlib.util.find_spec(name) is None]
    if "torch" not in missing:
        version = _torch_version()
        try:
            found = tuple(int(x) for x in version.split("+")[0].split(".")[:2])
        except ValueError:  # unknown or unusual version string: let the import decide later
            found = None
        if found is not None and found < tuple(int(x) for x in MIN_TORCH_VERSION.split(".")[:2]):
            missing.insert(0, f"torch>={MIN_TORCH_VERSION} (found {version})")
    return missing


def _torch_version() -> str:
    """Installed torch version, read from its metadata without importing torch."""
    import importlib.metadata

    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def install_dependencies() -> None:
    """torch through the PyTorch extension, the rest with pip only when missing. Never touches numpy,
    SimpleITK or vtk (Slicer's own)."""
    import importlib.util

    try:
        import PyTorchUtils
    except ImportError as exc:
        raise RuntimeError("The PyTorch extension is not installed. Install 'PyTorch' from the Extensions Manager, "
                           "restart Slicer, then try again.") from exc
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled() or any(m.startswith("torch>=") for m in missing_packages()):
        torch = torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=f">={MIN_TORCH_VERSION}")
        if torch is None:
            raise RuntimeError("torch could not be installed. If this computer is offline, install torch with the "
                               "PyTorch extension on a connected machine, or pip-install wheels from a local folder.")
    for module, requirement in PIP_REQUIREMENTS.items():
        if importlib.util.find_spec(module) is None:
            try:
                slicer.util.pip_install(requirement)
            except Exception as exc:  # noqa: BLE001
                raise RuntimeError(f"Could not install {requirement} ({exc}). Without network access, run "
                                   f"slicer.util.pip_install('--no-index --find-links=<folder> {module}') with "
                                   "downloaded wheels.") from exc


def shutil_which_python() -> str:
    """Slicer's Python for child processes (PythonSlicer), else this interpreter."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable


#
# Test
#


class PancreasRSTNTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (``Slicer --testing``): the demo model on SampleData's abdominal CTA
    (CTAAbdomenPanoramix, node "Panoramix-cropped")."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_demo_model_on_sample_ct()
        self.setUp()
        self.test_bad_inputs_leave_scene_unchanged()

    def _demo_options(self) -> RunOptions:
        return RunOptions(organs=["pancreas"], max_iter=2, device="cpu")

    def test_demo_model_on_sample_ct(self) -> None:
        import numpy as np
        import SampleData

        self.delayDisplay("Loading the SampleData abdominal CTA (downloads once)")
        volume = SampleData.SampleDataLogic().downloadSample("CTAAbdomenPanoramix")
        self.assertIsNotNone(volume)
        before = slicer.util.arrayFromVolume(volume).copy()
        logic = PancreasRSTNLogic()
        models = [m for m in logic.installed_models() if m.organ == "pancreas" and not m.synthetic]
        self.assertTrue(models, "the bundled real-CT pancreas model must be installed with the extension")

        self.delayDisplay("Segmenting with the default pancreas model (2 rounds)")
        rounds = []
        result = logic.run(volume, self._demo_options(), on_round=rounds.append)

        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)  # input untouched
        self.assertGreaterEqual(len(rounds), 2)
        self.assertEqual(rounds[0].labelmap.GetName(), "Pancreas \u2013 round 0")
        seg = result.segmentation.GetSegmentation()
        self.assertEqual(seg.GetNumberOfSegments(), 1)
        segment = seg.GetNthSegment(0)
        self.assertIn("15776009", segment.GetTerminology())
        label = rounds[-1].labelmap
        self.assertEqual(label.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
        m1, m2 = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        label.GetIJKToRASMatrix(m1)
        volume.GetIJKToRASMatrix(m2)
        for r in range(4):
            for c in range(4):
                self.assertAlmostEqual(m1.GetElement(r, c), m2.GetElement(r, c), places=6)
        self.assertIsNotNone(result.chart)
        self.delayDisplay("Demo run OK")

    def test_bad_inputs_leave_scene_unchanged(self) -> None:
        import numpy as np

        from PancreasRSTNLib.errors import InputImageError

        logic = PancreasRSTNLogic()
        n_before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputImageError):
            logic.run(None, self._demo_options())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n_before)
        label = slicer.util.addVolumeFromArray(np.zeros((4, 5, 6), np.uint8), nodeClassName="vtkMRMLLabelMapVolumeNode")
        n_before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputImageError):
            logic.run(label, self._demo_options())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n_before)
        self.delayDisplay("Bad inputs OK")
