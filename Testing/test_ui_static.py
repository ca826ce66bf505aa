"""Static checks of the Slicer GUI (no Slicer needed): the .ui and PancreasRSTN.py agree."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "PancreasRSTN" / "PancreasRSTN.py"
UI = ROOT / "PancreasRSTN" / "Resources" / "UI" / "PancreasRSTN.ui"


def _ui_widgets() -> dict[str, ET.Element]:
    tree = ET.parse(UI)
    return {w.get("name"): w for w in tree.iter("widget")}


def _parameter_fields() -> dict[str, str]:
    """Annotated fields of the @parameterNodeWrapper class, name -> annotation source."""
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in PancreasRSTN.py")


def test_ui_is_valid_designer_xml():
    root = ET.parse(UI).getroot()
    assert root.tag == "ui" and root.find("class").text == "PancreasRSTN"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget"
    custom = {c.find("class").text for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if c.startswith(("ctk", "qMRML"))} <= custom


def test_every_ui_name_used_in_python_exists():
    sources = [MODULE, *sorted((MODULE.parent / "PancreasRSTNPanel").glob("*.py"))]
    names = set(re.findall(r"self\.ui\.(\w+)", "\n".join(p.read_text(encoding="utf-8") for p in sources)))
    assert names, "the widget uses no self.ui.<name>?"
    missing = names - set(_ui_widgets())
    assert not missing, f"self.ui names missing from the .ui: {sorted(missing)}"


def test_widget_names_are_unique():
    names = [w.get("name") for w in ET.parse(UI).iter("widget")]
    assert len(names) == len(set(names))


def test_every_slicer_parameter_name_is_a_field_of_matching_type():
    fields = _parameter_fields()
    kinds = {"QCheckBox": "bool", "QSpinBox": "int", "ctkSliderWidget": "float", "ctkPathLineEdit": "Path",
             "qMRMLNodeComboBox": "vtkMRML"}
    bound = 0
    for name, widget in _ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") != "SlicerParameterName":
                continue
            param = prop.find("string").text
            assert param in fields, f"{name}: SlicerParameterName '{param}' is not a parameter node field"
            expected = kinds.get(widget.get("class"))
            assert expected and expected in fields[param], (
                f"{name} ({widget.get('class')}) is bound to '{param}: {fields[param]}'")
            bound += 1
    assert bound >= 15


def test_parameter_defaults_match_the_paper():
    text = MODULE.read_text(encoding="utf-8")
    assert re.search(r"convergenceThreshold: .* = 0\.99\b", text)
    # 0: "as validated for the model" (model.json inference.max_iter), else the paper's 10 (engine/config.py)
    assert re.search(r"maxRounds: .* = 0\b", text)
    assert re.search(r"REFERENCE_MAX_ITER = 10\b", (MODULE.parent / "PancreasRSTNLib" / "engine" / "config.py")
                     .read_text(encoding="utf-8"))
    assert re.search(r"margin: .* = 20\b", text)
