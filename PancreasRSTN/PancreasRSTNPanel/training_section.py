"""The Training section: start the trainer as a separate process, follow its log (live loss chart, last line),
cancel it, and install the model it wrote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import qt
import slicer

from PancreasRSTNSlicerLib import dependencies


class TrainingSection:
    POLL_MS = 2000

    def __init__(self, ui, parameters: Callable[[], object], install: Callable[[str], None], module_dir: Path) -> None:
        from PancreasRSTNLib.organs import ORGANS
        from PancreasRSTNSlicerLib.training import PRESETS

        self.ui, self.parameters, self.install, self.module_dir = ui, parameters, install, module_dir
        self.process = self.timer = None
        self.nodes = (None, None)
        for organ in ORGANS.values():
            ui.trainOrganComboBox.addItem(organ.display_name, organ.name)
        for preset in PRESETS:
            ui.trainPresetComboBox.addItem(preset)
        ui.trainButton.connect("clicked(bool)", self.start)
        ui.trainCancelButton.connect("clicked(bool)", self.cancel)
        ui.trainOrganComboBox.connect("currentIndexChanged(int)", self.organ_changed)

    def organ_changed(self, index: int = -1) -> None:
        if self.parameters() and self.ui.trainOrganComboBox.currentData:
            self.parameters().trainOrgan = self.ui.trainOrganComboBox.currentData

    def start(self) -> None:
        from PancreasRSTNSlicerLib.training import start_training

        p = self.parameters()
        views = [v for v, on in (("X", p.trainViewX), ("Y", p.trainViewY), ("Z", p.trainViewZ)) if on]
        try:
            self.process = start_training(p.trainDatasetDir, p.trainOutputDir, p.trainOrgan, p.trainLabelValue, views,
                                          self.ui.trainPresetComboBox.currentText, self.module_dir,
                                          python=dependencies.slicer_python())
        except ValueError as exc:
            return slicer.util.errorDisplay(str(exc))
        self.timer = qt.QTimer()
        self.timer.setInterval(self.POLL_MS)
        self.timer.connect("timeout()", self.poll)
        self.timer.start()
        self.ui.trainButton.enabled, self.ui.trainCancelButton.enabled = False, True
        self.ui.trainStatusLabel.text = "Training started..."

    def poll(self) -> None:
        table, chart = self.process.refresh_chart(slicer.mrmlScene, self.nodes)
        if chart is not None and self.nodes[1] is None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)
        self.nodes = (table, chart)
        self.ui.trainStatusLabel.text = self.process.last_line() or self.ui.trainStatusLabel.text
        code = self.process.poll()
        if code is not None:
            self.timer.stop()
            self.ui.trainButton.enabled, self.ui.trainCancelButton.enabled = True, False
            if code != 0:
                return slicer.util.errorDisplay(f"Training stopped (exit code {code}).\n\n{self.process.tail()}",
                                                windowTitle="PancreasRSTN training")
            self.ui.trainProgressBar.value = 1000
            self.install(str(self.process.model_folder))

    def cancel(self) -> None:
        if self.process is not None and self.process.cancel():
            self.ui.trainStatusLabel.text = "Training cancelled (resume later with the same output folder)."
