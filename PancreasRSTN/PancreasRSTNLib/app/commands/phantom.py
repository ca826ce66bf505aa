"""``pancreas-rstn phantom``: write a synthetic abdominal CT phantom and its label map."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import RSTNError
from ...io.outputs import OutputPlan
from ...phantom import PHANTOM_LABELS, make_phantom, parse_triple


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write a synthetic abdominal CT phantom with a pancreas label (for demos and tests)",
        description="Write a synthetic abdominal CT (HU, int16) and its label map. Label 1 is the pancreas; "
        "with --multi-label also " + ", ".join(f"{v} {k}" for k, v in PHANTOM_LABELS.items() if v != 1) + ".",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="CT file to write (.nii.gz, .nii, .nrrd or .mha)")
    p.add_argument("--labels", type=Path, default=None, help="label map file to write (optional)")
    p.add_argument("--seed", type=int, default=0, help="random seed: each seed gives a different case")
    p.add_argument("--shape", default="128x128x64",
                   help="size in voxels as the file gives it: x (columns, right->left) x y (rows) x z (slices)")
    p.add_argument("--spacing", default=None, help="voxel spacing in mm, e.g. 2.5x2.5x3 (default: 340x340x192 mm FOV)")
    p.add_argument("--multi-label", action="store_true",
                   help="also label liver, spleen, kidneys, aorta, bone, duodenum in --labels")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        size = parse_triple(args.shape, int)
        spacing = parse_triple(args.spacing, float) if args.spacing else None
    except ValueError as exc:
        raise RSTNError(f"{exc} Use e.g. --shape 128x128x64 --spacing 2.5x2.5x3.") from exc
    if args.multi_label and not args.labels:
        raise RSTNError("--multi-label labels the other organs in the label map, but no --labels file was given. "
                        "Add --labels LABELS.nii.gz, or drop --multi-label.")
    plan = OutputPlan(overwrite=args.overwrite)
    try:
        outputs = [plan.file(args.output, "The phantom CT (-o)")]
        if args.labels:
            outputs.append(plan.file(args.labels, "The --labels output"))
        with plan:
            try:
                image, label = make_phantom(size, spacing, seed=args.seed, multi_label=args.multi_label)
            except ValueError as exc:
                raise RSTNError(str(exc)) from exc
            for img, path in zip((image, label), outputs, strict=False):
                plan.write(path, img)
    except BaseException:
        plan.abort()
        raise
    print(f"wrote {args.output} (size {image.GetSize()}, spacing {tuple(round(s, 3) for s in image.GetSpacing())} mm)"
          + (f" and {args.labels}" if args.labels else ""))
    return 0
