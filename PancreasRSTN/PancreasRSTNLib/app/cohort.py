"""Segment a whole cohort: many CTs, one output per case, a table of every case, resumable, over many GPUs.

Inputs (``collect_inputs``): a folder (volume files at its top and DICOM series folders below it), a glob, a CSV
with an ``input`` column (and optionally ``name``), or an nnU-Net v2 / MSD dataset (its ``imagesTs/``, else its
training images).

Naming rule: case ``<name>`` is written to ``<out>/<name><suffix>`` (default ``.nii.gz``). ``<name>`` is the file
name without its volume extension and without nnU-Net's channel suffix ``_0000``; for a DICOM folder it is the
folder's path below the cohort folder with ``/`` replaced by ``__``; a CSV may give it. Two inputs with one name
are refused before anything runs.

A DICOM folder holding several series: the series with the most files (slices) is read, on a tie the smallest
series UID (``io.dicom``); the others are listed in that case's warnings.

The table (``cohort.csv`` and ``cohort.json``, ``cohort_table``) has per case: status, output, volume in ml, fine
rounds, stop reason, inter-round DSC history, seconds, device, model, model id, settings, warnings and the error.
Each case's row is also kept as ``<out>/.rows/<name>.json`` the moment the case ends, so an interrupted run loses
nothing. A failing case is recorded and skipped. Re-running skips cases whose output exists (``overwrite`` redoes
them) and retries failed ones; finished cases made with another model or other settings are refused. Under
torchrun, rank r takes every world-th unfinished case with its own GPU, and rank 0 merges every row
into the table at the end. While a case runs, the next one is read and canonicalised on a worker thread.
"""

from __future__ import annotations

import csv
import glob
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..devices import pick_device
from ..distributed import DistInfo, barrier
from ..errors import InputImageError, RSTNError
from ..io.dicom import is_dicom_file, series_note
from ..io.outputs import VOLUME_SUFFIXES, OutputPlan, volume_suffix
from ..organs import get_organ
from .cohort_table import (
    TABLE_COLUMNS as TABLE_COLUMNS,  # re-exported: tests and scripts read the table by it
)
from .cohort_table import CaseRow, final_row, refuse_other_settings, save_row, write_table
from .final_round import fine_rounds, refuse_empty

if TYPE_CHECKING:  # torch-heavy: imported by the functions that run a case
    from ..engine.config import RunSettings
    from ..io.model_package import ModelPackage
    from ..progress import CohortProgress

@dataclass
class CohortCase:
    name: str
    input: Path
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- inputs
def case_name(path: Path, root: Path | None = None) -> str:
    """The naming rule (see the module docstring)."""
    suffix = volume_suffix(path)
    if suffix is not None and path.is_file():
        stem = path.name[: -len(suffix)]
        return stem[: -len("_0000")] if stem.endswith("_0000") else stem
    relative = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
    return "__".join(relative.parts)


def _has_dicom(folder: Path) -> bool:
    return any(is_dicom_file(f) for f in folder.iterdir())


def _dicom_folders(root: Path) -> list[Path]:
    """The folders below ``root`` that hold DICOM files themselves (each one case)."""
    return sorted(d for d in root.rglob("*") if d.is_dir() and _has_dicom(d))


def is_cohort_input(text: str) -> bool:
    """A CSV, a glob, a dataset, or a folder holding volume files or DICOM series folders. A folder with DICOM
    files at its top is one series (a single case); a folder with neither is left to the single-case reader,
    whose error says what it expected."""
    path = Path(text).expanduser()
    if path.is_file():
        return path.suffix.lower() == ".csv"
    if path.is_dir():
        if (path / "dataset.json").is_file():
            return True
        if _has_dicom(path):
            return False
        return any(volume_suffix(p) is not None and p.is_file() for p in path.iterdir()) or \
            any(d.is_dir() and _has_dicom(d) for d in path.rglob("*"))
    return any(ch in text for ch in "*?[")


def _from_folder(root: Path) -> list[CohortCase]:
    if (root / "dataset.json").is_file():
        from ..training.datasets import open_dataset

        dataset = open_dataset(root)
        if dataset.test_images:
            return [CohortCase(name, path) for name, path in dataset.test_images]
        return [CohortCase(c.name, c.image) for c in dataset.cases]
    cases = [CohortCase(case_name(p), p) for p in sorted(root.iterdir())
             if p.is_file() and volume_suffix(p) is not None and not p.name.startswith(".")]
    cases += [CohortCase(case_name(d, root), d) for d in _dicom_folders(root)]
    return cases


def _from_csv(path: Path) -> list[CohortCase]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "input" not in rows[0]:
        raise InputImageError(f"{path} needs a column 'input' (a file or DICOM folder per row; optionally 'name').")
    out = []
    for row in rows:
        source = Path(row["input"]).expanduser()
        if not source.is_absolute():
            source = path.parent / source
        out.append(CohortCase(row.get("name") or case_name(source), source))
    return out


def collect_inputs(spec: str | Path) -> list[CohortCase]:
    """The cases of a folder, a glob, a CSV or a dataset, with unique names; DICOM folders with several series get
    a warning naming them. Raises before any work when an input is missing or two share a name."""
    from ..io.volume_io import dicom_series

    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        cases = _from_csv(path)
    elif path.is_dir():
        cases = _from_folder(path)
    elif any(ch in text for ch in "*?["):
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
        cases = [CohortCase(case_name(m), m) for m in matches if (m.is_file() and volume_suffix(m)) or
                 (m.is_dir() and _has_dicom(m))]
    else:
        raise InputImageError(f"Cohort input not found: {text}. Give a folder, a glob (quoted, e.g. 'cts/*.nii.gz') "
                              "or a CSV with an 'input' column.")
    if not cases:
        raise InputImageError(f"No CT found in {text}: expected {', '.join(VOLUME_SUFFIXES)} files or DICOM series "
                              "folders.")
    names: dict[str, Path] = {}
    for case in cases:
        if case.name in names:
            raise InputImageError(f"Two inputs would write the same output '{case.name}': {names[case.name]} and "
                                  f"{case.input}. Rename one, or list them in a CSV with a 'name' column.")
        names[case.name] = case.input
        if not case.input.exists():
            raise InputImageError(f"Case {case.name}: input not found: {case.input}.")
        if case.input.is_dir() and (note := series_note(dicom_series(case.input))):
            case.warnings.append(note)
    return cases


# ---------------------------------------------------------------------------------------------- the run
CASE_ERRORS = (RSTNError, RuntimeError, OSError, ValueError, MemoryError)  # a case's failure, not the cohort's


def _load(case: CohortCase, allow_non_ct: bool, allow_missing_slices: bool = False):
    """Read, check and canonicalise one case (on the prefetch thread); returns (CheckedCT, the reader's warnings)."""
    from ..engine.segmentation import prepare_ct
    from ..io.volume_io import read_input

    image, warnings = read_input(case.input, allow_missing_slices)
    return prepare_ct(image, allow_non_ct), warnings


@dataclass(frozen=True)
class CohortRunOptions:
    """How every case of a cohort is run: the model and the run's settings (``RunSettings``), the output format,
    and whether finished cases are redone, the next case is read ahead and missing DICOM slices are allowed."""

    package: ModelPackage
    run: RunSettings
    overwrite: bool = False
    suffix: str = ".nii.gz"  # the output format: one of VOLUME_SUFFIXES
    prefetch: bool = True
    allow_missing_slices: bool = False

    def settings(self) -> dict:
        """The choices that change a case's result, as each row records them (the model is ``model_id``)."""
        c = self.run.config
        used = c.with_package_defaults(self.package)
        return {"model": str(self.package.metadata.get("name")), "thr": c.thr, "max_iter": used.max_iter,
                "coarse_weight": used.coarse_weight, "previous_weight": used.previous_weight,
                "prob_threshold": c.prob_threshold, "margin": c.margin, "views": "".join(c.views),
                "postprocess": c.postprocess, "precision": c.precision, "crop_bucket": c.crop_bucket,
                "coarse_downsample": c.coarse_downsample, "resample": self.run.resample}


@dataclass
class CohortResult:
    rows: list[CaseRow]  # every case of the cohort (rank 0) or this rank's cases (other ranks)
    failed: int
    seconds: float


class _Prefetcher:
    """Reads case i+1 on a worker thread while case i runs; without it, reads in the calling thread."""

    def __init__(self, cases: list[CohortCase], options: CohortRunOptions) -> None:
        self.cases = cases
        self.flags = (options.run.allow_non_ct, options.allow_missing_slices)
        self.executor = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="cohort-read") if options.prefetch
                         else None)
        self.pending: dict[int, Future] = {}

    def get(self, i: int):
        """Case i's canonical volume and the reader's warnings (raises what reading it raised); starts reading
        case i+1."""
        future = self.pending.pop(i, None)
        if self.executor is not None and i + 1 < len(self.cases):
            self.pending[i + 1] = self.executor.submit(_load, self.cases[i + 1], *self.flags)
        return future.result() if future is not None else _load(self.cases[i], *self.flags)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def run_cohort(cases: list[CohortCase], out: Path, options: CohortRunOptions, dist_info: DistInfo | None = None,
               progress: CohortProgress | None = None, echo: Callable[[str], None] | None = None) -> CohortResult:
    """Segment this rank's share of the unfinished cases, one output and one row each; rank 0 then writes the
    table of every case. ``progress`` (optional) has ``case_update(fraction, stage)`` and ``case_done()``."""
    from ..devices import device_description
    from ..engine.inference import prepare_for_inference
    from ..io.model_package import package_id

    dist_info = dist_info or DistInfo()
    suffix = options.suffix
    if volume_suffix(Path(f"x{suffix}")) is None:
        raise InputImageError(f"Output format {suffix!r} is not one of {', '.join(VOLUME_SUFFIXES)}.")
    out.mkdir(parents=True, exist_ok=True)
    outputs = {c.name: out / f"{c.name}{suffix}" for c in cases}
    todo = [c for c in cases if options.overwrite or not outputs[c.name].exists()]
    refuse_other_settings(out, [c.name for c in cases if c not in todo], package_id(options.package.metadata),
                          options.settings())
    mine = todo[dist_info.rank::dist_info.world]
    dev = pick_device(options.run.device, dist_info)
    # once per rank: on this rank's device, BatchNorm folded, so that no case copies the model again
    models = {v: prepare_for_inference(m, dev) for v, m in options.package.models.items()}
    package = replace(options.package, models=models)
    # what each case of this rank runs with
    rank_options = replace(options, package=package, run=replace(options.run, device=str(dev)))
    started = time.perf_counter()
    rows: list[CaseRow] = []
    reader = _Prefetcher(mine, options)
    try:
        for i, case in enumerate(mine):
            row = _segment_case(case, i, reader, outputs[case.name], rank_options, progress)
            row.device, row.rank = row.device or device_description(dev), dist_info.rank
            save_row(out, row)
            rows.append(row)
            if echo is not None:
                echo(_row_line(row, i + 1, len(mine)))
            if progress is not None:
                progress.case_done()
    finally:
        reader.close()
    barrier(dist_info)
    if not dist_info.main:
        return CohortResult(rows, sum(r.status == "failed" for r in rows), round(time.perf_counter() - started, 2))
    table = [final_row(out, c.name, c.input, outputs[c.name]) for c in cases]
    failed = sum(1 for r in table if r.status == "failed")
    info = {"model": package.metadata.get("name"), "model_id": package_id(package.metadata),
            "settings": options.settings(), "cases": len(cases), "failed": failed,
            "run_now": len(todo), "skipped_done_earlier": len(cases) - len(todo),
            "processes": dist_info.world, "seconds": round(time.perf_counter() - started, 2),
            "naming": f"<out>/<case>{suffix}"}
    write_table(out, table, info)
    return CohortResult(table, failed, info["seconds"])


def _segment_case(case: CohortCase, i: int, reader: _Prefetcher, target: Path, options: CohortRunOptions,
                  progress: CohortProgress | None) -> CaseRow:
    """One case, start to end, with this rank's ``options`` (its device, the model on it); any failure of the
    case becomes its row's error."""
    from ..engine.segmentation import segment_canonical
    from ..io.model_package import package_id

    package = options.package
    t0 = time.perf_counter()
    row = CaseRow(case.name, "failed", str(case.input), warnings=list(case.warnings),
                  model=str(package.metadata.get("name")), model_id=package_id(package.metadata),
                  settings=options.settings())
    try:
        (hu, geometry), read_warnings = reader.get(i)
        row.warnings += [w for w in read_warnings if w not in row.warnings]
        history, last = [], None
        for r in segment_canonical(hu, geometry.canonical_spacing, package, options.run, geometry=geometry,
                                   progress=None if progress is None else progress.case_update):
            if r.dsc_to_previous is not None:
                history.append(round(float(r.dsc_to_previous), 5))
            last = r
        del hu
        refuse_empty(last, package, f"case {case.name} ({case.input})")
        plan = OutputPlan(overwrite=True)
        plan.file(target, f"Case {case.name}'s output")
        with plan:  # published whole, or not at all
            plan.write(target, last.mask_image(get_organ(package.organ).label_value))
        row.status, row.output, row.device = "done", str(target), last.device
        row.volume_ml, row.fine_rounds, row.stop_reason = round(last.volume_ml, 3), fine_rounds(last), last.stop_reason
        row.dsc_history = history
    except CASE_ERRORS as exc:
        text = str(exc).strip()
        row.error = text.splitlines()[0] if text else type(exc).__name__
        if not isinstance(exc, RSTNError):
            row.error = f"{type(exc).__name__}: {row.error}"
    row.seconds = round(time.perf_counter() - t0, 2)
    return row


def _row_line(row: CaseRow, k: int, n: int) -> str:
    if row.status == "failed":
        return f"[{k}/{n}] {row.case}: FAILED: {row.error}"
    return (f"[{k}/{n}] {row.case}: {row.volume_ml:.1f} ml, {row.fine_rounds} fine round(s) ({row.stop_reason}), "
            f"{row.seconds:.1f} s" + (f"; {'; '.join(row.warnings)}" if row.warnings else ""))
