"""Choose the refinement's settings (the prior's weight in every fine round, the fine rounds) on VALIDATION data:
the held-out NIH slices of the validation folds, never the refinement's test CTs (PANCREAS_0001/0002 and the
TotalSegmentator CT of scripts/measure_refinement.py, which are left out here).

For each fold model (runs/validation/<recipe>/fold<k>/model, scripts/validate_real_model.py) and each held-out
patient's labelled slices (runs of consecutive slices), the truth is corrupted in-plane as a person's mask would
be (dilated 3 mm, eroded 3 mm, shifted 5 mm, the bounding box), refined with each candidate weight for up to 3
fine rounds, and scored as pooled 2-D DSC per patient (mean over patients). The choice: the (weight, rounds) with
the best mean over the corruptions; the model card records it (model.json ``inference.prior_weight``).

    python scripts/validate_prior_weight.py [--recipe new_floor_prior] [--folds 0,1,2,3,4] [--weights 0,0.2,0.3,0.4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "PancreasRSTN"))
sys.path.insert(0, str(ROOT / "scripts"))

from validate_real_model import Data, held_out_runs, overlap, pooled, score_fold_models  # noqa: E402

from PancreasRSTNLib.engine.guidance import Guidance  # noqa: E402
from PancreasRSTNLib.engine.inference import InferenceConfig  # noqa: E402
from PancreasRSTNLib.engine.segmentation import GridMapping, build_engine, run_on_grid  # noqa: E402
from PancreasRSTNLib.errors import InputImageError  # noqa: E402

TEST_CASES = {"PANCREAS_0001", "PANCREAS_0002"}  # the refinement benchmark's test volumes: never used here
CORRUPTIONS = ("dilated 3 mm", "eroded 3 mm", "shifted 5 mm", "box")
ROUNDS = 3


def corrupt_slices(truth: np.ndarray, pixel_mm: float, kind: str) -> np.ndarray:
    """(H, W, n) canonical masks corrupted slice by slice, in mm (a huge slice spacing keeps distances 2-D)."""
    image = sitk.GetImageFromArray(truth.transpose(2, 0, 1).astype(np.uint8))
    image.SetSpacing((pixel_mm, pixel_mm, 1e4))
    if kind == "box":
        out = np.zeros_like(truth)
        rows, cols = np.flatnonzero(truth.any(axis=(1, 2))), np.flatnonzero(truth.any(axis=(0, 2)))
        out[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1, truth.any(axis=(0, 1))] = True
        return out
    if kind == "shifted 5 mm":  # canonical columns run right -> left: +columns moves the mask to the left
        step = int(round(5.0 / pixel_mm))
        out = np.zeros_like(truth)
        out[:, step:] = truth[:, :-step]
        return out
    distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image, insideIsPositive=False,
                                                                   squaredDistance=False, useImageSpacing=True))
    out = distance <= (3.0 if kind.startswith("dilated") else -3.0)
    return out.transpose(1, 2, 0)


def refine_rounds(package, hu: np.ndarray, spacing: tuple, prior: np.ndarray, weight: float) -> list[np.ndarray]:
    engine = build_engine(package, InferenceConfig(views=tuple(package.views), max_iter=ROUNDS, thr=1.0,
                                                   prior_weight=weight), "cpu")
    mapping = GridMapping.for_input(hu.shape, spacing, package.spacing)
    return [r.canonical_mask for r in run_on_grid(engine, hu, mapping, guidance=Guidance(prior.astype(np.float32)))]


def score_fold(package, data: Data, floor_hu: float | None, held_out: set[str], weights: list[float]) -> dict:
    """Per patient, corruption and weight: pooled DSC of the corrupted mask and of each round."""
    parts: dict = {}
    for run in held_out_runs(data, held_out, floor_hu):
        hu, truth, spacing = run.hu, run.truth, run.spacing
        for kind in CORRUPTIONS:
            prior = corrupt_slices(truth, run.pixel_mm, kind)
            if not prior.any():
                continue  # an organ thinner than the erosion: no mask a person would give
            try:
                rounds = {w: refine_rounds(package, hu, spacing, prior, w) for w in weights}
            except InputImageError:  # a prior thinner than a voxel of the model's grid: refused, as for a user
                continue
            entry = parts.setdefault(run.patient, {}).setdefault(kind, {"given": []})
            entry["given"].append(overlap([prior], truth))
            for w, masks in rounds.items():
                entry.setdefault(str(w), []).append(overlap(masks, truth))
    return {patient: {kind: {key: pooled(v) for key, v in entry.items()} for kind, entry in kinds.items()}
            for patient, kinds in parts.items()}


def summarise(per_patient: dict, weights: list[float]) -> dict:
    table: dict = {}
    for kind in CORRUPTIONS:
        rows = [p[kind] for p in per_patient.values() if kind in p]
        table[kind] = {"patients": len(rows), "given": round(float(np.mean([r["given"][0] for r in rows])), 4)}
        for w in weights:
            table[kind][str(w)] = [round(float(np.mean([r[str(w)][i] for r in rows])), 4) for i in range(ROUNDS + 1)]
    scores = {(w, k): float(np.mean([table[kind][str(w)][k] for kind in CORRUPTIONS]))
              for w in weights for k in range(1, ROUNDS + 1)}
    (w, k), best = max(scores.items(), key=lambda item: item[1])
    return {"per_corruption": table, "mean_over_corruptions": {f"w={w} rounds={k}": round(v, 4)
                                                               for (w, k), v in scores.items()},
            "chosen": {"prior_weight": w, "max_iter": k, "mean_dsc": round(best, 4)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="new_floor_prior")
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--weights", default="0,0.2,0.3,0.4")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "validation")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--add", type=Path, default=None,
                        help="a previous result of other folds (same recipe and weights) to pool with these")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "prior_weight_validation.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = [float(w) for w in args.weights.split(",")]
    per_patient, used = score_fold_models(
        args, lambda package, data, floor_hu, held_out: score_fold(package, data, floor_hu, held_out - TEST_CASES,
                                                                   weights),
        lambda previous: previous["recipe"] == args.recipe and previous["weights"] == weights)
    result = {"recipe": args.recipe, "folds": used, "patients": len(per_patient), "weights": weights,
              "rounds": ROUNDS, "left_out_test_cases": sorted(TEST_CASES), "date": time.strftime("%Y-%m-%d"),
              "device": "cpu", **summarise(per_patient, weights), "per_patient": per_patient}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_patient"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
