"""Summarise scripts/validate_real_model.py's scores: per recipe, mean +- std over held-out patients (pooled 2-D
DSC of the final round and of the best round), per fold, the volumes, the domain-shift panel and TotalSegmentator.

    python scripts/report_validation.py [--work runs/validation] [--json benchmarks/results/real_ct_validation.json]
    python scripts/report_validation.py --max-iter 2 --folds 0,1     # as the shipped model runs (2 fine rounds)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def summarise(work: Path, recipe: str, max_iter: int | None = None, only: set[int] | None = None) -> dict:
    """``max_iter``: score the round a run with that many fine rounds would end on (None: the last round)."""
    folds = [p for p in sorted((work / recipe).glob("fold*/scores.json"))
             if only is None or int(p.parent.name.removeprefix("fold")) in only]

    def end(rounds: list[float]) -> float:
        return rounds[-1] if max_iter is None else rounds[min(max_iter, len(rounds) - 1)]

    per_patient, per_fold, volumes, totalseg = {}, {}, {}, []
    for path in folds:
        s = json.loads(path.read_text())
        per_fold[s["fold"]] = [end(p["native"]) for p in s["slices"].values()]
        for patient, variants in s["slices"].items():
            per_patient[patient] = {v: (end(r), max(r)) for v, r in variants.items()
                                    if v not in ("slices", "stop_rule_runs")}
        for name, v in s.get("volumes", {}).items():
            volumes[name] = {k: end(r) for k, r in v.items() if k != "stop_rule_runs"}
        totalseg.append(end(s["totalseg"]))
    variants = sorted({v for p in per_patient.values() for v in p})

    def stats(values: list[float]) -> dict:
        return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
                "min": round(float(np.min(values)), 4), "n": len(values)}

    return {"folds": len(folds), "patients": len(per_patient), "max_iter": max_iter,
            "final_round": {v: stats([p[v][0] for p in per_patient.values()]) for v in variants},
            "best_round": {v: stats([p[v][1] for p in per_patient.values()]) for v in variants},
            "per_fold_mean": {k: round(float(np.mean(v)), 4) for k, v in sorted(per_fold.items())},
            "volumes_3d": volumes, "totalseg_per_fold_model": [round(t, 4) for t in totalseg]}


def emit(result: dict, path: Path | None) -> None:
    """Print a report, and keep it in ``path`` when asked (the committed results under benchmarks/results/)."""
    text = json.dumps(result, indent=1)
    print(text)
    if path:
        path.write_text(text + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "validation")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--max-iter", type=int, default=None, help="score the round a run of this many fine rounds "
                        "ends on (default: the last round of the validation's 10)")
    parser.add_argument("--folds", default=None, help="only these folds, e.g. 0,1 (default: every scored fold)")
    args = parser.parse_args()
    only = None if args.folds is None else {int(k) for k in args.folds.split(",")}
    out = {r.name: summarise(args.work, r.name, args.max_iter, only) for r in sorted(args.work.iterdir())
           if r.is_dir() and list(r.glob("fold*/scores.json"))}
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
