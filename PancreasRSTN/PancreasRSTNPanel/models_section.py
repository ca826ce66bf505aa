"""The Model manager and Dependencies sections: list, install (folder or zip, with a "replace?" question), import
reference checkpoints, verify, open the models folder; check and install the Python dependencies."""

from __future__ import annotations

import html
from collections.abc import Callable

import qt
import slicer

from PancreasRSTNSlicerLib import dependencies, model_manager


class ModelsSection:
    def __init__(self, ui, logic, show_error: Callable[[BaseException], None], on_change: Callable[[], None]) -> None:
        self.ui, self.logic, self.show_error, self.on_change = ui, logic, show_error, on_change
        self.models: list = []
        for widget, slot in (
            ("installFolderButton", lambda: self.install(qt.QFileDialog.getExistingDirectory(
                None, "Model folder (with model.json)"))),
            ("installZipButton", lambda: self.install(qt.QFileDialog.getOpenFileName(
                None, "Zipped model", "", "Zip files (*.zip)"))),
            ("importReferenceButton", self.import_reference), ("verifyModelsButton", self.verify),
            ("openModelsFolderButton", self.open_folder), ("refreshModelsButton", self.refresh),
            ("installDependenciesButton", self.install_dependencies),
        ):
            getattr(ui, widget).connect("clicked(bool)", slot)
        ui.modelsTableWidget.connect("itemSelectionChanged()", self.selection_changed)
        self.refresh_dependencies()
        self.refresh()

    def refresh(self) -> None:
        """The table of installed models, the organ list of the Segment section, and every model's warning."""
        from PancreasRSTNLib.io.user_models import user_models_dir

        self.models = self.logic.installed_models()
        self.ui.modelsFolderLabel.text = f"Your models folder: {user_models_dir()}"
        table = self.ui.modelsTableWidget
        table.clear()
        table.setColumnCount(len(model_manager.HEADERS))
        table.setHorizontalHeaderLabels(model_manager.HEADERS)
        table.setRowCount(len(self.models))
        for row, cells in enumerate(model_manager.table_rows(self.models)):
            for col, text in enumerate(cells):
                table.setItem(row, col, qt.QTableWidgetItem(text))
        combo = self.ui.organComboBox
        current = combo.currentData
        combo.blockSignals(True)
        combo.clear()
        for display_name, organ in model_manager.organ_choices(self.models):
            combo.addItem(display_name, organ)
        combo.blockSignals(False)
        combo.currentIndex = max(combo.findData(current), 0) if current else 0
        warnings = sorted({m.warning for m in self.models if m.warning})
        self.ui.modelWarningLabel.text = "<b>" + html.escape(" ".join(warnings)) + "</b>" if warnings else ""
        self.on_change()

    def selection_changed(self) -> None:
        rows = {item.row() for item in self.ui.modelsTableWidget.selectedItems()}
        if rows:
            m = self.models[min(rows)]
            self.ui.modelWarningLabel.text = html.escape(str(m.path)) + (
                f"<br><b>{html.escape(m.warning)}</b>" if m.warning else "")

    def install(self, source: str) -> None:
        if source:
            try:
                info = model_manager.install(source, replace=slicer.util.confirmYesNoDisplay)
                if info is not None:
                    slicer.util.infoDisplay(f"Installed '{info.name}' for {info.organ}.", windowTitle="PancreasRSTN")
            except Exception as exc:  # noqa: BLE001 - shown to the user
                self.show_error(exc)
            self.refresh()

    def import_reference(self) -> None:
        from PancreasRSTNLib.io.user_models import import_reference

        checkpoints = {view: qt.QFileDialog.getOpenFileName(None, f"Reference checkpoint for view {view} (Cancel to "
                                                            "skip)", "", "PyTorch checkpoints (*.pkl *.pth *.pt)")
                       for view in ("X", "Y", "Z")}
        if any(checkpoints.values()):
            try:
                info = import_reference(checkpoints, organ=self.ui.trainOrganComboBox.currentData or "pancreas")
                slicer.util.infoDisplay(f"Imported '{info.name}' ({'/'.join(info.views)}).", windowTitle="PancreasRSTN")
            except Exception as exc:  # noqa: BLE001
                self.show_error(exc)
            self.refresh()

    def verify(self) -> None:
        slicer.util.infoDisplay(model_manager.verify_report(self.models), windowTitle="PancreasRSTN: verify models")

    def open_folder(self) -> None:
        from PancreasRSTNLib.io.user_models import user_models_dir

        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(user_models_dir())))

    def refresh_dependencies(self) -> None:
        missing = dependencies.missing_packages()
        self.ui.dependenciesLabel.text = dependencies.status_text(missing)
        self.ui.dependenciesCollapsibleButton.collapsed = not missing

    def install_dependencies(self) -> None:
        try:
            with slicer.util.WaitCursor():
                dependencies.install_dependencies()
        except Exception as exc:  # noqa: BLE001
            slicer.util.errorDisplay(str(exc), windowTitle="PancreasRSTN: dependencies")
        self.refresh_dependencies()
        self.on_change()
