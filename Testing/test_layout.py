"""The core's layout: subpackages by stage, old flat import paths kept for one release, modules a reader can hold."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "PancreasRSTN" / "PancreasRSTNLib"


@pytest.mark.parametrize(("old", "new"), [
    ("PancreasRSTNLib.inference", "PancreasRSTNLib.engine.inference"),
    ("PancreasRSTNLib.trainer", "PancreasRSTNLib.training.trainer"),
    ("PancreasRSTNLib.model_package", "PancreasRSTNLib.io.model_package"),
    ("PancreasRSTNLib.commands.segment", "PancreasRSTNLib.app.commands.segment"),
])
def test_an_old_import_path_gives_the_same_module_and_says_where_it_went(old, new):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


def test_the_old_evaluation_names_still_import():
    with pytest.warns(DeprecationWarning, match="evaluation.cases"):
        from PancreasRSTNLib.evaluation import evaluate_case
    from PancreasRSTNLib.evaluation.cases import evaluate_case as moved
    assert evaluate_case is moved


def test_no_core_module_is_longer_than_a_reader_holds():
    lengths = {p.relative_to(CORE): len(p.read_text(encoding="utf-8").splitlines()) for p in CORE.rglob("*.py")}
    assert max(lengths.values()) <= 400, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]


def test_the_package_runs_as_a_module():
    for target in ("PancreasRSTNLib", "PancreasRSTNLib.cli"):
        proc = subprocess.run([sys.executable, "-m", target, "--version"], capture_output=True, text=True,
                              cwd=CORE.parent, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
