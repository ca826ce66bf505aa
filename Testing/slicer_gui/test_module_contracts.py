"""Contracts between PancreasRSTN.py and the library it calls, checked on the module as the GUI suite imports it
(Qt stand-ins, real MRML): every Logic call binds to its signature, every attribute the Widget reads exists."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

from PancreasRSTNSlicerLib.logic import RunOptions
from PancreasRSTNSlicerLib.session import RunResult, RunSession

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "PancreasRSTN" / "PancreasRSTN.py"
SLICER_LIB = ROOT / "PancreasRSTN" / "PancreasRSTNSlicerLib"
PANEL = ROOT / "PancreasRSTN" / "PancreasRSTNPanel"
# the module file, its panel sections and the self-test: the code that runs only inside the Slicer application
SOURCE = "\n".join(p.read_text(encoding="utf-8")
                   for p in [MODULE, *sorted(PANEL.glob("*.py")), SLICER_LIB / "self_test.py"])
TREE = ast.parse(SOURCE)


def _bind(signature: inspect.Signature, call: ast.Call, drop_self: bool = False) -> None:
    args = [object()] * len(call.args)
    kwargs = {k.arg: object() for k in call.keywords}
    signature.bind(*([object()] if drop_self else []), *args, **kwargs)


def test_parameter_annotations_resolve_like_slicer(module):
    """Slicer's wrapper calls typing.get_type_hints(cls, include_extras=True); the module uses postponed
    annotations, so every name in them must resolve in the module's globals."""
    import typing

    hints = typing.get_type_hints(module.PancreasRSTNParameterNode, include_extras=True)
    assert hints["inputVolume"].__name__ == "vtkMRMLScalarVolumeNode"
    assert typing.get_origin(hints["convergenceThreshold"]) is typing.Annotated


def test_widget_and_self_test_call_the_logic_with_accepted_arguments(module):
    logic_cls = module.PancreasRSTNLogic
    called = set()
    controller = ast.parse((SLICER_LIB / "run_controller.py").read_text())
    for call in [*ast.walk(TREE), *ast.walk(controller)]:
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
            continue
        owner = ast.unparse(call.func.value)
        if owner in ("self.logic", "logic", "PancreasRSTNLogic"):  # the Widget, the self-test, the RunController
            name = call.func.attr
            assert hasattr(logic_cls, name), f"PancreasRSTNLogic has no {name}"
            attr = inspect.getattr_static(logic_cls, name)
            function = attr.__func__ if isinstance(attr, staticmethod) else attr
            _bind(inspect.signature(function), call, drop_self=not isinstance(attr, staticmethod))
            called.add(name)
    assert {"validate_input", "resolve_jobs", "installed_models", "export_segmentation", "error_message"} <= called


def test_run_options_keywords_are_fields(module):
    fields = {f.name for f in dataclasses.fields(RunOptions)}
    calls = [c for c in ast.walk(TREE) if isinstance(c, ast.Call) and ast.unparse(c.func) == "RunOptions"]
    assert len(calls) >= 2  # the panel's and the self-test's
    for call in calls:
        assert {k.arg for k in call.keywords} <= fields


def test_widget_uses_existing_session_result_and_message_attributes(module):
    from PancreasRSTNSlicerLib import background_run

    def fields(cls):
        return {f.name for f in dataclasses.fields(cls)}

    result_fields, round_fields = fields(RunResult), fields(
        __import__("PancreasRSTNSlicerLib.logic", fromlist=["RoundNodes"]).RoundNodes)
    for attr in re.findall(r"self\.result\.(\w+)", SOURCE):
        assert attr in result_fields, attr
    for attr in re.findall(r"\bnodes\.(\w+)", SOURCE):
        assert attr in round_fields, attr
    session_source = inspect.getsource(RunSession)
    for attr in set(re.findall(r"self\._session\.(\w+)", SOURCE)):
        assert hasattr(RunSession, attr) or re.search(rf"self\.{attr}\s*(:[^=\n]+)?=", session_source), attr
    for cls_name, attrs in {"ProgressMessage": ("fraction", "stage"), "RoundReady": ("organ", "result"),
                            "Finished": ("seconds",), "Failed": ("message", "kind", "details")}.items():
        assert set(attrs) <= fields(getattr(background_run, cls_name))
    for attr in set(re.findall(r"\bmessage\.(\w+)", SOURCE)):
        assert any(attr in fields(getattr(background_run, c))
                   for c in ("ProgressMessage", "RoundReady", "Finished", "Failed")), attr
