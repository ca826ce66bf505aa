"""Evaluation the way the paper reports it: per-case DSC, Jaccard, precision, recall, volume error and HD95;
DSC at every round; the rounds needed to reach thr 0.90/0.95/0.98/0.99 (the convergence table); time; and
mean +- std / min / max over cases. Oracle mode crops by the ground truth (the upper bound).

Why one run per case: the engine runs with thr = 1 (the full trajectory up to ``max_iter``) and every
convergence threshold is read off that one trajectory, so the table costs no extra inference. Cases run exactly
as ``segment`` runs a user's CT: resampled to the model's spacing when theirs differs, every metric computed on
the case's own grid.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..devices import resolve_device
from ..engine.cai_inference import refine_round
from ..engine.inference import InferenceConfig
from ..engine.segmentation import GridMapping, GridRound, choose_engine, run_on_grid
from ..io.outputs import json_text, write_text
from ..models.clstm import SliceRefiner
from ..models.intensity import DEFAULT_WINDOW, HUWindow
from .metrics import METRICS, dice, segmentation_metrics, summary_stats

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
THRESHOLDS = (0.90, 0.95, 0.98, 0.99)


@dataclass
class EvalCase:
    """One case to evaluate: canonical HU volume, canonical truth mask, canonical spacing (mm)."""

    name: str
    hu: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class EvalSettings:
    """How every case is evaluated: the reported convergence threshold, the rounds, the views, the model's
    method, spacing and HU window (a package's), resampling, the device, and whether the oracle runs too."""

    thr: float = 0.99
    max_iter: int = 10
    views: Sequence[str] | None = None  # None: every view of the model
    device: str = "auto"
    oracle: bool = False
    method: str = "rstn"  # or "c2f" (the stage-wise baseline) or "cai" (Cai et al.'s CNN + refiner)
    spacing: Sequence[float] | None = None
    window: HUWindow = DEFAULT_WINDOW
    resample: bool = True
    refiner: SliceRefiner | None = None  # the package's (Bi)CLSTM refiner, applied after the stop round


@dataclass
class CaseResult:
    name: str
    metrics: dict[str, float]  # at the round where thr was reached (or the last round)
    coarse_dsc: float
    dsc_per_round: list[float]  # to the truth; index 0 = coarse
    inter_round: list[float]  # DSC(Z(r-1), Z(r)) for r = 1..
    rounds_to_thr: dict[str, int | None]  # fine rounds needed; None = not reached within max_iter
    dsc_at_thr: dict[str, float]
    rounds_used: int
    seconds: float  # wall time up to the stop round at the chosen thr
    seconds_total: float  # the whole trajectory
    oracle: dict[str, float] = field(default_factory=dict)
    refined: dict[str, float] = field(default_factory=dict)  # RSTN + refiner: the refinement of the stop round


def _stop_round(inter_round: Sequence[float], thr: float, last: int) -> tuple[int, bool]:
    """First fine round r whose DSC to round r-1 reaches thr; (last round, False) if none."""
    for r, d in enumerate(inter_round, start=1):
        if d >= thr:
            return r, True
    return last, False


def _trajectory(rounds: Iterable[GridRound], thr: float = 1.0
                ) -> tuple[list[np.ndarray], list[float], list[float], GridRound | None]:
    """Masks on the case's grid, inter-round DSCs and cumulative times of one run, and the round where the run
    would stop at ``thr`` (the first whose DSC to the previous reaches it, else the last)."""
    masks, inter, times = [], [], []
    stop = None
    t0 = time.perf_counter()
    for r in rounds:
        masks.append(np.asarray(r.canonical_mask, dtype=bool))
        if r.dsc_to_previous is not None:
            inter.append(float(r.dsc_to_previous))
        times.append(time.perf_counter() - t0)
        if stop is None or stop.dsc_to_previous is None or stop.dsc_to_previous < thr:
            stop = r
    return masks, inter, times, stop


def _c2f_rounds(models: dict, case: EvalCase, views: Sequence[str], s: EvalSettings) -> Iterable[GridRound]:
    """The C2F baseline's rounds, on the model's grid and mapped back like RSTN's."""
    from ..engine.c2f_inference import C2FSettings, run_c2f

    dev = str(resolve_device(s.device))
    mapping = GridMapping.for_input(case.hu.shape, case.spacing, s.spacing, resample=s.resample)
    settings = C2FSettings(views=views, thr=1.0, max_iter=s.max_iter, device=dev, window=s.window)
    for r in run_c2f(models, mapping.to_model(case.hu), settings):
        yield GridRound(r.as_round_result(dev), mapping)


def _engine_rounds(models: dict, case: EvalCase, config: InferenceConfig, s: EvalSettings,
                 progress: Callable[[float, str], None] | None, oracle: np.ndarray | None = None
                 ) -> Iterable[GridRound]:
    """RSTN's (or Cai et al.'s) rounds on the case, as ``segment`` runs them (resampled to the model's spacing when
    needed); ``oracle``: crop by this mask (the truth) instead of the previous round's (RSTN only)."""
    mapping = GridMapping.for_input(case.hu.shape, case.spacing, s.spacing, resample=s.resample)
    engine = choose_engine(s.method, models, s.refiner, config, s.device, s.window, refine_last=False)
    return run_on_grid(engine, case.hu, mapping, progress=progress, oracle_mask=oracle)


def _refined(stop: GridRound, refiner: SliceRefiner, truth: np.ndarray, spacing: Sequence[float]) -> dict:
    """The package's refinement of the stop round, as ``segment`` applies it: its metrics and seconds."""
    t0 = time.perf_counter()
    refined = GridRound(refine_round(stop.result, refiner, InferenceConfig()), stop.mapping, stop.threshold)
    mask = np.asarray(refined.canonical_mask, dtype=bool)
    seconds = time.perf_counter() - t0
    return {"from_round": stop.index, "seconds": round(seconds, 3),
            "dsc_before": round(dice(stop.canonical_mask, truth, empty=0.0), 6),
            **{k: float(v) for k, v in segmentation_metrics(mask, truth, spacing=spacing).items()}}


def _convergence(inter: Sequence[float], dsc_rounds: Sequence[float]) -> tuple[dict, dict]:
    """(rounds needed, DSC at that round) for every threshold of the convergence table."""
    last = len(dsc_rounds) - 1
    rounds_to_thr, dsc_at_thr = {}, {}
    for t in THRESHOLDS:
        r, reached = _stop_round(inter, t, last)
        rounds_to_thr[f"{t:.2f}"] = r if reached else None
        dsc_at_thr[f"{t:.2f}"] = dsc_rounds[r]
    return rounds_to_thr, dsc_at_thr


def _oracle(models: dict, case: EvalCase, config: InferenceConfig, s: EvalSettings,
            progress: Callable[[float, str], None] | None) -> dict:
    """The upper bound: fine rounds crop by the ground truth, stopping at the chosen thr."""
    truth = np.asarray(case.truth, dtype=bool)
    rounds = _engine_rounds(models, case, replace(config, thr=s.thr), s, progress, oracle=truth)
    masks, _, times, _ = _trajectory(rounds)
    metrics = segmentation_metrics(masks[-1], truth, spacing=case.spacing)
    return {"dsc": float(metrics["dsc"]), "rounds": len(masks) - 1,
            "dsc_per_round": [round(dice(m, truth, empty=0.0), 6) for m in masks], "seconds": round(times[-1], 3)}


def evaluate_case(models: dict, case: EvalCase, settings: EvalSettings | None = None, *,
                  progress: Callable[[float, str], None] | None = None, **overrides: object) -> CaseResult:
    """Run RSTN (or the C2F baseline) on one case, and the ground-truth-cropped oracle when asked, and compute
    every figure. ``overrides`` replace fields of ``settings`` (e.g. ``max_iter=2``)."""
    s = replace(settings or EvalSettings(), **overrides)
    truth = np.asarray(case.truth, dtype=bool)
    views = tuple(s.views or models)
    config = InferenceConfig(thr=1.0, max_iter=s.max_iter, views=views)  # the whole trajectory
    if s.method != "rstn" and s.oracle:
        from ..errors import RSTNError

        raise RSTNError(f"Oracle mode is defined for RSTN models only; drop --oracle for a {s.method.upper()} model.")
    if s.method == "c2f":
        rounds = _c2f_rounds(models, case, views, s)
    else:
        rounds = _engine_rounds(models, case, config, s, progress)
    masks, inter, times, stop_round = _trajectory(rounds, s.thr)
    dsc_rounds = [round(dice(m, truth, empty=0.0), 6) for m in masks]
    stop, _ = _stop_round(inter, s.thr, len(masks) - 1)
    rounds_to_thr, dsc_at_thr = _convergence(inter, dsc_rounds)
    metrics = segmentation_metrics(masks[stop], truth, spacing=case.spacing)
    refined = {}
    if s.refiner is not None and s.method == "rstn":  # (Cai et al.'s refinement is their last round already)
        refined = _refined(stop_round, s.refiner, truth, case.spacing)
        metrics = {k: refined[k] for k in metrics}
    result = CaseResult(
        name=case.name, metrics={k: float(v) for k, v in metrics.items()}, coarse_dsc=dsc_rounds[0],
        dsc_per_round=dsc_rounds, inter_round=[round(v, 6) for v in inter], rounds_to_thr=rounds_to_thr,
        dsc_at_thr=dsc_at_thr, rounds_used=stop, seconds=round(times[stop] + refined.get("seconds", 0.0), 3),
        seconds_total=round(times[-1], 3), refined=refined,
    )
    if s.oracle:
        result.oracle = _oracle(models, case, config, s, progress)
    return result


def summarize(results: Sequence[CaseResult], max_iter: int) -> dict:
    """Mean +- std, min, max (and median) of every figure over the cases, as in the paper's tables."""
    summary: dict = {m: summary_stats([r.metrics[m] for r in results]) for m in METRICS}
    summary["coarse_dsc"] = summary_stats([r.coarse_dsc for r in results])
    summary["seconds"] = summary_stats([r.seconds for r in results])
    summary["rounds_used"] = summary_stats([r.rounds_used for r in results])
    conv = {}
    for t in THRESHOLDS:
        key = f"{t:.2f}"
        reached = [r.rounds_to_thr[key] for r in results if r.rounds_to_thr[key] is not None]
        conv[key] = {"rounds": summary_stats(reached), "reached": len(reached), "cases": len(results),
                     "dsc": summary_stats([r.dsc_at_thr[key] for r in results])}
    summary["convergence"] = conv
    n_rounds = max(len(r.inter_round) for r in results) if results else 0
    summary["mean_inter_round_dsc"] = [
        summary_stats([r.inter_round[k] if k < len(r.inter_round) else 1.0 for r in results])["mean"]
        for k in range(n_rounds)
    ]
    if any(r.oracle for r in results):
        summary["oracle_dsc"] = summary_stats([r.oracle["dsc"] for r in results if r.oracle])
    summary["max_iter"] = max_iter
    return summary


def write_report(results: Sequence[CaseResult], summary: dict, out: Path, info: dict) -> list[Path]:
    """evaluation.json, cases.csv, rounds.csv and the PNG plots."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    report = {"info": info, "summary": summary, "cases": [asdict(r) for r in results]}
    files.append(write_text(out / "evaluation.json", json_text(report)))  # strict JSON: no bare NaN
    with open(out / "cases.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", *METRICS, "coarse_dsc", "rounds_used", "seconds",
                    *[f"rounds_to_{t:.2f}" for t in THRESHOLDS], "oracle_dsc"])
        for r in results:
            w.writerow([r.name, *[f"{r.metrics[m]:.6f}" for m in METRICS], f"{r.coarse_dsc:.6f}", r.rounds_used,
                        f"{r.seconds:.3f}", *["" if r.rounds_to_thr[f"{t:.2f}"] is None else r.rounds_to_thr[f"{t:.2f}"]
                                              for t in THRESHOLDS], f"{r.oracle['dsc']:.6f}" if r.oracle else ""])
    files.append(out / "cases.csv")
    with open(out / "rounds.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "round", "dsc_to_truth", "dsc_to_previous"])
        for r in results:
            for k, d in enumerate(r.dsc_per_round):
                w.writerow([r.name, k, f"{d:.6f}", "" if k == 0 else f"{r.inter_round[k - 1]:.6f}"])
    files.append(out / "rounds.csv")
    from .plots import dsc_boxplot, round_curves

    series = {"coarse": [r.coarse_dsc for r in results], "RSTN": [r.metrics["dsc"] for r in results]}
    if any(r.oracle for r in results):
        series["oracle"] = [r.oracle["dsc"] for r in results if r.oracle]
    files.append(dsc_boxplot(series, out / "dsc_boxplot.png", title=f"DSC over {len(results)} cases"))
    files.append(round_curves({"inter-round": [r.inter_round for r in results]}, out / "inter_round_dsc.png",
                              "DSC(Z(r-1), Z(r))", "inter-round DSC against round"))
    files.append(round_curves({"to truth": [r.dsc_per_round for r in results]}, out / "dsc_per_round.png",
                              "DSC to the ground truth", "DSC against round (0 = coarse)"))
    return files


def evaluate(models: dict, cases: Iterable[EvalCase], out: Path, settings: EvalSettings | None = None, *,
             info: dict | None = None, echo: Callable[[str], None] | None = None, n_cases: int | None = None,
             progress: Callable[[float, str], None] | None = None, **overrides: object) -> dict:
    """Evaluate every case, print one line each (``echo``), and write the report; returns the summary.

    ``overrides`` replace fields of ``settings`` (e.g. ``thr=0.95``). ``progress`` gets (fraction of all cases,
    stage) while a case runs, when ``n_cases`` is known."""
    s = replace(settings or EvalSettings(), **overrides)
    results = []
    for i, case in enumerate(cases):
        case_progress = None
        if progress is not None and n_cases:
            def case_progress(fraction: float, stage: str, _i: int = i, _name: str = case.name) -> None:
                progress((_i + fraction) / n_cases, f"case {_i + 1}/{n_cases} {_name}: {stage}")

        r = evaluate_case(models, case, s, progress=case_progress)
        results.append(r)
        if echo:
            echo(_case_line(r, f"[{i + 1}/{n_cases}] " if n_cases else ""))
    if not results:
        from ..errors import DatasetError

        raise DatasetError("Nothing to evaluate: the dataset (or fold) has no usable case.")
    summary = summarize(results, s.max_iter)
    write_report(results, summary, Path(out), dict(info or {}, thr=s.thr, max_iter=s.max_iter, oracle=s.oracle,
                                                   method=s.method))
    if echo:
        d = summary["dsc"]
        echo(f"DSC {100 * d['mean']:.2f} +- {100 * d['std']:.2f} % (min {100 * d['min']:.2f}, max "
             f"{100 * d['max']:.2f}) over {d['n']} cases; report in {out}/")
    return summary


def _case_line(r: CaseResult, count: str) -> str:
    extra = f", oracle {r.oracle['dsc']:.4f}" if r.oracle else ""
    if r.refined:
        extra += f", refined from round {r.refined['from_round']} (DSC {r.refined['dsc_before']:.4f} before)"
    return (f"{count}{r.name}: DSC {r.metrics['dsc']:.4f} (coarse {r.coarse_dsc:.4f}){extra}, rounds "
            f"{r.rounds_used}, HD95 {r.metrics['hd95']:.1f} mm, ASSD {r.metrics['assd']:.2f} mm, {r.seconds:.1f} s")
