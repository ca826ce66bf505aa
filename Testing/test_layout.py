"""The core's layout: subpackages by stage, modules a reader can hold, one entry point."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "PancreasRSTN" / "PancreasRSTNLib"


def test_no_core_module_is_longer_than_a_reader_holds():
    lengths = {p.relative_to(CORE): len(p.read_text(encoding="utf-8").splitlines()) for p in CORE.rglob("*.py")}
    assert max(lengths.values()) <= 400, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]


def test_the_package_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "PancreasRSTNLib", "--version"], capture_output=True, text=True,
                          cwd=CORE.parent, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr


def test_old_flat_import_paths_are_gone_and_nothing_hooks_the_import_system():
    import PancreasRSTNLib

    for old in ("PancreasRSTNLib.inference", "PancreasRSTNLib.cli", "PancreasRSTNLib._compat"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)
    assert not [f for f in sys.meta_path if type(f).__module__.startswith(PancreasRSTNLib.__name__)]
    with pytest.raises(ImportError):
        from PancreasRSTNLib.evaluation import evaluate_case  # noqa: F401 - lives in evaluation.cases only


def test_every_bundled_model_travels_with_a_non_editable_install():
    """A model folder in Resources/Models that pyproject.toml's data-files leave out would be missing from
    `pip install .`, and the demo would silently fall back to another model."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    root = Path(__file__).resolve().parents[1]
    data_files = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = {Path(target).name for target in data_files if target.startswith("share/pancreas-rstn/Models/")}
    bundled = {p.name for p in (root / "Resources" / "Models").iterdir() if (p / "model.json").is_file()}
    assert bundled and shipped == bundled
