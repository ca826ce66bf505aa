"""A cohort's table: one row per case, kept in ``<out>/.rows/`` the moment the case ends, merged into
``cohort.csv`` and ``cohort.json``; and the resume check.

Why the check: a re-run into the same ``-o`` with another model or other options reported every case "done
earlier" under the new model's name. Each row records the model (``model_id``: its weights) and the settings that
change a result; a resume whose finished rows differ is refused before any work (a new ``-o``, or
``--overwrite`` to redo every case).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import OutputExistsError
from ..io.outputs import json_text, write_text

ROWS_FOLDER = ".rows"
TABLE_COLUMNS = ("case", "status", "input", "output", "volume_ml", "fine_rounds", "stop_reason", "dsc_history",
                 "seconds", "device", "rank", "model", "model_id", "settings", "warnings", "error")


@dataclass
class CaseRow:
    case: str
    status: str  # "done" | "failed"
    input: str
    output: str = ""
    volume_ml: float | None = None
    fine_rounds: int | None = None
    stop_reason: str | None = None
    dsc_history: list[float] = field(default_factory=list)
    seconds: float | None = None
    device: str = ""
    rank: int = 0  # the torchrun process that ran it
    model: str = ""
    model_id: str = ""  # the package's weights (``model_package.package_id``)
    settings: dict = field(default_factory=dict)  # the options that change a result (``run_settings``)
    warnings: list[str] = field(default_factory=list)
    error: str = ""


def write_table(out: Path, rows: list[CaseRow], info: dict, name: str = "cohort") -> None:
    """``<name>.json`` (with ``info``) and ``<name>.csv``, each replaced atomically."""
    data = {"info": info, "cases": [asdict(r) for r in rows]}
    write_text(out / f"{name}.json", json_text(data))  # whole or not at all; per-process temporary names
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(TABLE_COLUMNS)
    for r in rows:
        w.writerow([csv_cell(c, getattr(r, c)) for c in TABLE_COLUMNS])
    write_text(out / f"{name}.csv", table.getvalue())


def csv_cell(column: str, value: str | float | list[str] | list[float] | None) -> str:
    if value is None:
        return ""
    if column == "warnings":
        return "; ".join(value)
    if column == "dsc_history":
        return " ".join(f"{v:.4f}" for v in value)
    if column == "settings":
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def save_row(out: Path, row: CaseRow) -> None:
    folder = out / ROWS_FOLDER
    folder.mkdir(exist_ok=True)
    write_text(folder / f"{row.case}.json", json_text(asdict(row)))


def read_row(out: Path, name: str) -> CaseRow | None:
    path = out / ROWS_FOLDER / f"{name}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return CaseRow(**{k: v for k, v in data.items() if k in CaseRow.__dataclass_fields__})
    except (ValueError, TypeError):
        return None


#: settings added to the rows after the first release, with the value every earlier row was made with
SETTINGS_BEFORE_RECORDED = {"previous_weight": 0.0}


def refuse_other_settings(out: Path, done: list[str], model_id: str, settings: dict) -> None:
    """Refuse, before any work, to resume a cohort whose finished cases were made with another model or other
    settings: their rows would report them as this run's. (Rows from before settings were recorded are compared
    by model name only.)"""
    differ = []
    for name in done:
        row = read_row(out, name)
        if row is None or row.status != "done":
            continue
        changed = ([] if row.model == settings["model"] else [f"model {row.model} -> {settings['model']}"])
        if row.settings:
            if row.model_id != model_id and not changed:
                changed.append(f"model weights {row.model_id} -> {model_id}")
            recorded = {**SETTINGS_BEFORE_RECORDED, **row.settings}
            changed += [f"{k} {recorded.get(k)} -> {v}" for k, v in settings.items()
                        if k != "model" and recorded.get(k) != v]
        if changed:
            differ.append(f"{name} ({', '.join(changed)})")
    if differ:
        fix = ("Write this run into a new -o folder, or pass --overwrite to redo every case with the new model and "
               "settings.")
        raise OutputExistsError(
            f"{len(differ)} finished case(s) in {out} were made with another model or other settings: "
            f"{'; '.join(differ[:5])}{' ...' if len(differ) > 5 else ''}. Resuming would mix two runs in one "
            f"table. {fix}", fix=fix)


def final_row(out: Path, name: str, source: Path, output: Path) -> CaseRow:
    """A case's row in the table: its saved row, marked 'done earlier' when an earlier run made it."""
    row = read_row(out, name)
    if row is None:
        if output.exists():  # made before rows were kept, or by hand
            return CaseRow(name, "done", str(source), output=str(output),
                           warnings=["the output existed before this run; no details were recorded"])
        return CaseRow(name, "failed", str(source), error="not run (interrupted?)")
    return row
