"""Zoom test-time augmentation of a recipe's fold models, scored on their held-out NIH patients (no training).

    python scripts/validate_zoom_tta.py --recipe new_floor_prior_6k [--scales 1,0.93,1.07,0.87,1.15] \
        [--folds 0,1,2,3,4] [--json benchmarks/results/zoom_tta_new_floor_prior_6k.json]

Each held-out run of labelled slices (as ``validate_real_model.py`` scores them, native only) is segmented with the
model's 2 fine rounds at its spacing times each scale (in-plane; the training's scale augmentation covers +-20 %),
and the last round's probabilities on the slice's own grid are averaged over a set of scales: the mask is where the
mean is at least 0.5 and at least one run kept the voxel (each run keeps its largest component). Pooled 2-D DSC
per patient, for every single scale and every set. Chosen on these validation folds only. Data: Roth HR, Farag A,
Turkbey EB, Lu L, Liu J, Summers RM. Data From Pancreas-CT. The Cancer Imaging Archive, 2016 (CC BY 4.0).
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

from validate_real_model import Data, held_out_runs, score_fold_models  # noqa: E402

from PancreasRSTNLib.engine.inference import InferenceConfig  # noqa: E402
from PancreasRSTNLib.engine.segmentation import GridMapping, build_engine, run_on_grid  # noqa: E402


def scale_sets(scales: list[float]) -> dict[str, list[int]]:
    """The combinations scored: each scale alone, the first with the nearest two, with the farthest two, all."""
    sets = {f"x{s:g}": [i] for i, s in enumerate(scales)}
    if len(scales) >= 3:
        sets["first 3"] = [0, 1, 2]
    if len(scales) >= 5:
        sets["first, last 2"] = [0, len(scales) - 2, len(scales) - 1]
    sets["all"] = list(range(len(scales)))
    return sets


def score_fold(package, data: Data, floor_hu: float | None, held_out: set[str], scales: list[float]) -> dict:
    """Per patient and set of scales: [|A and B|, |A| + |B|] summed over its runs."""
    engine = build_engine(package, InferenceConfig(views=tuple(package.views), max_iter=2, thr=1.0), "cpu")
    sets = scale_sets(scales)
    out: dict = {}
    for run in held_out_runs(data, held_out, floor_hu):
        probabilities, masks = [], []
        for s in scales:
            mapping = GridMapping.for_input(run.hu.shape, run.spacing, (package.spacing[0] * s,
                                                                        package.spacing[1] * s, package.spacing[2]))
            last = list(run_on_grid(engine, run.hu, mapping))[-1]
            probabilities.append(last.canonical_probability())
            masks.append(last.canonical_mask)
        p, m = np.stack(probabilities), np.stack(masks)
        for name, idx in sets.items():
            mask = (p[idx].mean(axis=0) >= 0.5) & m[idx].any(axis=0)
            entry = out.setdefault(run.patient, {}).setdefault(name, [0, 0])
            entry[0] += int(np.logical_and(mask, run.truth).sum())
            entry[1] += int(mask.sum() + run.truth.sum())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="new_floor_prior_6k")
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--scales", default="1,0.93,1.07,0.87,1.15", help="the first is the plain run")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "validation")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.add = None  # score_fold_models pools with an earlier result only when asked
    torch.set_num_threads(args.threads)
    scales = [float(s) for s in args.scales.split(",")]
    started = time.perf_counter()
    overlaps, used = score_fold_models(
        args, lambda package, data, floor_hu, held_out: score_fold(package, data, floor_hu, held_out, scales),
        lambda previous: False)
    per_patient = {p: {name: round(2 * a / b, 4) if b else 1.0 for name, (a, b) in v.items()}
                   for p, v in overlaps.items()}
    names = list(scale_sets(scales))
    plain = np.array([v[names[0]] for v in per_patient.values()])
    summary = {}
    for name in names:
        scores = np.array([v[name] for v in per_patient.values()])
        gain = scores - plain
        summary[name] = {"mean": round(float(scores.mean()), 4), "std": round(float(scores.std()), 4),
                         "gain_over_plain": round(float(gain.mean()), 4),
                         "gain_standard_error": round(float(gain.std(ddof=1) / np.sqrt(len(gain))), 4)
                         if len(gain) > 1 else None,
                         "patients_better": int((gain > 0).sum())}
    result = {"recipe": args.recipe, "folds": used, "patients": len(per_patient), "scales": scales,
              "rounds": 2, "date": time.strftime("%Y-%m-%d"), "device": f"cpu, {torch.get_num_threads()} thread(s)",
              "seconds": round(time.perf_counter() - started), "sets": summary, "per_patient": per_patient}
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_patient"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
