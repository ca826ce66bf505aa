"""``pancreas-rstn demo``: segment the shipped real CT with the default model, offline (``--phantom``: a
synthetic phantom with the synthetic demo model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_run_options


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..demo import DEFAULT_DEMO_SEED

    p = subparsers.add_parser(
        "demo",
        help="segment a real CT shipped with the package with the default model, round by round (offline)",
        description="Segment the shipped TotalSegmentator example CT (3 mm, Apache-2.0) with the default pancreas "
        "model, print the DSC of every round against its reference label (made by a model, not an expert), and "
        "write every round's mask and saliency channels and a figure. --phantom runs the synthetic phantom demo "
        "instead. Re-running replaces a previous demo's output folder.",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("pancreas_rstn_demo"), help="output folder")
    p.add_argument("--phantom", action="store_true",
                   help="segment an unseen synthetic phantom with the synthetic demo model (the first demo)")
    p.add_argument("--seed", type=int, default=DEFAULT_DEMO_SEED,
                   help="phantom seed with --phantom (the demo model was trained on 1000-1079)")
    p.add_argument("--model", default=None, help="a model folder or installed model name (default: the default "
                   "pancreas model; with --phantom, the synthetic demo model)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--thr", type=float, default=0.99, help="stop when the inter-round DSC reaches this")
    p.add_argument("--max-iter", type=int, default=None,
                   help="maximum fine rounds (default: the model's validated count, else 10)")
    p.add_argument("--no-resample", action="store_true", help="run at the CT's own spacing (reference behaviour)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder that is not a previous demo's output")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...progress import progress_mode
    from ..demo import run_demo

    run_demo(args.output, phantom=args.phantom, seed=args.seed, model_dir=args.model, device=args.device,
             overwrite=args.overwrite, thr=args.thr, max_iter=args.max_iter, resample=not args.no_resample,
             progress=progress_mode(args.quiet))
    return 0
