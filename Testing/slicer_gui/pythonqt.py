"""A thin layer that makes PySide6 (Qt 6) behave like Slicer's PythonQt where the module relies on it.

Written from PythonQt's documented behaviour, not from its sources:
- Qt properties are looked up before methods: ``combo.count`` is an int, ``button.enabled = x`` sets it;
- ``obj.connect("clicked(bool)", fn)`` connects by signature and passes only as many arguments as ``fn`` takes;
- ``name`` is ``objectName``; Qt objects returned by calls come back wrapped the same way;
- static dialogs return a value, not PySide's (value, filter) tuples.

``qt`` (a module object built here) hands out wrapped objects; ``QtProxy.raw`` gives the PySide object back.
"""

from __future__ import annotations

import inspect
import re
import types
from collections import deque
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

_PYTHON_TYPES = {"bool": bool, "int": int, "double": float, "float": float, "QString": str}


def unwrap(value):
    if isinstance(value, QtProxy):
        return object.__getattribute__(value, "_obj")
    if isinstance(value, (list, tuple)):
        return type(value)(unwrap(v) for v in value)
    return value


def wrap(value):
    if isinstance(value, QtCore.QObject) and not isinstance(value, QtProxy):
        return QtProxy(value)
    if isinstance(value, list):
        return [wrap(v) for v in value]
    return value


def _accepted_arguments(fn) -> int | None:
    """How many positional arguments ``fn`` takes (None: any number)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _slot(fn):
    """Call ``fn`` with as many of the signal's arguments as it accepts (PythonQt's rule)."""
    wanted = _accepted_arguments(fn)

    def slot(*args):
        values = [wrap(a) for a in args]
        return fn(*(values if wanted is None else values[:wanted]))

    return slot


class QtProxy:
    """A PySide6 QObject seen the PythonQt way."""

    __slots__ = ("_obj", "__weakref__")

    def __init__(self, obj: QtCore.QObject) -> None:
        object.__setattr__(self, "_obj", obj)

    @property
    def raw(self) -> QtCore.QObject:
        return object.__getattribute__(self, "_obj")

    def __getattr__(self, name: str):
        obj = object.__getattribute__(self, "_obj")
        if name == "name":
            return obj.objectName()
        meta = obj.metaObject()
        if meta.indexOfProperty(name) >= 0 or name.encode() in obj.dynamicPropertyNames():
            return wrap(obj.property(name))
        attr = getattr(obj, name)
        if isinstance(attr, QtCore.SignalInstance):
            return _Signal(attr)
        if callable(attr):
            def call(*args, **kwargs):
                return wrap(attr(*unwrap(args), **{k: unwrap(v) for k, v in kwargs.items()}))

            return call
        return wrap(attr)

    def __setattr__(self, name: str, value) -> None:
        obj = object.__getattribute__(self, "_obj")
        if name == "name":
            obj.setObjectName(value)
            return
        if obj.metaObject().indexOfProperty(name) >= 0:
            if not obj.setProperty(name, unwrap(value)):
                raise AttributeError(f"cannot set Qt property {name!r} of {obj.metaObject().className()}")
            return
        setattr(obj, name, value)

    def connect(self, signature: str, fn) -> bool:
        """PythonQt's ``connect("signal(types)", callable)``."""
        obj = object.__getattribute__(self, "_obj")
        match = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", signature)
        if not match:
            raise ValueError(f"not a signal signature: {signature!r}")
        name, args = match.group(1), [a.strip() for a in match.group(2).split(",") if a.strip()]
        signal = getattr(obj, name)
        if len(args) == 1 and args[0] in _PYTHON_TYPES:
            try:
                signal = signal[_PYTHON_TYPES[args[0]]]
            except (KeyError, IndexError, TypeError):
                pass
        signal.connect(_slot(fn))
        return True

    def disconnect(self, signature: str, fn=None) -> bool:
        obj = object.__getattribute__(self, "_obj")
        getattr(obj, signature.split("(")[0]).disconnect()
        return True

    def __eq__(self, other) -> bool:
        return unwrap(self) is unwrap(other)

    def __hash__(self) -> int:
        return hash(id(unwrap(self)))

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        obj = object.__getattribute__(self, "_obj")
        return f"<PythonQt-like {obj.metaObject().className()} '{obj.objectName()}'>"


class _Signal:
    """``obj.clicked.connect(fn)`` with PythonQt's argument rule."""

    def __init__(self, signal: QtCore.SignalInstance) -> None:
        self._signal = signal

    def connect(self, fn) -> None:
        self._signal.connect(_slot(fn))

    def emit(self, *args) -> None:
        self._signal.emit(*unwrap(args))

    def disconnect(self, *args) -> None:
        self._signal.disconnect(*args)


class _ClassProxy:
    """A Qt class: calling it builds a wrapped instance; attributes (enums, static methods) pass through."""

    def __init__(self, cls) -> None:
        self._cls = cls

    def __call__(self, *args, **kwargs):
        return wrap(self._cls(*unwrap(args), **{k: unwrap(v) for k, v in kwargs.items()}))

    def __getattr__(self, name: str):
        attr = getattr(self._cls, name)
        if callable(attr) and not isinstance(attr, type) and not hasattr(attr, "__members__"):
            def call(*args, **kwargs):
                return wrap(attr(*unwrap(args), **{k: unwrap(v) for k, v in kwargs.items()}))

            return call
        return attr

    def __instancecheck__(self, instance) -> bool:
        return isinstance(unwrap(instance), self._cls)


class FileDialogAnswers:
    """``qt.QFileDialog``: the user's answers to modal file dialogs, queued by the test (a modal dialog cannot be
    clicked in an offscreen test). Returns strings, as PythonQt does; an empty queue is a Cancel ("")."""

    answers: deque = deque()
    asked: list[tuple[str, tuple]] = []

    @classmethod
    def answer(cls, *values: str) -> None:
        cls.answers.extend(values)

    @classmethod
    def _next(cls, kind: str, args) -> str:
        cls.asked.append((kind, args))
        return str(cls.answers.popleft()) if cls.answers else ""

    @classmethod
    def getSaveFileName(cls, *args, **kwargs) -> str:  # noqa: N802 - Qt name
        return cls._next("save", args)

    @classmethod
    def getOpenFileName(cls, *args, **kwargs) -> str:  # noqa: N802
        return cls._next("open", args)

    @classmethod
    def getExistingDirectory(cls, *args, **kwargs) -> str:  # noqa: N802
        return cls._next("folder", args)


class DesktopServices:
    """``qt.QDesktopServices``: records what would be opened in the system's file browser."""

    opened: list[str] = []

    @classmethod
    def openUrl(cls, url) -> bool:  # noqa: N802 - Qt name
        cls.opened.append(unwrap(url).toLocalFile() if hasattr(unwrap(url), "toLocalFile") else str(url))
        return True


class _UiLoader:
    """``qt.QUiLoader()`` that knows the CTK and qMRML stand-ins."""

    custom_widgets: list[type] = []

    def __init__(self) -> None:
        from PySide6.QtUiTools import QUiLoader

        self._loader = QUiLoader()
        for cls in self.custom_widgets:
            self._loader.registerCustomWidget(cls)

    def load(self, qfile, parent=None):
        return wrap(self._loader.load(unwrap(qfile), unwrap(parent)))


def build_qt_module(custom_widgets: list[type]) -> types.ModuleType:
    """The ``qt`` module the Slicer module imports."""
    module = types.ModuleType("qt", "PythonQt-like Qt over PySide6 (tests)")
    _UiLoader.custom_widgets = list(custom_widgets)

    def module_getattr(name: str) -> Any:
        for namespace in (QtWidgets, QtCore, QtGui):
            if hasattr(namespace, name):
                value = getattr(namespace, name)
                return _ClassProxy(value) if isinstance(value, type) else value
        raise AttributeError(f"module 'qt' has no attribute {name!r}")

    module.__getattr__ = module_getattr  # type: ignore[attr-defined]
    module.QUiLoader = _UiLoader
    module.QFileDialog = FileDialogAnswers
    module.QDesktopServices = DesktopServices
    module.Qt = QtCore.Qt
    module.QFile = QtCore.QFile
    module.QUrl = QtCore.QUrl
    module.QTableWidgetItem = QtWidgets.QTableWidgetItem
    module.QMessageBox = QtWidgets.QMessageBox
    module.QApplication = QtWidgets.QApplication
    return module
