"""Recalibrate the BatchNorm statistics of the bundled demo model on its own training distribution, without
touching any weight, and write the package to --dest.

Why: the demo model was trained at batch size 1, so its BatchNorm running statistics trail the final weights
(see PancreasRSTNLib/bn_recalibration.py). One no-grad pass over the training phantoms' slices (seeds 1000-1039
at 128x128x64, the stage-1 phantoms, all seen in both stages), run as at inference, replaces them by the average
of the per-slice batch statistics.

    python scripts/recalibrate_demo_model.py --dest /tmp/demo_recal            # a new package
    python scripts/recalibrate_demo_model.py --dest Resources/Models/PancreasRSTN-demo-phantom-light --overwrite
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from PancreasRSTNLib.io.model_package import load_model_package, save_model_package
from PancreasRSTNLib.phantom import parse_triple
from PancreasRSTNLib.training.bn_recalibration import RecalibrationOptions, recalibrate_view
from PancreasRSTNLib.training.trainer import phantom_cases
from PancreasRSTNLib.views import view_axis

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "Resources" / "Models" / "PancreasRSTN-demo-phantom-light"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=PACKAGE, help="package to recalibrate (default: the demo model)")
    p.add_argument("--dest", type=Path, required=True, help="folder for the recalibrated package")
    p.add_argument("--overwrite", action="store_true", help="replace a package at --dest")
    p.add_argument("--phantom-seed", type=int, default=1000)
    p.add_argument("--phantoms", type=int, default=40)
    p.add_argument("--phantom-shape", default="128x128x64")
    p.add_argument("--samples", type=int, default=0, help="training slices per view (0: all)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    package = load_model_package(args.model)
    meta = package.metadata
    cfg = meta.get("training", {}).get("config", {})
    cases, provenance = phantom_cases(parse_triple(args.phantom_shape, int), args.phantom_seed, args.phantoms)
    per_view = {}
    for view, model in package.models.items():
        options = RecalibrationOptions(slice_threshold=float(cfg.get("slice_threshold", 0.98)),
                                       seed=int(cfg.get("seed", 0)) * 1000 + view_axis(view),
                                       rounds=int(cfg.get("T", 1)), margin=int(cfg.get("margin_fixed", 20)))
        per_view[view] = recalibrate_view(model, cases, view, n=args.samples, options=options)
        print(f"view {view}: {json.dumps(per_view[view])}", flush=True)
    meta = dict(meta)
    training = dict(meta.get("training", {}))
    training["bn_recalibration"] = {
        "views": per_view,
        "data": provenance,
        "weights_changed": False,
        "recipe": "python scripts/recalibrate_demo_model.py " + " ".join(sys.argv[1:]),
        "seconds": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__,
    }
    meta["training"] = training
    for key in ("schema_version", "rstn", "views", "files"):
        meta.pop(key, None)  # rewritten by save_model_package
    save_model_package(args.dest, package.models, meta, overwrite=args.overwrite)
    print(json.dumps({"package": str(args.dest), "seconds": training["bn_recalibration"]["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
