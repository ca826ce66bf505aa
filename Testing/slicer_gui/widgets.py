"""Small stand-ins for the CTK and qMRML widgets that PancreasRSTN.ui uses, written from their documented
behaviour (class names, properties and signals the .ui and the module rely on), as PySide6 widgets.

``qMRMLNodeComboBox`` lists the nodes of a real MRML scene (slicer-core) of the chosen classes and follows the
scene: nodes added, removed or renamed appear, disappear or change in the list.
"""

from __future__ import annotations

import shiboken6
from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtCore import Property, Signal


class ctkCollapsibleButton(QtWidgets.QWidget):  # noqa: N801 - the CTK class name the .ui names
    """A titled section (a header with an arrow and the text) whose contents hide when collapsed."""

    contentsCollapsed = Signal(bool)  # noqa: N815 - CTK's signal name
    HEADER = 24

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._text = ""
        self._collapsed = False
        self.setContentsMargins(0, self.HEADER, 0, 0)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        painter = QtGui.QPainter(self)
        header = QtCore.QRect(0, 0, self.width() - 1, self.HEADER - 2)
        painter.fillRect(header, self.palette().button())
        painter.setPen(self.palette().mid().color())
        painter.drawRect(header)
        painter.setPen(self.palette().buttonText().color())
        arrow = "\u25b8" if self._collapsed else "\u25be"
        painter.drawText(header.adjusted(8, 0, 0, 0), QtCore.Qt.AlignmentFlag.AlignVCenter, f"{arrow}  {self._text}")
        painter.end()

    def mousePressEvent(self, event) -> None:  # noqa: N802 - clicking the header folds the section
        if event.position().y() < self.HEADER:
            self._set_collapsed(not self._collapsed)

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802
        hint = super().sizeHint()
        return QtCore.QSize(hint.width(), self.HEADER + 4) if self._collapsed else hint

    def _get_text(self) -> str:
        return self._text

    def _set_text(self, value: str) -> None:
        self._text = value
        self.update()

    def _get_collapsed(self) -> bool:
        return self._collapsed

    def _set_collapsed(self, value: bool) -> None:
        value = bool(value)
        changed = value != self._collapsed
        self._collapsed = value
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindChildOption.FindDirectChildrenOnly):
            child.setVisible(not value)
        self.setMaximumHeight(self.HEADER + 4 if value else 16777215)
        self.update()
        if changed:
            self.contentsCollapsed.emit(value)

    text = Property(str, _get_text, _set_text)
    collapsed = Property(bool, _get_collapsed, _set_collapsed)


class ctkSliderWidget(QtWidgets.QWidget):  # noqa: N801
    """A slider with a spin box: a float value between minimum and maximum, in steps, with decimals."""

    valueChanged = Signal(float)  # noqa: N815

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._spin = QtWidgets.QDoubleSpinBox(self)
        self._spin.setRange(0.0, 99.0)
        self._spin.valueChanged.connect(self.valueChanged.emit)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._spin)

    def _get_value(self) -> float:
        return float(self._spin.value())

    def _set_value(self, value: float) -> None:
        self._spin.setValue(float(value))

    def _get_minimum(self) -> float:
        return float(self._spin.minimum())

    def _set_minimum(self, value: float) -> None:
        self._spin.setMinimum(float(value))

    def _get_maximum(self) -> float:
        return float(self._spin.maximum())

    def _set_maximum(self, value: float) -> None:
        self._spin.setMaximum(float(value))

    def _get_step(self) -> float:
        return float(self._spin.singleStep())

    def _set_step(self, value: float) -> None:
        self._spin.setSingleStep(float(value))

    def _get_decimals(self) -> int:
        return int(self._spin.decimals())

    def _set_decimals(self, value: int) -> None:
        self._spin.setDecimals(int(value))

    value = Property(float, _get_value, _set_value, notify=valueChanged)
    minimum = Property(float, _get_minimum, _set_minimum)
    maximum = Property(float, _get_maximum, _set_maximum)
    singleStep = Property(float, _get_step, _set_step)  # noqa: N815
    decimals = Property(int, _get_decimals, _set_decimals)


class ctkPathLineEdit(QtWidgets.QWidget):  # noqa: N801
    """A path field (with the browse button's role left to the test): ``currentPath`` and its change signal."""

    currentPathChanged = Signal(str)  # noqa: N815

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._edit = QtWidgets.QLineEdit(self)
        self._edit.textChanged.connect(self.currentPathChanged.emit)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._edit)

    def _get_path(self) -> str:
        return self._edit.text()

    def _set_path(self, value: str) -> None:
        self._edit.setText(str(value))

    currentPath = Property(str, _get_path, _set_path, notify=currentPathChanged)  # noqa: N815


class qMRMLWidget(QtWidgets.QWidget):  # noqa: N801
    """The .ui's root. Its ``mrmlSceneChanged(vtkMRMLScene*)`` connections cannot cross PySide, so
    ``setMRMLScene`` hands the scene to every node selector inside it itself."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:  # noqa: N802 - qMRML name
        self._scene = scene
        for combo in self.findChildren(qMRMLNodeComboBox):
            combo.setMRMLScene(scene)

    def mrmlScene(self):  # noqa: N802
        return self._scene


class qMRMLNodeComboBox(QtWidgets.QComboBox):  # noqa: N801
    """The nodes of the scene whose class is one of ``nodeTypes`` (subclasses only with ``showChildNodeTypes``),
    hidden nodes left out, an optional "None" entry; kept up to date with the scene's node events."""

    currentNodeChanged = Signal(object)  # noqa: N815 - vtkMRMLNode*
    currentNodeIDChanged = Signal(str)  # noqa: N815

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._scene = None
        self._observers: list[int] = []
        self._types: list[str] = []
        self._none_enabled = False
        self._show_child_types = True
        self._add_enabled = True
        self._remove_enabled = True
        self.currentIndexChanged.connect(self._emit_current)

    # ---- properties the .ui sets
    def _get_types(self) -> list:
        return list(self._types)

    def _set_types(self, value) -> None:
        self._types = [str(v) for v in value]
        self._refresh()

    def _get_none(self) -> bool:
        return self._none_enabled

    def _set_none(self, value: bool) -> None:
        self._none_enabled = bool(value)
        self._refresh()

    def _get_children(self) -> bool:
        return self._show_child_types

    def _set_children(self, value: bool) -> None:
        self._show_child_types = bool(value)
        self._refresh()

    def _get_add(self) -> bool:
        return self._add_enabled

    def _set_add(self, value: bool) -> None:
        self._add_enabled = bool(value)

    def _get_remove(self) -> bool:
        return self._remove_enabled

    def _set_remove(self, value: bool) -> None:
        self._remove_enabled = bool(value)

    nodeTypes = Property("QStringList", _get_types, _set_types)  # noqa: N815
    noneEnabled = Property(bool, _get_none, _set_none)  # noqa: N815
    showChildNodeTypes = Property(bool, _get_children, _set_children)  # noqa: N815
    addEnabled = Property(bool, _get_add, _set_add)  # noqa: N815
    removeEnabled = Property(bool, _get_remove, _set_remove)  # noqa: N815

    # ---- the scene
    def setMRMLScene(self, scene) -> None:  # noqa: N802
        if self._scene is not None:
            for tag in self._observers:
                self._scene.RemoveObserver(tag)
        self._scene = scene
        self._observers = []
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndBatchProcessEvent):
                self._observers.append(scene.AddObserver(event, self._on_scene_event))
        self._refresh()

    def _on_scene_event(self, scene, event) -> None:
        if not shiboken6.isValid(self):  # the widget is gone (its panel was closed): stop following the scene
            for tag in self._observers:
                scene.RemoveObserver(tag)
            self._observers = []
            return
        self._refresh()

    def mrmlScene(self):  # noqa: N802
        return self._scene

    def _accepts(self, node) -> bool:
        if node.GetHideFromEditors():
            return False
        for name in self._types:
            if node.GetClassName() == name or (self._show_child_types and node.IsA(name)):
                return True
        return False

    def nodes(self) -> list:
        if self._scene is None:
            return []
        found = []
        for name in self._types:
            for i in range(self._scene.GetNumberOfNodesByClass(name)):
                node = self._scene.GetNthNodeByClass(i, name)
                if self._accepts(node) and node not in found:
                    found.append(node)
        return found

    def _refresh(self) -> None:
        current = self.currentNodeID()
        self.blockSignals(True)
        self.clear()
        if self._none_enabled:
            self.addItem("None", "")
        for node in self.nodes():
            self.addItem(node.GetName(), node.GetID())
        index = self.findData(current) if current else -1
        self.setCurrentIndex(index if index >= 0 else (1 if not self._none_enabled and self.count() else 0))
        self.blockSignals(False)
        if self.currentNodeID() != current:
            self._emit_current()

    def currentNodeID(self) -> str:  # noqa: N802
        return str(self.currentData() or "")

    def currentNode(self):  # noqa: N802
        node_id = self.currentNodeID()
        return self._scene.GetNodeByID(node_id) if node_id and self._scene is not None else None

    def setCurrentNode(self, node) -> None:  # noqa: N802
        node_id = node.GetID() if node is not None else ""
        index = self.findData(node_id) if node_id else (0 if self._none_enabled else -1)
        if index < 0 and node is not None:
            self._refresh()
            index = self.findData(node_id)
        self.setCurrentIndex(index)

    def setCurrentNodeID(self, node_id: str) -> None:  # noqa: N802
        self.setCurrentNode(self._scene.GetNodeByID(node_id) if node_id and self._scene else None)

    def _emit_current(self, *args) -> None:
        self.currentNodeChanged.emit(self.currentNode())
        self.currentNodeIDChanged.emit(self.currentNodeID())


CUSTOM_WIDGETS = [ctkCollapsibleButton, ctkSliderWidget, ctkPathLineEdit, qMRMLWidget, qMRMLNodeComboBox]
