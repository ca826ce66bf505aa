"""Scoring existing predictions (``evaluate --predictions DIR``) against a dataset's labels, without a model.

Every case of the dataset is scored or accounted for: a missing or unreadable prediction, one on another grid
than its label, a label without the organ's value and an image without a label are bad cases
(``bad_cases.BadCases``: the run stops, or with ``skip`` they are left out with a warning and listed). A label
value that no ground truth holds at all is always an error: every DSC would be 0.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from ..errors import DatasetError
from ..io.geometry import grid_differences
from ..io.outputs import VOLUME_SUFFIXES, json_text, write_text
from .bad_cases import BadCases, unlabelled_images
from .metrics import METRICS, segmentation_metrics, summary_stats

if TYPE_CHECKING:
    from ..training.datasets import CaseRef, Dataset


def find_prediction(folder: Path, case: str) -> Path | None:
    """The prediction file of a case: ``<case>`` with a volume extension (the naming rule of ``segment``'s cohort
    mode), or nnU-Net's ``<case>_0000`` stem."""
    for stem in (case, f"{case}_0000"):
        for suffix in VOLUME_SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def _read_pair(case: CaseRef, predictions: Path) -> tuple[sitk.Image, sitk.Image, Path]:
    """(label, prediction, its file) of a case, on one grid; raises DatasetError saying why they cannot be
    scored."""
    path = find_prediction(Path(predictions), case.name)
    if path is None:
        raise DatasetError(f"no prediction {case.name}.nii.gz (or .nii, .nrrd, .mha) in {predictions}")
    try:
        label, prediction = sitk.ReadImage(str(case.label)), sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DatasetError(f"cannot read {path.name} or its label: {str(exc).strip().splitlines()[-1]}") from exc
    problems = grid_differences(prediction, label, "the label's")
    if problems:
        raise DatasetError(f"the prediction {path.name} is not on its label's grid ({'; '.join(problems)})")
    return label, prediction, path


def evaluate_predictions(dataset: Dataset, predictions: Path, out: Path, prediction_label: int | None = None,
                         echo: Callable[[str], None] | None = None, info: dict | None = None,
                         on_bad_case: str = "fail") -> dict:
    """Score the prediction files in ``predictions`` against the dataset's labels and write the report.

    A prediction must lie on its label's grid; its organ is ``prediction_label`` (default: every non-zero voxel)."""

    bad = BadCases(on_bad_case)
    for name, image in unlabelled_images(dataset):
        bad.add(name, f"the image {image.name} has no label file")
    rows, present = [], set()
    for case in dataset.cases:
        try:
            label, pred_image, path = _read_pair(case, predictions)
        except DatasetError as exc:
            bad.add(case.name, str(exc).removeprefix(f"Case {case.name}: "))
            continue
        values = sitk.GetArrayViewFromImage(label)
        truth = np.isin(values, dataset.label_values)
        present.update(np.unique(values)[:32].tolist())
        if not truth.any():
            bad.add(case.name, f"its label has no voxel of value {list(dataset.label_values)} ({dataset.organ})")
            continue
        pred = sitk.GetArrayViewFromImage(pred_image)
        pred = pred == prediction_label if prediction_label is not None else pred != 0
        metrics = segmentation_metrics(pred, truth, spacing=tuple(label.GetSpacing())[::-1])
        rows.append({"case": case.name, "prediction": path.name,
                     **{k: float(v) for k, v in metrics.items()}})
        if echo:
            echo(f"[{len(rows) + len(bad.cases)}/{len(dataset.cases)}] {case.name}: DSC {metrics['dsc']:.4f}, "
                 f"HD95 {metrics['hd95']:.1f} mm, ASSD {metrics['assd']:.2f} mm")
    if not rows:
        absent = present and not any(v in present for v in dataset.label_values)
        raise DatasetError(
            f"The label value(s) {list(dataset.label_values)} ({dataset.organ}) appear in no ground truth (values "
            f"present: {sorted(present)}): every DSC would be 0. Pick the organ's value with --label-value or "
            "--organ." if absent else
            f"No prediction in {predictions} could be scored ({len(bad.cases)} bad cases: "
            f"{'; '.join(c['case'] + ': ' + c['reason'] for c in bad.cases[:3])}). Name them <case>.nii.gz, as "
            "`segment DIR -o OUT` does, on their labels' grids.")
    summary = {m: summary_stats([r[m] for r in rows]) for m in METRICS}
    summary["missing"] = len(bad.cases)
    _write(out, rows, summary, bad.cases, dict(info or {}, predictions=str(predictions), scored=len(rows),
                                               on_bad_case=on_bad_case))
    if echo:
        s = summary["dsc"]
        echo(f"DSC {100 * s['mean']:.2f} +- {100 * s['std']:.2f} % over {s['n']} cases ({len(bad.cases)} left out); "
             f"report in {out}/")
    return summary


def _write(out: Path, rows: list[dict], summary: dict, missing: list[dict], info: dict) -> None:
    """evaluation.json (strict JSON), cases.csv and the DSC box plot."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "evaluation.json", json_text({"info": info, "summary": summary, "cases": rows,
                                                   "missing": missing}))
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["case", "prediction", *METRICS])
    for r in rows:
        w.writerow([r["case"], r["prediction"], *[f"{r[m]:.6f}" for m in METRICS]])
    write_text(out / "cases.csv", table.getvalue())
    from .plots import dsc_boxplot

    dsc_boxplot({"predictions": [r["dsc"] for r in rows]}, out / "dsc_boxplot.png",
                title=f"DSC over {len(rows)} cases")
