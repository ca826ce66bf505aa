"""Static checks of the parts of PancreasRSTN.py that only run inside the Slicer application (Widget, self-test,
dependency installer). No Qt here: the checks read the source and the .ui, and compare them with APIs that were
verified against Slicer's, CTK's and the PyTorch extension's sources (see the comments for what was read)."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "PancreasRSTN" / "PancreasRSTN.py"
SLICER_LIB = ROOT / "PancreasRSTN" / "PancreasRSTNSlicerLib"
UI = ROOT / "PancreasRSTN" / "Resources" / "UI" / "PancreasRSTN.ui"
SOURCE = MODULE.read_text(encoding="utf-8")
TREE = ast.parse(SOURCE)
# the panel's Qt sections bind their part of the .ui the same way
PANEL_SOURCE = "\n".join(p.read_text(encoding="utf-8")
                         for p in sorted((MODULE.parent / "PancreasRSTNPanel").glob("*.py")))
GUI_SOURCE = SOURCE + "\n" + PANEL_SOURCE

# Qt classes the .ui may use (QUiLoader builds them without plugins).
QT_WIDGETS = {"QWidget", "QLabel", "QComboBox", "QCheckBox", "QSpinBox", "QDoubleSpinBox", "QSlider", "QPushButton",
              "QProgressBar", "QTableWidget", "QLineEdit", "QTextEdit", "QGroupBox", "QToolButton", "QRadioButton"}
# Slicer/CTK designer classes checked in their headers: commontk/CTK Libs/Widgets/ctkPathLineEdit.h (Filter
# enum: Dirs, Executable, NoDot, NoDotDot, Readable, ...), ctkCollapsibleButton, ctkSliderWidget; Slicer's
# qMRMLNodeComboBox and qMRMLWidget (the module template's top-level class).
SLICER_WIDGETS = {"ctkCollapsibleButton", "ctkPathLineEdit", "ctkSliderWidget", "qMRMLNodeComboBox", "qMRMLWidget"}
CTK_PATH_FILTERS = {"Dirs", "Files", "Drives", "NoSymLinks", "AllEntries", "TypeMask", "Readable", "Writable",
                    "Executable", "PermissionMask", "Modified", "Hidden", "System", "AccessMask", "AllDirs",
                    "CaseSensitive", "NoDotAndDotDot", "NoDot", "NoDotDot", "NoFilter"}
# Widget class -> field type the parameterNodeWrapper GUI connectors accept for it (Slicer
# Base/Python/slicer/parameterNodeWrapper/guiConnectors.py: QCheckBoxToBoolConnector, QSliderOrSpinBoxToIntConnector,
# QDoubleSpinBoxCtkSliderWidgetToFloatConnector, ctkPathLineEditToPathConnector, qMRMLNodeComboBoxToNodeConnector).
CONNECTOR_TYPES = {"QCheckBox": "bool", "QSpinBox": "int", "QSlider": "int", "ctkSliderWidget": "float",
                   "QDoubleSpinBox": "float", "ctkPathLineEdit": "Path", "qMRMLNodeComboBox": "vtkMRML"}
# Signals the widget connects to, per class (Qt 5 signatures).
SIGNALS = {"QPushButton": {"clicked()", "clicked(bool)", "toggled(bool)"},
           "QComboBox": {"currentIndexChanged(int)", "currentTextChanged(QString)", "activated(int)"},
           "QSlider": {"valueChanged(int)", "sliderReleased()"},
           "QCheckBox": {"toggled(bool)", "stateChanged(int)", "clicked(bool)"},
           "QTableWidget": {"itemSelectionChanged()", "cellDoubleClicked(int,int)"}}
# PyTorchUtils.PyTorchUtilsLogic.installTorch(self, askConfirmation=False, forceComputationBackend=None,
# torchVersionRequirement=None, torchvisionVersionRequirement=None) (fepegar/SlicerPyTorch PyTorchUtils.py).
INSTALL_TORCH_KEYWORDS = {"askConfirmation", "forceComputationBackend", "torchVersionRequirement",
                          "torchvisionVersionRequirement"}
# SampleData.SampleDataLogic.registerBuiltInSampleDataSources (Slicer Modules/Scripted/SampleData/SampleData.py).
SAMPLE_DATA_NAMES = {"MRHead", "CTChest", "CTACardio", "DTIBrain", "MRBrainTumor1", "MRBrainTumor2",
                     "CTAAbdomenPanoramix", "CTLiver"}


def _ui() -> ET.Element:
    return ET.parse(UI).getroot()


def _widget_classes() -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in _ui().iter("widget")}


def _class(name: str) -> ast.ClassDef:
    for node in TREE.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"class {name} not found in PancreasRSTN.py")


def _function(name: str) -> ast.FunctionDef:
    for node in TREE.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise AssertionError(f"function {name} not found in PancreasRSTN.py")


def _calls(node: ast.AST, attr: str) -> list[ast.Call]:
    return [n for n in ast.walk(node)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == attr]


@pytest.mark.parametrize("pattern, why", [
    (r"\bsetMasterVolumeNode\b|\bmasterVolumeNode", "Segment Editor: use setSourceVolumeNode (Slicer >= 5.2)"),
    (r"^\s*import imp\b|^\s*from imp\b", "the imp module was removed in Python 3.12"),
    (r"\bdistutils\b", "distutils was removed in Python 3.12"),
    (r"\bpkg_resources\b", "deprecated; use importlib.metadata"),
    (r"DICOMLib\.DICOMExportDialog", "removed Python dialog; use slicer.qSlicerDICOMExportDialog"),
    (r"\.selectedIndexes\(\)", "protected in Qt's item views; use selectedItems()"),
    (r"logging\.warn\(", "deprecated alias of logging.warning"),
    (r"slicer\.util\.getNode\(", "raises on a missing node; keep node references instead"),
])
def test_no_removed_or_fragile_api(pattern, why):
    assert not re.search(pattern, SOURCE, re.M), why


def test_ui_widget_classes_exist_in_slicer():
    root = _ui()
    used = {w.get("class") for w in root.iter("widget")}
    unknown = used - QT_WIDGETS - SLICER_WIDGETS
    assert not unknown, f"widget classes not verified to exist in Slicer: {sorted(unknown)}"
    for custom in root.iter("customwidget"):
        cls = custom.find("class").text
        assert cls in SLICER_WIDGETS, cls
        assert custom.find("header").text == f"{cls}.h"
    for layout in root.iter("layout"):
        assert layout.get("class") in {"QVBoxLayout", "QHBoxLayout", "QFormLayout", "QGridLayout"}


def test_ctk_path_line_edit_filters_are_real_enum_values():
    for widget in _ui().iter("widget"):
        if widget.get("class") != "ctkPathLineEdit":
            continue
        for prop in widget.findall("property"):
            if prop.get("name") == "filters":
                flags = prop.find("set").text.split("|")
                assert flags and all(f.startswith("ctkPathLineEdit::") for f in flags)
                assert {f.split("::")[1] for f in flags} <= CTK_PATH_FILTERS


def test_ui_signal_connections_match_widget_classes():
    classes = _widget_classes()
    connected = re.findall(r'\("(\w+)", "(\w+\([^"]*\))",', GUI_SOURCE)  # the sections' (widget, signal, slot) tables
    connected += re.findall(r'ui\.(\w+)\.connect\("([^"]+)"', PANEL_SOURCE)
    connected += [(w, "clicked(bool)") for w in re.findall(r'\("(\w+Button)", (?:lambda|self)', PANEL_SOURCE)]
    assert len(connected) >= 20
    for name, signal in connected:
        assert name in classes, f"self.ui.{name} is not in the .ui"
        assert signal in SIGNALS.get(classes[name], set()), f"{name} ({classes[name]}) has no signal {signal}"


def test_widget_only_sets_properties_its_widgets_have():
    classes = _widget_classes()
    props = {"QPushButton": {"enabled", "toolTip", "text"}, "QLabel": {"text"}, "QProgressBar": {"value"},
             "QSlider": {"enabled", "maximum", "value"}, "ctkCollapsibleButton": {"collapsed"},
             "QComboBox": {"currentIndex"}}
    for name, prop in re.findall(r"self\.ui\.(\w+)\.(\w+)\s*=(?!=)", GUI_SOURCE):
        assert prop in props.get(classes[name], set()), f"self.ui.{name}.{prop} = ... on a {classes[name]}"


def test_bound_widgets_have_a_gui_connector_for_their_field_type():
    """Every SlicerParameterName widget has a connector for its field's type; sliders need bounds."""
    fields = {s.target.id: ast.unparse(s.annotation) for s in _class("PancreasRSTNParameterNode").body
              if isinstance(s, ast.AnnAssign)}
    bound = set()
    for widget in _ui().iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                param = prop.find("string").text
                annotation = fields[param]
                assert CONNECTOR_TYPES[widget.get("class")] in annotation, (param, widget.get("class"), annotation)
                if widget.get("class") == "ctkSliderWidget":  # the connector raises on an unbounded float
                    assert "WithinRange" in annotation, param
                bound.add(param)
    # fields without a widget are driven by the widget code (combo boxes filled at run time)
    unbound = set(fields) - bound
    assert unbound == {"organ", "device", "trainOrgan", "refineSegment"}, unbound
    for name in unbound:
        assert re.search(rf"\.{name}\s*=", GUI_SOURCE), f"nothing writes the unbound field {name}"


def test_parameter_node_connect_disconnect_pairing():
    """The GUI connection is made in one place and released whenever the panel lets the node go (exit, cleanup,
    scene close), so no stale binding keeps writing to a node."""
    widget = _class("PancreasRSTNWidget")
    connects = _calls(widget, "connectGui")
    disconnects = _calls(widget, "disconnectGui")
    assert len(connects) == 1 and len(disconnects) == 1
    assert all(ast.unparse(c.args[0]) == "self._parameterNodeGuiTag" for c in disconnects)
    assert "self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)" in SOURCE
    for method in ("cleanup", "exit", "onSceneStartClose"):
        body = next(f for f in widget.body if isinstance(f, ast.FunctionDef) and f.name == method)
        assert "self.setParameterNode(None)" in ast.unparse(body), method


def test_pytorchutils_call_uses_verified_keywords():
    tree = ast.parse((SLICER_LIB / "dependencies.py").read_text())
    body = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "install_dependencies")
    (install,) = _calls(body, "installTorch")
    assert not install.args, "pass installTorch's options by keyword"
    keywords = {k.arg for k in install.keywords}
    assert keywords <= INSTALL_TORCH_KEYWORDS and "torchVersionRequirement" in keywords
    requirement = next(k.value for k in install.keywords if k.arg == "torchVersionRequirement")
    assert ast.unparse(requirement).startswith("f'>="), "light-the-torch takes 'torch' + this string"
    (installed,) = _calls(body, "torchInstalled")
    assert not installed.args and not installed.keywords
    assert "PyTorchUtils.PyTorchUtilsLogic()" in ast.unparse(body)


def test_sample_data_name_is_a_builtin_sample():
    names = re.findall(r'downloadSample\("(\w+)"\)', (SLICER_LIB / "self_test.py").read_text(encoding="utf-8"))
    assert names and set(names) <= SAMPLE_DATA_NAMES


def test_self_test_runs_every_test_method():
    tree = ast.parse((SLICER_LIB / "self_test.py").read_text(encoding="utf-8"))
    test = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SelfTest")
    methods = {f.name for f in test.body if isinstance(f, ast.FunctionDef)}
    run_test = next(f for f in test.body if isinstance(f, ast.FunctionDef) and f.name == "runTest")
    called = {c.func.attr for c in ast.walk(run_test) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)}
    tests = {m for m in methods if m.startswith("test_")}
    assert tests and tests <= called, f"runTest does not run {sorted(tests - called)}"
    assert {"setUp", "runTest"} <= methods
