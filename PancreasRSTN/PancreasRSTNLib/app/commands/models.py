"""``pancreas-rstn models list | info | verify | install | import-reference | average``: find, inspect, add and
combine models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...io.model_package import package_summary, verify_model_package
from ...io.reference_import import import_reference_checkpoints
from ...io.user_models import (
    ModelInfo,
    find_model,
    install_model,
    list_models,
    models_by_organ,
    resolve_model,
)
from ...training.weight_soup import soup_packages


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list, inspect, verify, install and import model packages")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    lst = sub.add_parser("list", help="every installed and bundled model, with its source, warning and path")
    lst.add_argument("--organ", default=None, help="only models of this organ")
    lst.add_argument("--json", action="store_true", help="print the list as JSON")
    lst.set_defaults(func=run_list)

    info = sub.add_parser("info", help="show a model's metadata: data, spacing, measured accuracy, intended use")
    info.add_argument("model", help="a model folder or the name of an installed model")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=run_info)

    verify = sub.add_parser("verify", help="check the sha256 of every weight file")
    verify.add_argument("model", help="a model folder or the name of an installed model")
    verify.set_defaults(func=run_verify)

    install = sub.add_parser("install", help="copy a model folder or .zip into your models folder (verified)")
    install.add_argument("source", help="a model folder or a .zip of one")
    install.add_argument("--overwrite", action="store_true", help="replace an installed model of the same name")
    install.set_defaults(func=run_install)

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

    avg = sub.add_parser("average", help="average the weights of models trained on from one model (a model soup)")
    avg.add_argument("models", nargs="+", help="two or more model folders or installed models' names, of one "
                     "network, views, spacing and HU window")
    avg.add_argument("-o", "--output", required=True, help="model package folder to create")
    avg.add_argument("--name", default=None, help="the new model's name (default: the output folder's name)")
    avg.add_argument("--overwrite", action="store_true", help="replace a model package in --output")
    avg.set_defaults(func=run_average)


def _row(m: ModelInfo, default_paths: set) -> dict:
    return {"name": m.name, "organ": m.organ, "backbone": m.backbone, "views": "".join(m.views),
            "spacing_mm": None if m.spacing is None else [round(s, 3) for s in m.spacing],
            "held_out_dsc": m.held_out_dsc, "source": m.source, "default": m.path in default_paths,
            "synthetic": m.synthetic, "warning": m.warning or None, "path": str(m.path)}


def run_list(args: argparse.Namespace) -> int:
    models = [m for m in list_models() if args.organ is None or m.organ == args.organ]
    defaults = set()
    for organ in models_by_organ(models):
        try:
            defaults.add(find_model(organ, models).path)
        except Exception:  # noqa: BLE001 - only synthetic models for this organ: no default
            pass
    rows = [_row(m, defaults) for m in models]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("No model is installed. Install one with `pancreas-rstn models install FOLDER_OR_ZIP`.")
        return 0
    for r in rows:
        spacing = "native" if r["spacing_mm"] is None else "x".join(f"{s:g}" for s in r["spacing_mm"]) + " mm"
        dsc = "" if r["held_out_dsc"] is None else f", held-out DSC {r['held_out_dsc']:.3f}"
        mark = "  (default for " + r["organ"] + ")" if r["default"] else ""
        print(f"{r['name']}{mark}")
        print(f"    {r['organ']}, {r['backbone']} backbone, views {r['views']}, spacing {spacing}{dsc}; {r['source']}")
        print(f"    {r['path']}")
        if r["warning"]:
            print(f"    WARNING: {r['warning']}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    s = package_summary(resolve_model(args.model).path)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    training = s["training"] if isinstance(s["training"], dict) else {}
    data = training.get("data") if isinstance(training.get("data"), dict) else {}
    evaluation = s["evaluation"] if isinstance(s["evaluation"], dict) else {}
    print(f"name:          {s['name']}")
    print(f"path:          {s['path']}")
    print(f"organ:         {s['organ']['name']} (SNOMED CT {s['organ']['snomed_code']}, "
          f"label {s['organ']['label_value']})")
    saliency = f", saliency kernels {s['saliency']['kernels']}" if s.get("saliency") else ""
    print(f"method:        {s['method']}" + (f", refiner {s['refiner']['direction']} CLSTM refining the "
                                             f"{s['refiner']['refines'].upper()} output" if s.get("refiner") else ""))
    print(f"backbone:      {s['backbone']}{saliency}")
    print(f"views:         {', '.join(s['views'])}")
    spacing = "not recorded (inputs are used at their own spacing)" if s["spacing"] is None else \
        "x".join(f"{v:g}" for v in s["spacing"]) + " mm (inputs are resampled to it)"
    print(f"spacing:       {spacing}")
    print(f"size:          {s['size_mb']} MB")
    if data:
        described = ", ".join(f"{k}: {v}" for k, v in data.items() if isinstance(v, (str, int, float)) or
                              (isinstance(v, list) and len(v) <= 6))
        print(f"training data: {described}")
    if evaluation.get("held_out_dsc") is not None:
        print(f"held-out DSC:  {evaluation['held_out_dsc']:.3f} ({evaluation.get('protocol', 'protocol not given')})")
    if s["intended_use"]:
        print(f"intended use:  {s['intended_use']}")
    if s["migrated_from_schema"]:
        print(f"schema:        {s['migrated_from_schema']} (read as {s['schema_version']})")
    if s["warning"]:
        print(f"WARNING:       {s['warning']}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    for view, digest in verify_model_package(resolve_model(args.model).path).items():
        print(f"view {view}: sha256 {digest} OK")
    return 0


def run_install(args: argparse.Namespace) -> int:
    info = install_model(args.source, overwrite=args.overwrite)
    print(f"installed {info.name} into {info.path} (weights verified)")
    if info.warning:
        print(f"WARNING: {info.warning}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    checkpoints = {v: p for v, p in (("X", args.x), ("Y", args.y), ("Z", args.z)) if p}
    out = import_reference_checkpoints(checkpoints, args.output, organ=args.organ, name=args.name,
                                       label_value=args.label_value, overwrite=args.overwrite)
    print(f"imported views {', '.join(sorted(checkpoints))} into {out}")
    return 0


def run_average(args: argparse.Namespace) -> int:
    sources = [resolve_model(m).path for m in args.models]
    out = soup_packages(sources, args.output, {"name": args.name or Path(args.output).name}, overwrite=args.overwrite)
    print(f"wrote the weight average of {len(sources)} models into {out}")
    print("It has not been evaluated: measure it on held-out data (pancreas-rstn evaluate) before you use it.")
    return 0
