"""The import graph keeps its layers (no arrow up, no circle), and the picture in docs/ARCHITECTURE.md is the
one ``scripts/import_graph.py`` draws from the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"


@pytest.fixture(scope="module")
def graph_tool():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graph(graph_tool):
    return graph_tool.module_graph()


def test_every_module_has_a_declared_layer_and_the_graph_sees_lazy_imports(graph_tool, graph):
    assert len(graph) > 100
    assert {graph_tool.layer_of(m) for m in graph} == {name for name, _ in graph_tool.LAYERS}
    # a lazy import inside a function counts: the Segment section asks for the device only when it shows it
    assert "PancreasRSTNLib.devices" in graph["PancreasRSTNPanel.segment_section"]


def test_no_arrow_runs_from_a_lower_layer_to_a_higher_one(graph_tool, graph):
    assert graph_tool.upward_arrows(graph) == []


def test_no_modules_import_each_other(graph_tool, graph):
    assert graph_tool.cycles(graph) == []


def test_every_import_of_ours_names_a_module_that_exists(graph_tool):
    assert graph_tool.dangling_imports() == []


def test_the_checks_catch_an_arrow_up_and_a_circle(graph_tool, graph):
    up = {m: set(t) for m, t in graph.items()}
    up["PancreasRSTNLib.engine.inference"].add("PancreasRSTNLib.evaluation.metrics")
    assert graph_tool.upward_arrows(up) == ["PancreasRSTNLib.engine.inference -> PancreasRSTNLib.evaluation.metrics"]
    circle = {m: set(t) for m, t in graph.items()}
    circle["PancreasRSTNLib.evaluation.metrics"].add("PancreasRSTNLib.evaluation.cases")
    assert graph_tool.cycles(circle) == [["PancreasRSTNLib.evaluation.cases", "PancreasRSTNLib.evaluation.metrics"]]


def test_the_core_never_imports_slicer_or_qt(graph_tool):
    core = [m for m in graph_tool.module_names() if m.startswith("PancreasRSTNLib")]
    for module in core:
        text = graph_tool.module_names()[module].read_text(encoding="utf-8")
        for name in ("slicer", "vtk", "qt", "ctk"):
            assert f"import {name}\n" not in text and f"from {name} " not in text, (module, name)


def test_the_documented_diagram_is_the_generated_one(graph_tool, graph):
    assert graph_tool.documented() == graph_tool.diagram(graph), "run: python scripts/import_graph.py --write"
