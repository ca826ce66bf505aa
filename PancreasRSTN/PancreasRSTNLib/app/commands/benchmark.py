"""``pancreas-rstn benchmark``: our engine against the reference-style loop, side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...evaluation.speed_benchmark import BenchmarkSettings, format_markdown, run_benchmark
from ...phantom import parse_triple
from .options import add_run_options, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("benchmark", help="time the engine against the reference-style loop",
                              description=__doc__)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--backbone", default="fcn8s", help="fcn8s or light (ignored with --model)")
    p.add_argument("--widths", default=None, help="light backbone widths, e.g. 8,16,32,64")
    p.add_argument("--shape", default="512x512x240",
                   help="phantom size as a file gives it: x (columns) x y (rows) x z (slices), as `phantom --shape`")
    p.add_argument("--input", default=None, help="a real CT instead of a phantom (needs --model)")
    p.add_argument("--model", default=None, help="a trained model package (else random weights + oracle crops)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--thr", type=float, default=0.99)
    p.add_argument("--max-iter", type=int, default=10)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--coarse-downsample", type=int, default=1, choices=[1, 2, 3, 4])
    p.add_argument("--reference", default="auto", choices=["auto", "full", "sample", "off"],
                   help="reference-style loop: full run, sampled and extrapolated, or off")
    p.add_argument("--reference-sample", type=int, default=3,
                   help="batch-1 triplets timed per view and stage when the loop is sampled (more: less noise)")
    p.add_argument("--scaling", default=None,
                   help="volume lengths for the scaling test, e.g. 64,128,256 ('' to skip; default: L/4, L/2, L, 2L of "
                   "--shape's L slices)")
    p.add_argument("--scaling-inplane", type=int, default=None, help="in-plane size of the scaling volumes")
    p.add_argument("--no-training", action="store_true", help="skip the training-throughput measurement")
    p.add_argument("--training-size", type=positive_int, default=None,
                   help="slice size of the training-throughput test (default: --shape's in-plane size, at most 512)")
    p.add_argument("--training-steps", type=positive_int, default=5, help="timed training steps per backbone")
    p.add_argument("--no-resample", action="store_true",
                   help="with --model: run at the CT's own spacing instead of the model's (reference behaviour)")
    p.add_argument("--cohort", type=positive_int, default=None, metavar="N",
                   help="instead: cases per hour over N phantoms of --shape (the bundled phantom model unless "
                   "--model), with and without prefetch")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    add_run_options(p)
    p.set_defaults(func=run)


def _canonical_shape(text: str) -> tuple[int, int, int]:
    """x (columns) x y (rows) x z (slices), as files and `phantom --shape` give it -> canonical rows, cols, slices."""
    x, y, z = parse_triple(text, int)
    return (y, x, z)


def run(args: argparse.Namespace) -> int:
    if args.cohort:
        return _run_cohort(args)
    settings = BenchmarkSettings(
        device=args.device, backbone=args.backbone,
        backbone_kwargs={"widths": tuple(int(w) for w in args.widths.split(","))} if args.widths else {},
        shape=_canonical_shape(args.shape), input=args.input, model=args.model, repeats=args.repeats,
        thr=args.thr, max_iter=args.max_iter, precision=args.precision, reference=args.reference,
        reference_sample=args.reference_sample,
        coarse_downsample=args.coarse_downsample,
        scaling=None if args.scaling is None else tuple(int(s) for s in args.scaling.split(",") if s),
        scaling_inplane=args.scaling_inplane,
        training=not args.no_training, training_size=args.training_size, training_steps=args.training_steps,
        resample=not args.no_resample,
    )
    report = run_benchmark(settings, log=(lambda _m: None) if args.quiet else print)
    print()
    print(format_markdown(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


def _run_cohort(args: argparse.Namespace) -> int:
    from ..cohort_throughput import cohort_throughput, format_cohort

    report = cohort_throughput(args.cohort, parse_triple(args.shape, int), model=args.model, device=args.device,
                               max_iter=args.max_iter, repeats=args.repeats,
                               log=(lambda _m: None) if args.quiet else print)
    print()
    print(format_cohort(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0
