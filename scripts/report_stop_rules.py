"""Which round should a run keep? Candidate stop rules scored on the validation folds' held-out patients.

    python scripts/report_stop_rules.py [--work runs/validation] [--json benchmarks/results/stop_rule_validation.json]

Reads the per-run records that ``scripts/validate_real_model.py`` writes (``stop_rule_runs``: every round's
overlap with the truth, every pair of rounds' overlap, the fine rounds' majority vote). Each rule below picks a
round from what a run can see without the truth; the score is the per-patient pooled 2-D DSC (mean over patients)
and the 3-D DSC of the held-out NIH volumes.

- ``last``: the engine's output today (the last round: converged at thr 0.99, or the 10th fine round);
- ``cap k``: stop after at most k fine rounds (``--max-iter k``);
- ``medoid``: the fine round with the highest mean DSC to the other fine rounds;
- ``vote``: the voxels in at least half of the fine rounds;
- ``largest``: the largest fine round.
Also the "best round" an oracle would keep, and the drift: best minus chosen, mean over patients.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from report_validation import emit  # noqa: E402


def dsc(a: float, b: float) -> float:
    return 2 * a / b if b else 1.0


def choices(run: dict) -> dict[str, np.ndarray]:
    """(|chosen and truth|, |chosen| + |truth|) of every rule for one run."""
    truth = np.asarray(run["truth"], dtype=np.float64)
    pairs = np.asarray(run["pairs"], dtype=np.float64)
    n = len(truth)
    out = {"last": truth[-1]}
    out.update({f"cap {k}": truth[min(k, n - 1)] for k in range(1, 6)})
    if n < 3:  # zero or one fine round: every fine-round rule is that round
        out.update({k: truth[-1] for k in ("medoid", "vote", "largest")})
        return out
    sizes = np.diag(pairs)
    fine = range(1, n)
    agreement = [np.mean([dsc(pairs[i, j], sizes[i] + sizes[j]) for j in fine if j != i]) for i in fine]
    out["medoid"] = truth[1 + int(np.argmax(agreement))]
    out["vote"] = np.asarray(run["vote"], dtype=np.float64)
    out["largest"] = truth[1 + int(np.argmax(sizes[1:]))]
    return out


def per_round(runs: list[dict]) -> np.ndarray:
    """Pooled (intersection, sizes) per round; runs that stopped early carry their last round on."""
    n = max(len(r["truth"]) for r in runs)
    return sum(np.concatenate([t, np.repeat(t[-1:], n - len(t), axis=0)])
               for t in (np.asarray(r["truth"], dtype=np.float64) for r in runs))


def summarise(paths: list[Path]) -> dict:
    rules: dict[str, list[float]] = {}
    best: list[float] = []
    volumes: dict[str, dict[str, float]] = {}
    for path in paths:
        scores = json.loads(path.read_text())
        for patient in scores["slices"].values():
            totals: dict[str, np.ndarray] = {}
            for run in patient["stop_rule_runs"]:
                for name, pair in choices(run).items():
                    totals[name] = totals.get(name, 0) + pair
            for name, (a, b) in totals.items():
                rules.setdefault(name, []).append(dsc(a, b))
            best.append(max(dsc(a, b) for a, b in per_round(patient["stop_rule_runs"])))
        for name, volume in scores.get("volumes", {}).items():
            volumes[name] = {k: round(dsc(*v), 4) for k, v in choices(volume["stop_rule_runs"][0]).items()}
    table = {name: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4),
                    "drift_vs_best_round": round(float(np.mean(np.array(best) - np.array(v))), 4)}
             for name, v in rules.items()}
    return {"folds": [p.parent.name for p in paths], "patients": len(best),
            "best_round_mean": round(float(np.mean(best)), 4), "rules": table, "volumes_3d": volumes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "validation")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = {}
    for recipe in sorted(p for p in args.work.iterdir() if p.is_dir()):
        paths = [p for p in sorted(recipe.glob("fold*/scores.json"))
                 if all("stop_rule_runs" in v for v in json.loads(p.read_text())["slices"].values())]
        if paths:
            out[recipe.name] = summarise(paths)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
