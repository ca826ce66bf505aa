"""``pancreas-rstn models import-reference | info | verify``: manage model packages."""

from __future__ import annotations

import argparse
import json

from ..model_package import import_reference_checkpoints, package_summary, verify_model_package


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="import, inspect and verify model packages")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    imp = sub.add_parser("import-reference", help="convert reference OrganSegRSTN_PyTorch .pkl checkpoints")
    imp.add_argument("--x", help="view X checkpoint (.pkl)")
    imp.add_argument("--y", help="view Y checkpoint (.pkl)")
    imp.add_argument("--z", help="view Z checkpoint (.pkl)")
    imp.add_argument("-o", "--output", required=True, help="model package folder to create")
    imp.add_argument("--organ", default="pancreas")
    imp.add_argument("--label-value", type=int, default=None, help="label value of the organ in your label maps")
    imp.add_argument("--name", default=None)
    imp.add_argument("--overwrite", action="store_true")
    imp.set_defaults(func=run_import)

    info = sub.add_parser("info", help="show a package's metadata")
    info.add_argument("directory")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=run_info)

    verify = sub.add_parser("verify", help="check the sha256 of every weight file")
    verify.add_argument("directory")
    verify.set_defaults(func=run_verify)


def run_import(args: argparse.Namespace) -> int:
    checkpoints = {v: p for v, p in (("X", args.x), ("Y", args.y), ("Z", args.z)) if p}
    out = import_reference_checkpoints(checkpoints, args.output, organ=args.organ, name=args.name,
                                       label_value=args.label_value, overwrite=args.overwrite)
    print(f"imported views {', '.join(sorted(checkpoints))} into {out}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    s = package_summary(args.directory)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"name:      {s['name']}")
    print(f"organ:     {s['organ']['name']} (SNOMED CT {s['organ']['snomed_code']}, label {s['organ']['label_value']})")
    print(f"backbone:  {s['backbone']}, saliency kernels {s['saliency']['kernels']}")
    print(f"views:     {', '.join(s['views'])}")
    print(f"size:      {s['size_mb']} MB")
    if s["warning"]:
        print(f"WARNING:   {s['warning']}")
    if s["training"]:
        print(f"training:  {json.dumps(s['training'])[:400]}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    for view, digest in verify_model_package(args.directory).items():
        print(f"view {view}: sha256 {digest} OK")
    return 0
