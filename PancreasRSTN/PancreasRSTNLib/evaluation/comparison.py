"""Several packages -- RSTN, RSTN + refiner, C2F, Cai et al. -- evaluated on the same cases, in one table and one
plot: DSC, JI (Jaccard), AVD, HD95 and time per case.

AVD is Cai et al.'s name for the average distance between the two surfaces, in mm; it is computed here as the
average symmetric surface distance (``assd`` in every report). Each package also gets its full evaluation report
in its own sub-folder (per-case metrics, rounds, plots), exactly as a single ``evaluate`` writes it.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.outputs import json_text, write_text
from .cases import EvalCase, EvalSettings, evaluate

#: (column, report metric, label, decimals, scale)
COLUMNS = (("DSC (%)", "dsc", "DSC", 2, 100.0), ("JI (%)", "jaccard", "JI", 2, 100.0),
           ("AVD (mm)", "assd", "AVD", 2, 1.0), ("HD95 (mm)", "hd95", "HD95", 1, 1.0),
           ("time (s)", "seconds", "time", 1, 1.0))


@dataclass
class Entry:
    """One package in the comparison: its label, method, and evaluation settings (models, refiner, spacing)."""

    label: str
    method: str
    models: dict
    settings: EvalSettings


def folder_name(label: str, taken: set[str]) -> str:
    """A file-system-safe, unique sub-folder for a package's own report."""
    base = re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_") or "model"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def compare(entries: Sequence[Entry], cases: Sequence[EvalCase], out: Path, *, info: dict | None = None,
            echo: Callable[[str], None] | None = None) -> dict:
    """Evaluate every entry on ``cases`` (each into OUT/<label>/) and write comparison.{json,csv,md,png}."""
    out = Path(out)
    rows, per_case, taken = [], {}, set()
    for entry in entries:
        sub = folder_name(entry.label, taken)
        if echo:
            echo(f"== {entry.label} ({entry.method}) -> {out / sub}")
        evaluate(entry.models, cases, out / sub, entry.settings, info=dict(info or {}, model=entry.label), echo=echo,
                 n_cases=len(cases))
        report = json.loads((out / sub / "evaluation.json").read_text())
        values = {key: [c["seconds"] if key == "seconds" else c["metrics"][key] for c in report["cases"]]
                  for _, key, *_ in COLUMNS}
        per_case[entry.label] = {"cases": [c["name"] for c in report["cases"]], **values}
        rows.append({"label": entry.label, "method": entry.method, "report": sub,
                     **{key: _mean_std(v) for key, v in values.items()}})
    result = {"info": info or {}, "metrics": {label: key for label, key, *_ in COLUMNS}, "rows": rows,
              "per_case": per_case}
    write_text(out / "comparison.json", json_text(result))  # strict JSON: no bare NaN
    _write_csv(rows, out / "comparison.csv")
    (out / "comparison.md").write_text(markdown_table(rows, len(cases)) + "\n")
    comparison_plot(per_case, out / "comparison.png")
    if echo:
        echo(markdown_table(rows, len(cases)))
    return result


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def _write_csv(rows: Sequence[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        fields = [(key, stat) for _, key, *_ in COLUMNS for stat in ("mean", "std")]
        w.writerow(["model", "method", *[f"{key}_{stat}" for key, stat in fields]])
        for r in rows:
            w.writerow([r["label"], r["method"], *[f"{r[key][stat]:.6f}" for key, stat in fields]])


def markdown_table(rows: Sequence[dict], n_cases: int) -> str:
    """mean +- std over the cases (std only with more than one case)."""
    head = "| model | method | " + " | ".join(c for c, *_ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for r in rows:
        cells = []
        for _, key, _, decimals, scale in COLUMNS:
            m, sd = r[key]["mean"] * scale, r[key]["std"] * scale
            cells.append(f"{m:.{decimals}f}" + (f" +- {sd:.{decimals}f}" if n_cases > 1 else ""))
        lines.append(f"| {r['label']} | {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_plot(per_case: dict[str, dict], path: Path) -> Path:
    """One panel per metric: a bar (mean) per package with its cases as dots."""
    from .plots import _pyplot, _save

    plt = _pyplot()
    labels = list(per_case)
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(3.0 * len(COLUMNS), 3.6))
    for ax, (column, key, _, _, scale) in zip(axes, COLUMNS, strict=True):
        for i, label in enumerate(labels):
            values = np.asarray(per_case[label][key], dtype=float) * scale
            finite = values[np.isfinite(values)]
            ax.bar(i, finite.mean() if finite.size else 0.0, color=f"C{i}", alpha=0.6)
            ax.scatter(np.full(finite.size, i), finite, color="k", s=12, zorder=3)
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        ax.set_title(column, fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, path)
