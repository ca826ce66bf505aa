"""``pancreas-rstn demo``: segment an unseen synthetic phantom with the bundled demo model, offline."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..demo import DEFAULT_DEMO_SEED

    p = subparsers.add_parser(
        "demo",
        help="run RSTN on a synthetic phantom with the bundled demo model and show every round (offline)",
        description="Make an unseen phantom, segment it with the bundled synthetic demo model (not for clinical "
        "images), print the DSC against the phantom's ground truth at every round, and write the masks, saliency "
        "maps and a figure.",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("pancreas_rstn_demo"), help="output folder")
    p.add_argument("--seed", type=int, default=DEFAULT_DEMO_SEED, help="phantom seed (the demo model was trained on 1000-1079)")
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the bundled demo model)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--thr", type=float, default=0.99, help="stop when the inter-round DSC reaches this")
    p.add_argument("--max-iter", type=int, default=10)
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.output, seed=args.seed, model_dir=args.model, device=args.device, overwrite=args.overwrite,
             thr=args.thr, max_iter=args.max_iter)
    return 0
