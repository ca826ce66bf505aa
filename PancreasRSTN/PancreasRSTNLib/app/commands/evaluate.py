"""``pancreas-rstn evaluate``: per-case metrics, DSC at every round, convergence table, mean +- std."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from ...errors import OutputExistsError
from ...evaluation.cases import EvalCase, EvalSettings
from ...io.model_package import ModelPackage
from ...io.user_models import resolve_model
from ...phantom import DEFAULT_SIZE, canonical_spacing, parse_triple, phantom_series
from ...views import VIEWS
from .options import add_run_options, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a model package on a labelled dataset (or phantoms): DSC, HD95, rounds, time",
        description="Evaluate like the RSTN paper: per-case DSC, Jaccard, precision, recall, volume error, HD95, "
        "DSC at every round, rounds to reach thr 0.90/0.95/0.98/0.99, time; mean +- std, min, max. Writes "
        "evaluation.json, cases.csv, rounds.csv and PNG plots.",
    )
    p.add_argument("--model", nargs="+", default=None,
                   help="a model folder or installed model name (not with --predictions); several (e.g. an RSTN, a "
                   "C2F and a Cai package) are run on the same cases and compared in OUT/comparison.{md,csv,png}")
    p.add_argument("--predictions", type=Path, default=None,
                   help="score the predictions in this folder (<case>.nii.gz, .nii, .nrrd or .mha) against --data "
                   "without running a model")
    p.add_argument("--prediction-label", type=int, default=None,
                   help="with --predictions: the organ's value in the prediction files (default: any non-zero voxel)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="dataset folder (nnU-Net v2, MSD, NIH or image/label pairs)")
    src.add_argument("--phantoms", type=int, help="evaluate on this many synthetic phantoms")
    p.add_argument("--phantom-shape", default=None, help="phantom size (default: the model's training size)")
    p.add_argument("--phantom-seed", type=int, default=5000, help="first phantom seed (use seeds unseen in training)")
    p.add_argument("--organ", default=None, help="organ name (default: the model's organ)")
    p.add_argument("--label-value", type=int, default=None, help="label value of the organ in the label maps "
                   "(default: from dataset.json or the organ's usual value)")
    p.add_argument("--fold", type=int, default=None, help="evaluate only the test cases of this fold")
    p.add_argument("--folds", type=positive_int, default=4, help="number of folds")
    p.add_argument("--fold-convention", choices=("sorted", "nih82"), default="sorted",
                   help="sorted: contiguous folds of the sorted case names; nih82: the reference's NIH-82 folds")
    p.add_argument("--cache", type=Path, default=None, help="preprocessing cache folder (default OUT/cache)")
    p.add_argument("--on-bad-case", choices=("skip", "fail"), default="fail",
                   help="a case that cannot be scored (no or unreadable prediction, another grid, a label without "
                   "the organ, an image without a label): stop, or skip it with a warning (listed in the report)")
    p.add_argument("--oracle", action="store_true", help="also run the oracle (crop by the ground truth)")
    p.add_argument("--thr", type=float, default=0.99, help="convergence threshold of the reported result")
    p.add_argument("--max-iter", type=int, default=10, help="maximum fine rounds")
    p.add_argument("--views", default=None, help="views to use, e.g. XYZ (default: all in the model)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    p.add_argument("--no-resample", action="store_true",
                   help="run every case at its own voxel spacing (the reference's behaviour) instead of resampling "
                   "it to the model's")
    p.add_argument("-o", "--out", required=True, type=Path, help="report folder")
    p.add_argument("--overwrite", action="store_true", help="replace an evaluation report in -o")
    add_run_options(p)
    p.set_defaults(func=run)


def _phantom_cases(args: argparse.Namespace, package: ModelPackage) -> Iterator[EvalCase]:
    """The phantoms of ``--phantom-seed`` on, at the model's training size unless ``--phantom-shape`` says."""
    data = (package.metadata.get("training") or {}).get("data") or {}
    size = parse_triple(args.phantom_shape, int) if args.phantom_shape else tuple(data.get("shape") or DEFAULT_SIZE)
    spacing = canonical_spacing(size)
    for name, hu, label in phantom_series(size, args.phantom_seed, args.phantoms):
        yield EvalCase(name, hu, label > 0, spacing)


def _dataset_cases(args: argparse.Namespace, package: ModelPackage, info: dict) -> Iterator[EvalCase]:
    """The dataset's (or fold's) cases, read once through the preprocessing cache at their own spacing."""
    from ...evaluation.bad_cases import BadCases, unlabelled_images
    from ...training.data_cache import build_cache
    from ...training.datasets import open_dataset
    from ...training.training_data import kfold_split

    organ = args.organ or package.organ
    label_value = args.label_value if args.label_value is not None else None
    dataset = open_dataset(args.data, organ=organ, label_value=label_value)
    names = dataset.case_names()
    if args.fold is not None:
        _, names = kfold_split(names, args.folds, args.fold, convention=args.fold_convention)
    bad = BadCases(args.on_bad_case)
    for name, image in unlabelled_images(dataset):  # the dataset reader leaves them out: say so, or stop
        bad.add(name, f"the image {image.name} has no label file")
    cache = build_cache(dataset, args.cache or args.out / "cache", names=names, on_bad_case=args.on_bad_case)
    info.update({"data": str(Path(args.data).resolve()), "layout": dataset.layout, "fold": args.fold,
                 "skipped": bad.cases + cache.skipped, "label_values": list(dataset.label_values)})
    for c in cache.cases():
        yield EvalCase(c.name, c.image, c.label > 0, c.spacing)


def _score_predictions(args: argparse.Namespace) -> int:
    from ...errors import RSTNError
    from ...evaluation.predictions import evaluate_predictions
    from ...progress import Progress, progress_mode
    from ...training.datasets import open_dataset

    if args.data is None or args.model:
        raise RSTNError("--predictions scores a folder against a dataset's labels: give --data, and no --model.")
    dataset = open_dataset(args.data, organ=args.organ or "pancreas", label_value=args.label_value)
    with Progress(progress_mode(args.quiet)) as bar:
        evaluate_predictions(dataset, args.predictions, args.out, prediction_label=args.prediction_label,
                             echo=bar.line, info={"data": str(Path(args.data).resolve()), "layout": dataset.layout},
                             on_bad_case=args.on_bad_case)
    return 0


def run(args: argparse.Namespace) -> int:
    from ...evaluation.cases import evaluate
    from ...io.model_package import load_model_package
    from ...progress import Progress, progress_mode

    if (args.out / "evaluation.json").exists() and not args.overwrite:
        raise OutputExistsError(f"{args.out} already holds an evaluation; choose another -o or pass --overwrite.")
    if args.predictions is not None:
        return _score_predictions(args)
    packages = [load_model_package(resolve_model(name).path) for name in args.model or [None]]
    if len(packages) > 1:
        return _compare(args, packages)
    package = packages[0]
    views = tuple(v for v in (args.views or "".join(package.models)).upper() if v in VIEWS)
    info = {"model": str(package.path), "model_name": package.metadata.get("name")}
    if args.phantoms is not None:
        info["data"] = f"synthetic phantoms, seeds {args.phantom_seed}..{args.phantom_seed + args.phantoms - 1}"
        cases, n_cases = _phantom_cases(args, package), args.phantoms
    else:
        cases = list(_dataset_cases(args, package, info))  # memory-mapped: cheap to hold
        n_cases = len(cases)
    info["resampled_to"] = None if args.no_resample else package.spacing
    with Progress(progress_mode(args.quiet)) as bar:
        evaluate(package.models, cases, args.out, thr=args.thr, max_iter=args.max_iter, views=views,
                 device=args.device, oracle=args.oracle, info=info, echo=bar.line,
                 method=package.method, refiner=package.refiner, spacing=package.spacing, window=package.window,
                 resample=not args.no_resample, n_cases=n_cases, progress=bar.update)
    return 0


def _settings(args: argparse.Namespace, package: ModelPackage) -> EvalSettings:
    """How ``package`` is evaluated: its own method, views, refiner, spacing and HU window; the run's options."""
    return EvalSettings(thr=args.thr, max_iter=args.max_iter, views=tuple(package.models), device=args.device,
                        method=package.method, spacing=package.spacing, window=package.window,
                        resample=not args.no_resample, refiner=package.refiner)


def _compare(args: argparse.Namespace, packages: list[ModelPackage]) -> int:
    """Every package on the same cases; one comparison table and plot."""
    from ...errors import RSTNError
    from ...evaluation.comparison import Entry, compare
    from ...progress import Progress, progress_mode

    if args.oracle or args.views:
        raise RSTNError("--oracle and --views apply to one model; compare packages with their own settings.")
    organs = {p.organ for p in packages}
    if len(organs) > 1 and not args.organ:
        raise RSTNError(f"The models segment different organs ({', '.join(sorted(organs))}); compare models of one "
                        "organ, or name it with --organ.")
    info = {"models": [str(p.path) for p in packages]}
    if args.phantoms is not None:
        info["data"] = f"synthetic phantoms, seeds {args.phantom_seed}..{args.phantom_seed + args.phantoms - 1}"
        cases = list(_phantom_cases(args, packages[0]))
    else:
        cases = list(_dataset_cases(args, packages[0], info))
    entries = [Entry(_label(p), p.method + ("+" + p.refiner_config.direction + "clstm" if p.refiner is not None
                                            and p.method == "rstn" else ""), p.models, _settings(args, p))
               for p in packages]
    with Progress(progress_mode(args.quiet)) as bar:
        compare(entries, cases, args.out, info=info, echo=bar.line)
    return 0


def _label(package: ModelPackage) -> str:
    return str(package.metadata.get("name") or package.path.name)
