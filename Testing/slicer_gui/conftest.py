"""The real PancreasRSTN Widget on real Qt (PySide6, offscreen) and real MRML (slicer-core).

The folder is not named ``slicer``: the slicer-core package extends its ``__path__`` with every ``slicer`` folder
on sys.path. The PythonQt-like layer, the CTK/qMRML widget stand-ins and the application stand-ins live next to
this file; they are installed as the modules ``qt``, ``ctk``, ``slicer.ScriptedLoadableModule`` and
``slicer.parameterNodeWrapper`` only while this suite runs, and the module is imported afresh for it.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6", reason="the GUI suite needs PySide6-Essentials (pip install PySide6-Essentials)")
pytest.importorskip("pytestqt", reason="the GUI suite needs pytest-qt (pip install pytest-qt)")
pytest.importorskip("slicer", reason="the GUI suite needs the slicer-core wheel (pip install slicer-core)")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODULE_FILE = ROOT / "PancreasRSTN" / "PancreasRSTN.py"
for path in (HERE, HERE.parent / "slicer_logic"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from slicer_standins import STANDIN_MODULES  # noqa: E402  (after the harness folder is on sys.path)

pytestmark = pytest.mark.slicer


def _hold_singletons(count: int = 2_000_000) -> None:
    """PySide6 6.12.0 releases references to None and True that it never took: a C++ signal calling a Python slot
    (its None result), an invalid QVariant read as None (``currentData()``, ``property()``), ``Signal.emit()`` (its
    True result). Each GUI test loses thousands; on Python < 3.12 (None and the bools are not immortal there) a long
    session brings a count to zero and the interpreter aborts while finalizing ("none_dealloc", "bool_dealloc").
    Extra references, held by a list that is never freed, keep the counts far from zero."""
    if sys.version_info >= (3, 12):
        return
    import ctypes

    held = [None, True, False] * count
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(held))  # never freed, not even at exit


_hold_singletons()


@pytest.fixture(scope="module")
def module(qapp):
    """PancreasRSTN.py imported with the Qt/Slicer stand-ins in place; everything restored afterwards."""
    import slicer

    import slicer_standins as s

    saved = {name: sys.modules.get(name) for name in STANDIN_MODULES}
    saved_attributes = {name: getattr(slicer, name, None) for name in ("app", "modules", "mrmlScene")}
    s.install_module_standins(MODULE_FILE)
    try:
        yield importlib.import_module("PancreasRSTN")
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
        for name, value in saved_attributes.items():
            if value is None and hasattr(slicer, name):
                delattr(slicer, name)
            elif value is not None:
                setattr(slicer, name, value)


@pytest.fixture
def models_root(tmp_path, monkeypatch):
    """The user's models folder with one tiny real-architecture pancreas model; no bundled models."""
    from gui_helpers import tiny_package

    root = tmp_path / "user_models"
    tiny_package(root / "tiny-pancreas", "pancreas", seed=0)
    monkeypatch.setenv("PANCREAS_RSTN_MODELS", str(root))
    monkeypatch.setattr("PancreasRSTNLib.io.user_models.bundled_models_dirs", lambda: [])
    return root


@pytest.fixture
def scene(module):
    """A fresh slicer-core scene with the application's logics, three slice views and a layout."""
    import slicer_standins as s

    context = s.build_core_scene()
    yield context
    context.scene.Clear(True)


@pytest.fixture
def panel(module, scene, models_root, qtbot):
    """The real Widget, set up from the real .ui, in a host widget; cleaned up after the test."""
    from PySide6 import QtWidgets

    from pythonqt import FileDialogAnswers, unwrap, wrap

    FileDialogAnswers.answers.clear()
    FileDialogAnswers.asked.clear()
    host = QtWidgets.QWidget()  # the module panel (qSlicerScriptedLoadableModuleWidget): it says it is entered
    host.setProperty("isEntered", True)
    qtbot.addWidget(host)
    widget = module.PancreasRSTNWidget(wrap(host))
    widget.setup()
    host.show()
    yield widget
    widget.cleanup()
    unwrap(host).close()
