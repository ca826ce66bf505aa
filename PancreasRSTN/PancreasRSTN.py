"""PancreasRSTN, the 3D Slicer module: Module, parameter node, Logic, a Widget that wires the panel's sections
(``PancreasRSTNPanel``) to the .ui, and the self-test. The work is in ``PancreasRSTNSlicerLib`` and the core."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import slicer
from slicer.util import VTKObservationMixin

_MODULE_DIR = Path(__file__).resolve().parent
if str(_MODULE_DIR) not in sys.path:  # the core and the Slicer helpers ship next to this file
    sys.path.insert(0, str(_MODULE_DIR))

import vtk  # noqa: E402
from PancreasRSTNPanel import ModelsSection, SegmentSection, TrainingSection  # noqa: E402
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import (  # noqa: E402
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from PancreasRSTNSlicerLib import self_test  # noqa: E402
from PancreasRSTNSlicerLib.logic import SceneLogic  # noqa: E402


class PancreasRSTN(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "PancreasRSTN"
        self.parent.categories = ["Segmentation"]
        self.parent.contributors = ["PancreasRSTN contributors"]
        self.parent.helpText = ("Segments the pancreas and other small abdominal organs in CT with RSTN, showing every "
                                "refinement round and its saliency maps. Research use only: not a medical device.")
        self.parent.acknowledgementText = (
            "RSTN: Q. Yu, L. Xie, Y. Wang, Y. Zhou, E. K. Fishman, A. L. Yuille, 'Recurrent Saliency Transformation "
            "Network: Incorporating Multi-Stage Visual Cues for Small Organ Segmentation', CVPR 2018.")


@parameterNodeWrapper
class PancreasRSTNParameterNode:
    """GUI state saved with the scene. Names match the SlicerParameterName properties of the .ui file."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    refineSegmentation: slicer.vtkMRMLSegmentationNode  # Refine from segment: the person's segmentation...
    refineSegment: str = ""  # ...and the ID of its segment to refine (never modified)
    roi: slicer.vtkMRMLMarkupsROINode  # Limit to ROI (Segment and Refine)
    organ: str = "pancreas"
    convergenceThreshold: Annotated[float, WithinRange(0.5, 1.0)] = 0.99
    maxRounds: Annotated[int, WithinRange(0, 50)] = 0
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


class PancreasRSTNLogic(ScriptedLoadableModuleLogic, SceneLogic):
    """``SceneLogic`` (MRML <-> core) plus the parameter node."""

    def __init__(self, context=None, models_root=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        SceneLogic.__init__(self, context, models_root)

    def getParameterNode(self):  # noqa: N802 - Slicer API name
        return PancreasRSTNParameterNode(super().getParameterNode())


class PancreasRSTNWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Loads the .ui, binds it to the parameter node, and hands each part of it to its section."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = PancreasRSTNLogic()
        self._parameterNode = self._parameterNodeGuiTag = None
        self.segment = self.models = self.training = None  # the sections, made in setup()

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PancreasRSTN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.segment = SegmentSection(self.ui, self.logic, lambda: self._parameterNode)
        self.models = ModelsSection(self.ui, self.logic, self.segment.show_exception, self.segment.organ_changed)
        self.training = TrainingSection(self.ui, lambda: self._parameterNode, self.models.install, _MODULE_DIR)
        self.initializeParameterNode()

    def onReload(self) -> None:
        """Developer mode's Reload: also re-import the library folders, so their edits take effect."""
        packages = ("PancreasRSTNLib", "PancreasRSTNSlicerLib", "PancreasRSTNPanel")
        for name in [n for n in sys.modules if n.split(".")[0] in packages]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        self.segment.cancel()
        self.segment.release()
        self.removeObservers()
        self.setParameterNode(None)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller=None, event=None) -> None:
        self.segment.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.segment.update_buttons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.segment.update_buttons)
            self.segment.bind(parameterNode)


class PancreasRSTNTest(self_test.SelfTest, ScriptedLoadableModuleTest):
    """Runs inside Slicer (``Slicer --testing``); the checks are ``PancreasRSTNSlicerLib.self_test``'s."""

    logic_class = PancreasRSTNLogic
