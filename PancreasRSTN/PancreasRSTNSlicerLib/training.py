"""Training from Slicer: the trainer runs as a separate process (Slicer's Python); this module builds its
command line, reads its CSV log for the live loss curve, and fills a table + plot chart (MRML, no Qt)."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

# Schedule presets of the GUI -> trainer options (see ``pancreas-rstn train --help``).
PRESETS: dict[str, list[str]] = {
    "quick (light backbone, CPU friendly)": ["--backbone", "light", "--steps", "S:200,I:400,J:400"],
    "reference (FCN-8s, epochs 2,6,8)": ["--backbone", "fcn8s", "--epochs", "2,6,8"],
}
LOG_RELATIVE_PATH = Path("logs") / "train_log.csv"
MODEL_RELATIVE_PATH = Path("model")


def train_command(dataset: str | Path, output: str | Path, organ: str, label_value: int, views: list[str],
                  preset: str, python: str | None = None, extra: list[str] | None = None) -> list[str]:
    """``python -m PancreasRSTNLib train ...`` with the GUI's choices (python: Slicer's PythonSlicer)."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown schedule preset '{preset}'. Known: {', '.join(PRESETS)}.")
    if not views:
        raise ValueError("Choose at least one view to train.")
    command = [python or sys.executable, "-m", "PancreasRSTNLib", "train", "--data", str(dataset),
               "--out", str(output), "--organ", organ, "--label-value", str(int(label_value)),
               "--views", "".join(views), *PRESETS[preset]]
    return command + list(extra or [])


def read_loss_log(path: str | Path) -> dict[str, list[float]]:
    """Numeric columns of the trainer's CSV log, plus "row" (1, 2, ...) as a global x axis across views.

    Text columns (view, mode) are skipped; an incomplete last line (the trainer is writing) is ignored."""
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    numeric: dict[str, list[float]] = {"row": []}
    parsed = []
    for row in rows:
        values = {}
        for name, text in row.items():
            if name is None:
                continue
            try:
                values[name] = float(text)
            except (TypeError, ValueError):
                continue
        if "loss" in values:
            parsed.append(values)
    names = [n for n in (parsed[0] if parsed else {}) if all(n in p for p in parsed)]
    for i, values in enumerate(parsed, start=1):
        numeric["row"].append(float(i))
        for name in names:
            numeric.setdefault(name, []).append(values[name])
    return {k: v for k, v in numeric.items() if v and not all(math.isnan(x) for x in v)}


def update_loss_nodes(scene, columns: dict[str, list[float]], table=None, chart=None, x_name: str | None = None):
    """Create or refresh a table node and a plot chart of every loss column against the step column."""
    import vtk

    if not columns:
        return table, chart
    x_name = x_name or ("row" if "row" in columns else next(iter(columns)))
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", "PancreasRSTN training log")
    vtable = vtk.vtkTable()
    for name, values in columns.items():
        array = vtk.vtkDoubleArray()
        array.SetName(name)
        for v in values:
            array.InsertNextValue(v)
        vtable.AddColumn(array)
    table.SetAndObserveTable(vtable)
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "PancreasRSTN training loss")
        chart.SetTitle("Training loss")
        chart.SetXAxisTitle(x_name)
        chart.SetYAxisTitle("loss")
        for name in columns:
            if name == x_name or "loss" not in name.lower():
                continue
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName(x_name)
            series.SetYColumnName(name)
            series.SetPlotType(series.PlotTypeScatter)
            series.SetMarkerStyle(series.MarkerStyleNone)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return table, chart


class TrainingProcess:
    """The trainer in a separate process (Slicer's Python, so Slicer stays responsive and a crash cannot take it
    down). Its output is read on a thread; its CSV log gives the live loss curve; cancelling terminates it (the
    run can be resumed from the command line with the same output folder)."""

    def __init__(self, command: list[str], output: str | Path, env: dict | None = None) -> None:
        self.command = list(command)
        self.output = Path(output)
        self.env = env
        self.lines: list[str] = []
        self._process = None

    def start(self) -> TrainingProcess:
        import subprocess
        import threading

        self._process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            self.lines.append(line.rstrip())

    def poll(self) -> int | None:
        """None while it runs, else its exit code."""
        return None if self._process is None else self._process.poll()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def cancel(self) -> bool:
        if self.running:
            self._process.terminate()
            return True
        return False

    def last_line(self, width: int = 200) -> str:
        return self.lines[-1][-width:] if self.lines else ""

    def tail(self, n: int = 15) -> str:
        return "\n".join(self.lines[-n:])

    def loss_columns(self) -> dict[str, list[float]]:
        return read_loss_log(self.output / LOG_RELATIVE_PATH)

    @property
    def model_folder(self) -> Path:
        return self.output / MODEL_RELATIVE_PATH

    def refresh_chart(self, scene, nodes: tuple) -> tuple:
        """Update the loss table and chart from the log; (table, chart), created on the first call with data."""
        return update_loss_nodes(scene, self.loss_columns(), *nodes)


def start_training(dataset: str | Path, output: str | Path, organ: str, label_value: int, views: list[str],
                   preset: str, module_dir: str | Path, python: str | None = None) -> TrainingProcess:
    """Check the panel's choices (ValueError with the message to show) and start the trainer process, with the
    module's folder on its PYTHONPATH (the core ships there)."""
    import os

    if str(dataset) in ("", ".") or not Path(dataset).is_dir():
        raise ValueError("Choose the dataset folder first.")
    if str(output) in ("", "."):
        raise ValueError("Choose an output folder first.")
    command = train_command(dataset, output, organ, label_value, views, preset, python=python)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(module_dir), os.environ.get("PYTHONPATH", "")]))
    return TrainingProcess(command, output, env).start()
