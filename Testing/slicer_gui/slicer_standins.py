"""Stand-ins for the parts of the Slicer application that slicer-core lacks, written from Slicer's documented
behaviour: ``ScriptedLoadableModule`` and friends, ``parameterNodeWrapper`` (typed fields kept in a real
vtkMRMLScriptedModuleNode, bound to widgets by their ``SlicerParameterName``), ``slicer.app`` and
``slicer.modules`` (the real module logics of a slicer-core scene).
"""

from __future__ import annotations

import types
import typing
import unittest
from pathlib import Path

from PySide6 import QtWidgets

# ---------------------------------------------------------------------------------------------- module classes


class _ModuleParent:
    """What a module's ``parent`` (qSlicerScriptedLoadableModule) holds."""

    def __init__(self) -> None:
        self.title = ""
        self.categories: list[str] = []
        self.dependencies: list[str] = []
        self.contributors: list[str] = []
        self.helpText = ""
        self.acknowledgementText = ""
        self.isEntered = True


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent
        self.moduleName = type(self).__name__


class ScriptedLoadableModuleLogic:
    """``getParameterNode``: the scene's singleton vtkMRMLScriptedModuleNode of this module."""

    def __init__(self, parent=None) -> None:
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):  # noqa: N802 - Slicer API name
        import slicer

        scene = slicer.mrmlScene
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
            node = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
            if node.GetModuleName() == self.moduleName:
                return node
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetModuleName(self.moduleName)
        node.SetName(self.moduleName)
        node.SetSingletonTag(self.moduleName)
        node.SetHideFromEditors(True)
        return scene.AddNode(node)


class ScriptedLoadableModuleWidget:
    """``setup`` makes the layout the module adds its .ui to; ``resourcePath`` finds the module's Resources."""

    module_file: Path | None = None  # set by the test harness: the module's .py file

    def __init__(self, parent=None) -> None:
        from pythonqt import wrap

        self.parent = parent if parent is not None else wrap(QtWidgets.QWidget())
        self.moduleName = type(self).__name__.removesuffix("Widget")
        self.developerMode = False

    def setup(self) -> None:
        from pythonqt import unwrap, wrap

        raw = unwrap(self.parent)
        layout = raw.layout() or QtWidgets.QVBoxLayout(raw)
        self.layout = wrap(layout)

    def resourcePath(self, filename: str) -> str:  # noqa: N802
        return str(Path(self.module_file).parent / "Resources" / filename)

    def cleanup(self) -> None:
        pass

    def onReload(self) -> None:  # noqa: N802
        """Slicer re-imports the module file here (slicer.util.reloadScriptedModule); the harness records it."""
        self.reloaded = getattr(self, "reloaded", 0) + 1


class ScriptedLoadableModuleTest(unittest.TestCase):
    """Slicer's test base is a unittest.TestCase with ``delayDisplay``."""

    def delayDisplay(self, message: str, msec: int = 0) -> None:  # noqa: N802
        self.displayed = [*getattr(self, "displayed", []), message]


# ---------------------------------------------------------------------------------------------- parameterNodeWrapper


class WithinRange:
    def __init__(self, minimum, maximum) -> None:
        self.minimum, self.maximum = minimum, maximum


def _field_types(cls) -> dict[str, tuple[type, WithinRange | None]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    out = {}
    for name, hint in hints.items():
        limit = None
        if typing.get_origin(hint) is typing.Annotated:
            base, *extras = typing.get_args(hint)
            limit = next((e for e in extras if isinstance(e, WithinRange)), None)
            hint = base
        out[name] = (hint, limit)
    return out


def _is_node_type(kind) -> bool:
    return isinstance(kind, type) and kind.__name__.startswith("vtkMRML")


def parameterNodeWrapper(cls):  # noqa: N802, C901 - Slicer API name; C901 counts the nested class's methods
    """Typed fields of ``cls`` kept as parameters (node fields as node references) of a scripted module node."""
    fields = _field_types(cls)
    defaults = {name: getattr(cls, name) for name in fields if hasattr(cls, name)}

    class Wrapped:
        __annotations__ = cls.__annotations__

        def __init__(self, node) -> None:
            object.__setattr__(self, "parameterNode", node)
            object.__setattr__(self, "_guis", {})
            for name, (kind, _) in fields.items():
                if not _is_node_type(kind) and not node.HasParameter(name) and name in defaults:
                    setattr(self, name, defaults[name])

        def __getattr__(self, name: str):
            if name not in fields:
                return getattr(object.__getattribute__(self, "parameterNode"), name)
            node = object.__getattribute__(self, "parameterNode")
            kind, _ = fields[name]
            if _is_node_type(kind):
                return node.GetNodeReference(name)
            text = node.GetParameter(name)
            if kind is bool:
                return text == "True"
            if kind is Path:
                return Path(text)
            return kind(text) if text != "" or kind is str else defaults.get(name)

        def __setattr__(self, name: str, value) -> None:
            if name not in fields:
                object.__setattr__(self, name, value)
                return
            node = object.__getattribute__(self, "parameterNode")
            kind, limit = fields[name]
            if _is_node_type(kind):
                if value is not None and not value.IsA(kind.__name__):
                    raise TypeError(f"{name} must be a {kind.__name__}, not {value.GetClassName()}")
                node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
                return
            if kind in (int, float):
                value = kind(value)
                if limit is not None and not limit.minimum <= value <= limit.maximum:
                    raise ValueError(f"{name}={value} is outside [{limit.minimum}, {limit.maximum}]")
            node.SetParameter(name, str(value))

        def connectGui(self, ui) -> int:  # noqa: N802
            binding = _GuiBinding(self, ui)
            tag = id(binding)
            self._guis[tag] = binding
            return tag

        def disconnectGui(self, tag) -> None:  # noqa: N802
            binding = self._guis.pop(tag, None)
            if binding is not None:
                binding.disconnect()

    Wrapped.__name__ = cls.__name__
    Wrapped.__qualname__ = cls.__qualname__
    Wrapped.fields = fields
    Wrapped.__module__, Wrapped.__qualname__ = cls.__module__, cls.__qualname__  # as Slicer's wrapper keeps them
    return Wrapped


class _GuiBinding:
    """Widgets that name a parameter (``SlicerParameterName``) follow it, and the parameter follows them."""

    def __init__(self, wrapper, ui) -> None:
        from pythonqt import unwrap

        self.wrapper = wrapper
        self.widgets: dict[str, QtWidgets.QWidget] = {}
        for value in vars(ui).values():
            widget = unwrap(value)
            name = widget.property("SlicerParameterName") if isinstance(widget, QtWidgets.QWidget) else None
            if name:
                self.widgets[str(name)] = widget
        self._connections = []
        for name, widget in self.widgets.items():
            signal = self._signal(widget)

            def handler(*args, _n=name, _w=widget) -> None:
                self._from_widget(_n, _w)

            signal.connect(handler)
            self._connections.append((signal, handler))
        import vtk

        node = wrapper.parameterNode
        self._observer = node.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *args: self.to_widgets())
        self.to_widgets()

    @staticmethod
    def _signal(widget):
        from widgets import ctkPathLineEdit, ctkSliderWidget, qMRMLNodeComboBox

        if isinstance(widget, qMRMLNodeComboBox):
            return widget.currentNodeChanged
        if isinstance(widget, ctkSliderWidget):
            return widget.valueChanged
        if isinstance(widget, ctkPathLineEdit):
            return widget.currentPathChanged
        if isinstance(widget, QtWidgets.QAbstractButton):
            return widget.toggled
        if isinstance(widget, (QtWidgets.QSpinBox, QtWidgets.QDoubleSpinBox, QtWidgets.QSlider)):
            return widget.valueChanged
        if isinstance(widget, QtWidgets.QComboBox):
            return widget.currentTextChanged
        if isinstance(widget, QtWidgets.QLineEdit):
            return widget.textChanged
        raise TypeError(f"no parameter binding for {type(widget).__name__}")

    def _read(self, widget):
        from widgets import ctkPathLineEdit, ctkSliderWidget, qMRMLNodeComboBox

        if isinstance(widget, qMRMLNodeComboBox):
            return widget.currentNode()
        if isinstance(widget, ctkPathLineEdit):
            return Path(widget.currentPath) if widget.currentPath else Path()
        if isinstance(widget, (ctkSliderWidget, QtWidgets.QSpinBox, QtWidgets.QDoubleSpinBox, QtWidgets.QSlider)):
            return widget.value if isinstance(widget, ctkSliderWidget) else widget.value()
        if isinstance(widget, QtWidgets.QAbstractButton):
            return widget.isChecked()
        if isinstance(widget, QtWidgets.QComboBox):
            return widget.currentText()
        return widget.text()

    def _write(self, widget, value) -> None:
        from widgets import ctkPathLineEdit, ctkSliderWidget, qMRMLNodeComboBox

        if isinstance(widget, qMRMLNodeComboBox):
            widget.setCurrentNode(value)
        elif isinstance(widget, ctkPathLineEdit):
            widget.currentPath = "" if value in (None, Path()) else str(value)
        elif isinstance(widget, ctkSliderWidget):
            widget.value = float(value)
        elif isinstance(widget, (QtWidgets.QSpinBox, QtWidgets.QSlider)):
            widget.setValue(int(value))
        elif isinstance(widget, QtWidgets.QDoubleSpinBox):
            widget.setValue(float(value))
        elif isinstance(widget, QtWidgets.QAbstractButton):
            widget.setChecked(bool(value))
        elif isinstance(widget, QtWidgets.QComboBox):
            index = widget.findText(str(value))
            if index >= 0:
                widget.setCurrentIndex(index)
        else:
            widget.setText(str(value))

    def _from_widget(self, name: str, widget) -> None:
        value = self._read(widget)
        current = getattr(self.wrapper, name)
        if value != current and not (value is None and current is None):
            setattr(self.wrapper, name, value)

    def to_widgets(self) -> None:
        for name, widget in self.widgets.items():
            value = getattr(self.wrapper, name)
            if self._read(widget) != value:
                widget.blockSignals(True)
                try:
                    self._write(widget, value)
                finally:
                    widget.blockSignals(False)

    def disconnect(self) -> None:
        for signal, handler in self._connections:
            signal.disconnect(handler)
        self.wrapper.parameterNode.RemoveObserver(self._observer)


# ---------------------------------------------------------------------------------------------- slicer.app, modules


class _ModuleLogicHandle:
    def __init__(self, logic, widget=None) -> None:
        self._logic = logic
        self._widget = widget

    def logic(self):
        return self._logic

    def widgetRepresentation(self):  # noqa: N802
        return self._widget


class SlicerApp:
    """``slicer.app`` of the tests: the slicer-core application logic, testing mode, Qt's event loop."""

    applicationName = "3D Slicer"
    majorVersion, minorVersion = 5, 10

    def __init__(self, app_logic) -> None:
        self._logic = app_logic

    def applicationLogic(self):  # noqa: N802
        return self._logic

    def _testing_enabled(self) -> bool:
        return True

    testingEnabled = _testing_enabled  # noqa: N815 - Slicer's name; not a test, so not named test*

    def processEvents(self) -> None:  # noqa: N802
        QtWidgets.QApplication.processEvents()

    def layoutManager(self):  # noqa: N802
        return None  # no view widgets outside Slicer: slicer.util checks for None

    def mainWindow(self):  # noqa: N802
        return None


def build_modules(context, plots_logic) -> types.SimpleNamespace:
    """``slicer.modules``: the real module logics of the test scene."""
    return types.SimpleNamespace(
        plots=_ModuleLogicHandle(plots_logic),
        segmentations=_ModuleLogicHandle(context.segmentations_logic),
        sequences=_ModuleLogicHandle(context.sequences_logic),
        subjecthierarchy=_ModuleLogicHandle(context.subject_hierarchy_logic),
        terminologies=_ModuleLogicHandle(context.terminologies_logic),
    )


# ---------------------------------------------------------------------------------------------- assembly
#: the modules ``install_module_standins`` puts in ``sys.modules`` (the GUI suite restores them afterwards)
STANDIN_MODULES = ("qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "PancreasRSTN")


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def install_module_standins(module_file: Path) -> None:
    """The PythonQt-like ``qt``, ``ctk`` and the application's scripted-module stand-ins installed as modules, so
    that ``import PancreasRSTN`` (``module_file``) builds the real Widget; the GUI suite's ``module`` fixture and
    ``scripts/make_catalogue_screenshot.py`` both use it."""
    import sys

    import widgets
    from pythonqt import build_qt_module

    sys.modules["qt"] = build_qt_module(widgets.CUSTOM_WIDGETS)
    sys.modules["ctk"] = _module("ctk", **{c.__name__: c for c in widgets.CUSTOM_WIDGETS
                                           if c.__name__.startswith("ctk")})
    sys.modules["slicer.ScriptedLoadableModule"] = _module(
        "slicer.ScriptedLoadableModule", ScriptedLoadableModule=ScriptedLoadableModule,
        ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleTest=ScriptedLoadableModuleTest)
    sys.modules["slicer.parameterNodeWrapper"] = _module(
        "slicer.parameterNodeWrapper", parameterNodeWrapper=parameterNodeWrapper, WithinRange=WithinRange)
    sys.modules.pop("PancreasRSTN", None)
    ScriptedLoadableModuleWidget.module_file = module_file


def build_core_scene():
    """A slicer-core scene with the application's logics, three slice views' composite nodes and a layout, made
    the application's (``slicer.mrmlScene``, ``slicer.app``, ``slicer.modules``); returns its context."""
    import slicer

    from PancreasRSTNSlicerLib.scene import create_core_context

    context = create_core_context()
    for name in ("Red", "Yellow", "Green"):
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetName(f"vtkMRMLSliceCompositeNode{name}")
        composite.SetLayoutName(name)
        context.scene.AddNode(composite)
    layout = slicer.vtkMRMLLayoutNode()
    context.scene.AddNode(layout)
    plots = slicer.vtkSlicerPlotsLogic()
    plots.SetMRMLApplicationLogic(context.app_logic)
    plots.SetMRMLScene(context.scene)
    context.layout_node = layout
    slicer.mrmlScene = context.scene
    slicer.app = SlicerApp(context.app_logic)
    slicer.modules = build_modules(context, plots)
    return context
