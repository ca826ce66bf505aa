"""Train the bundled demo model (light-backbone RSTN, views X, Y, Z) on synthetic phantoms, then merge the
three single-view runs into one model package in Resources/Models/.

Why three processes: on a small CPU machine, one single-threaded process per view uses the cores better than
one multi-threaded process training the views in turn. Each view run is an ordinary ``pancreas-rstn train``.

    python scripts/train_demo_model.py --work /tmp/demo_train [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_NAME = "PancreasRSTN-demo-phantom-light"
COMMON = ["--phantom-shape", "128x128x64", "--phantom-seed", "1000", "--backbone", "light", "--widths", "8,16,32,64",
          "--optimizer", "adamw", "--coarse-lr-ratio", "1.0", "--checkpoint-every", "400", "--log-every", "25",
          "--seed", "0", "--threads", "1", "--no-progress"]
#: Stage 1: from scratch on 40 phantoms, S -> I -> J -> noisy fine-tuning (N).
STAGE1 = ["--phantoms", "40", "--steps", "S:400,I:600,J:1800", "--j-decay-every", "600", "--noisy-steps", "300",
          "--lr", "1e-3", *COMMON]
#: Stage 2: fine-tuning of stage 1 on 80 phantoms (seeds 1000-1079), J then N, lower LR.
STAGE2 = ["--phantoms", "80", "--steps", "J:1200", "--j-decay-every", "600", "--noisy-steps", "300",
          "--lr", "3e-4", *COMMON]
RECIPE = STAGE1
DESCRIPTION = (
    "SYNTHETIC DEMO MODEL, NOT FOR CLINICAL IMAGES. Light-backbone RSTN trained only on synthetic abdominal CT "
    "phantoms made by `pancreas-rstn phantom` (128x128x64 voxels, 340x340x192 mm field of view). It shows how the "
    "pipeline works and will not segment a real CT scan."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the per-view training runs")
    parser.add_argument("--dest", type=Path, default=REPO / "Resources" / "Models" / PACKAGE_NAME)
    parser.add_argument("--views", default="XYZ")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package at --dest")
    parser.add_argument("--merge-only", action="store_true", help="only merge finished runs into the package")
    parser.add_argument("--from-stage", type=int, choices=(1, 2), default=1, help="2: skip stage 1 (already in --work)")
    args = parser.parse_args()
    t_all = time.time()
    if args.from_stage == 1:
        if run_stage(args, args.work / "stage1", STAGE1, []) != 0:
            return 1
        merge(args, args.work / "stage1", args.work / "stage1_model", STAGE1, overwrite=True)
    if run_stage(args, args.work / "stage2", STAGE2, ["--init", str(args.work / "stage1_model")]) != 0:
        return 1
    merge(args, args.work / "stage2", args.dest, STAGE2, overwrite=args.overwrite, wall=time.time() - t_all)
    return 0


def run_stage(args, work: Path, recipe: list[str], extra: list[str]) -> int:
    if not args.merge_only:
        procs = []
        for view in args.views:
            out = work / view
            cmd = [sys.executable, "-m", "PancreasRSTNLib", "train", "-o", str(out), "--views", view,
                   "--name", PACKAGE_NAME, *recipe, *extra] + (["--resume"] if args.resume else [])
            work.mkdir(parents=True, exist_ok=True)
            log = open(work / f"{view}.log", "a")  # noqa: SIM115 (closed when the process ends)
            procs.append((view, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                 env=dict(os.environ, OMP_NUM_THREADS="1"))))
        failed = [v for v, p in procs if p.wait() != 0]
        if failed:
            print(f"training failed for views {failed}; see {work}/<view>.log", file=sys.stderr)
            return 1
    return 0


def merge(args, work: Path, dest: Path, recipe: list[str], overwrite: bool, wall: float | None = None) -> None:
    """Merge the single-view packages of one stage into one 3-view package."""
    from PancreasRSTNLib.io.model_package import load_model_package, save_model_package

    models, per_view = {}, {}
    for view in args.views:
        package = load_model_package(work / view / "model")
        models[view] = package.models[view]
        per_view[view] = package.metadata["training"]
    first = per_view[args.views[0]]
    metadata = {
        "name": PACKAGE_NAME,
        "organ": "pancreas",
        "description": DESCRIPTION,
        "intended_use": "demonstration and tests only; synthetic demo model, not for clinical images",
        "training": {
            "data": first["data"],
            "config": {k: v for k, v in first["config"].items() if k != "views"},
            "views": {v: per_view[v]["views"][0] for v in args.views if per_view[v].get("views")},
            "recipe": "python scripts/train_demo_model.py: one `pancreas-rstn train` per view and stage; stage 1: "
                      + " ".join(STAGE1) + "; stage 2 (--init stage 1): " + " ".join(STAGE2),
            "this_stage": " ".join(recipe),
            "wall_seconds_all_stages": None if wall is None else round(wall, 1),
            "torch": first.get("torch"),
        },
        "synthetic": True,
    }
    save_model_package(dest, models, metadata, overwrite=overwrite)
    size = sum(f.stat().st_size for f in dest.iterdir())
    print(json.dumps({"package": str(dest), "bytes": size}))


if __name__ == "__main__":
    sys.exit(main())
