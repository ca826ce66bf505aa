"""``pancreas-rstn phantom``: write a synthetic abdominal CT phantom and its label map."""

from __future__ import annotations

import argparse
from pathlib import Path

import SimpleITK as sitk

from ..errors import OutputExistsError, RSTNError
from ..phantom import PHANTOM_LABELS, make_phantom, parse_triple


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write a synthetic abdominal CT phantom with a pancreas label (for demos and tests)",
        description="Write a synthetic abdominal CT (HU, int16) and its label map. Label 1 is the pancreas; "
        "with --multi-label also " + ", ".join(f"{v} {k}" for k, v in PHANTOM_LABELS.items() if v != 1) + ".",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="CT file to write (.nii.gz, .nrrd, .mha, ...)")
    p.add_argument("--labels", type=Path, default=None, help="label map file to write (optional)")
    p.add_argument("--seed", type=int, default=0, help="random seed: each seed gives a different case")
    p.add_argument("--shape", default="128x128x64", help="size in voxels, x (right->left) x y (ant->post) x z")
    p.add_argument("--spacing", default=None, help="voxel spacing in mm, e.g. 2.5x2.5x3 (default: 340x340x192 mm FOV)")
    p.add_argument("--multi-label", action="store_true", help="also label liver, spleen, kidneys, aorta, bone, duodenum")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        size = parse_triple(args.shape, int)
        spacing = parse_triple(args.spacing, float) if args.spacing else None
    except ValueError as exc:
        raise RSTNError(f"{exc} Use e.g. --shape 128x128x64 --spacing 2.5x2.5x3.") from exc
    outputs = [args.output] + ([args.labels] if args.labels else [])
    for path in outputs:
        if path.exists() and not args.overwrite:
            raise OutputExistsError(f"{path} already exists; choose another name or pass --overwrite to replace it.")
    try:
        image, label = make_phantom(size, spacing, seed=args.seed, multi_label=args.multi_label)
    except ValueError as exc:
        raise RSTNError(str(exc)) from exc
    for img, path in zip((image, label), outputs, strict=False):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            sitk.WriteImage(img, str(path), True)
        except RuntimeError as exc:
            raise RSTNError(f"Could not write {path}: {exc}. Use an extension SimpleITK writes (.nii.gz, .nrrd, .mha).") from exc
    print(f"wrote {args.output} (size {image.GetSize()}, spacing {tuple(round(s, 3) for s in image.GetSpacing())} mm)"
          + (f" and {args.labels}" if args.labels else ""))
    return 0
