"""Inference-time levers of a recipe's fold models, scored on their held-out NIH patients (no training).

    python scripts/validate_inference_levers.py --recipe new_floor_prior --coarse-weights 0,0.2,0.4 \
        [--prob-thresholds 0.5] [--margins 20] [--postprocess on,off] [--previous-weights 0,0.3] \
        [--folds 0,1,2,3,4] \
        [--json benchmarks/results/inference_levers.json]

For every held-out patient of every fold and every setting: the pooled 2-D DSC of each round (thr 1.0 unless
``--thr``, so that no run stops early, up to ``--rounds`` fine rounds), over its labelled JPEG slices as
``validate_real_model.py`` scores them (native slices only). A run with at most k fine rounds ends on round k, so
one pass scores every cap.

- ``coarse_weight`` w: each fine round's probability is (1 - w) * the fine nets' + w * the coarse round's
  (``InferenceConfig.coarse_weight``): the coarse localisation keeps a say, so the fine rounds cannot drift away;
- ``prob_threshold``: the probability at which a voxel is the organ, in every round;
- ``margin``: the pixels added around the previous round's box to make the fine crop;
- ``postprocess``: keep only the largest connected component (off: keep every component);
- ``previous_weight`` w: each fine round after the first is (1 - w) * its own probability + w * the previous
  round's (``InferenceConfig.previous_weight``): the rounds settle instead of swinging.
The setting is chosen on these validation folds only; the hidden other-hospital CTs are never looked at. Data: Roth
HR, Farag A, Turkbey EB, Lu L, Liu J, Summers RM. Data From Pancreas-CT. The Cancer Imaging Archive, 2016 (CC BY
4.0).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "PancreasRSTN"))
sys.path.insert(0, str(ROOT / "scripts"))

from validate_real_model import Data, held_out_runs, overlap, pooled, score_fold_models  # noqa: E402

from PancreasRSTNLib.engine.inference import InferenceConfig  # noqa: E402
from PancreasRSTNLib.engine.segmentation import GridMapping, build_engine, run_on_grid  # noqa: E402

#: one setting: (coarse_weight, prob_threshold, margin, postprocess, previous_weight, thr)
Setting = tuple[float, float, int, bool, float, float]
DEFAULT_MARGIN = InferenceConfig().margin


def setting_name(coarse_weight: float, prob_threshold: float, margin: int = DEFAULT_MARGIN,
                 postprocess: bool = True, previous_weight: float = 0.0, thr: float = 1.0) -> str:
    """The setting's name in the results (the defaults' names are those of earlier results, so they pool)."""
    return (f"coarse_weight={coarse_weight:g} prob_threshold={prob_threshold:g}"
            + (f" margin={margin}" if margin != DEFAULT_MARGIN else "") + ("" if postprocess else " postprocess=off")
            + (f" previous_weight={previous_weight:g}" if previous_weight else "")
            + (f" thr={thr:g}" if thr != 1.0 else ""))


def score_fold(package, data: Data, floor_hu: float | None, held_out: set[str], settings: list[Setting],
               rounds: int) -> dict:
    """Per patient and setting: pooled DSC of every round (0 = coarse)."""
    engines = {s: build_engine(package, InferenceConfig(views=tuple(package.views), max_iter=rounds, thr=s[5],
                                                        coarse_weight=s[0], prob_threshold=s[1], margin=s[2],
                                                        postprocess=s[3], previous_weight=s[4]), "cpu")
               for s in settings}
    parts: dict = {}
    for run in held_out_runs(data, held_out, floor_hu):
        mapping = GridMapping.for_input(run.hu.shape, run.spacing, package.spacing)
        for setting, engine in engines.items():
            masks = [r.canonical_mask for r in run_on_grid(engine, run.hu, mapping)]
            parts.setdefault(run.patient, {}).setdefault(setting_name(*setting), []).append(overlap(masks, run.truth))
    return {patient: {name: pooled(v) for name, v in entry.items()} for patient, entry in parts.items()}


def summarise(per_patient: dict, names: list[str], rounds: int) -> dict:
    """Per setting: mean over patients of each round, the best round an oracle would keep (the coarse round
    too, as in scripts/report_stop_rules.py), and the drift of each cap to it."""
    table = {}
    for name in names:
        scores = np.array([(p[name] + [p[name][-1]] * (rounds + 1 - len(p[name])))[:rounds + 1]
                           for p in per_patient.values()])
        best = scores.max(axis=1)  # the best round per patient
        table[name] = {"per_round_mean": [round(float(v), 4) for v in scores.mean(axis=0)],
                       "per_round_std": [round(float(v), 4) for v in scores.std(axis=0)],
                       "best_round_mean": round(float(best.mean()), 4),
                       "drift_of_cap": {k: round(float((best - scores[:, k]).mean()), 4) for k in range(1, rounds + 1)}}
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="new_floor_prior")
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--coarse-weights", default="0,0.2,0.4")
    parser.add_argument("--prob-thresholds", default="0.5")
    parser.add_argument("--margins", default=str(DEFAULT_MARGIN))
    parser.add_argument("--postprocess", default="on", help="on, off or on,off")
    parser.add_argument("--previous-weights", default="0")
    parser.add_argument("--thr", type=float, default=1.0, help="the convergence threshold (1.0: every round runs; "
                        "a run that stops earlier keeps its last round for the later caps)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "validation")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "inference_levers.json")
    parser.add_argument("--add", type=Path, default=None,
                        help="a previous result of other folds (same recipe, settings and rounds) to pool with these")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = [(float(w), float(t), int(m), p == "on", float(v), args.thr) for w in args.coarse_weights.split(",")
                for t in args.prob_thresholds.split(",") for m in args.margins.split(",")
                for p in args.postprocess.split(",") for v in args.previous_weights.split(",")]
    names = [setting_name(*s) for s in settings]
    started = time.perf_counter()
    per_patient, used = score_fold_models(
        args, lambda package, data, floor_hu, held_out: score_fold(package, data, floor_hu, held_out, settings,
                                                                   args.rounds),
        lambda previous: (previous["recipe"], sorted(previous["settings"]), previous["rounds"])
        == (args.recipe, sorted(names), args.rounds))
    result = {"recipe": args.recipe, "folds": used, "patients": len(per_patient), "rounds": args.rounds,
              "date": time.strftime("%Y-%m-%d"), "device": f"cpu, {torch.get_num_threads()} thread(s)",
              "seconds": round(time.perf_counter() - started), "settings": summarise(per_patient, names, args.rounds),
              "per_patient": per_patient}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_patient"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
