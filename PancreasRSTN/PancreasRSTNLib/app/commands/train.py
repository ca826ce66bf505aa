"""``pancreas-rstn train``: train RSTN, the C2F baseline, Cai et al.'s CNN + (Bi)CLSTM, or a (Bi)CLSTM refiner on
a trained RSTN, on a dataset or on synthetic phantoms."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ...errors import OptionsError, RSTNError
from ...io.model_package import default_metadata
from ...models.pretrained import DEFAULT_ENCODER_FILE, load_encoder_weights
from ...phantom import canonical_spacing, parse_triple
from ...training.augmentation import REAL_CT_AUGMENT, AugmentConfig
from ...training.config import DEFAULT_LR, TrainConfig
from ...training.schedule import ScheduleOptions
from ...training.trainer import train
from ...training.training_data import TrainCase, phantom_cases
from ...views import VIEWS
from .options import positive_int

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an RSTN model package (joint loss, modes S->I->J) on CT data or phantoms",
        description="Train one RSTN per view with the paper's joint loss and write a model package to OUT/model. "
        "Multi-GPU / multi-process: run under torchrun (DDP).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path,
                     help="dataset folder (image/label pairs, MSD with dataset.json, or NIH Pancreas-CT)")
    src.add_argument("--phantoms", type=int, help="train on this many synthetic phantoms instead of a dataset")
    p.add_argument("--phantom-shape", default="128x128x64", help="phantom size x*y*z (with --phantoms)")
    p.add_argument("--phantom-seed", type=int, default=1000, help="first phantom seed (seeds seed..seed+N-1)")
    p.add_argument("--organ", default="pancreas", help="organ name (looked up in dataset.json for MSD data)")
    p.add_argument("--label-value", type=int, default=None, help="label value of the organ in the label maps")
    p.add_argument("--cache", type=Path, default=None, help="preprocessing cache folder (default OUT/cache)")
    p.add_argument("--fold", type=int, default=None, help="train on every fold but this one (default: all cases)")
    p.add_argument("--folds", type=int, default=4, help="number of folds")
    p.add_argument("--fold-convention", choices=("sorted", "nih82"), default="sorted",
                   help="sorted: contiguous folds of the sorted case names; nih82: the reference's NIH-82 folds")
    p.add_argument("--on-bad-case", choices=("skip", "fail"), default="fail",
                   help="skip a bad case with a warning, or stop")
    p.add_argument("--spacing", default="native",
                   help="'native': train on the data as they are and record their median voxel spacing in model.json "
                   "(inference resamples other CTs to it); or rows,cols,slices in mm (e.g. 1.5,1.5,1.5): resample "
                   "every case to it first")
    p.add_argument("--hu-window", default="-100,240", help="HU window low,high mapped to [0, 1] (reference -100,240; "
                   "write --hu-window=-100,240 when low is negative)")
    p.add_argument("--augment", nargs="?", const="basic", default=None, choices=("basic", "real-ct"),
                   help="seeded augmentations for real scanners (not in the reference). basic: in-plane scale +-20 %%, "
                   "rotation +-15 deg, intensity shift +-25 HU and contrast +-12 %%, noise up to 20 HU; real-ct: "
                   "basic plus a fatty organ, gamma, blur, low resolution, elastic deformation and contrast-phase "
                   "simulation (the shipped real-CT model's recipe, docs/models.md)")
    p.add_argument("--pretrained-encoder", nargs="?", const=str(DEFAULT_ENCODER_FILE), default=None, metavar="FILE",
                   help="start both networks' encoders from the converted ImageNet MobileNetV2 (--backbone "
                   "mobilenet_unet; FILE defaults to the one scripts/convert_mobilenetv2.py writes); checked by sha256")
    p.add_argument("--samples-per-step", type=positive_int, default=1,
                   help="training samples per optimiser step, their losses averaged (a batch; default 1 as the paper)")
    p.add_argument("--axial-slices", type=Path, default=None,
                   help="extra single axial slices (images/ + masks/ JPEG of a display window, as in NIH JPEG sets): "
                   "view Z only, each slice repeated as its 3-slice input")
    p.add_argument("--slices-window", default="auto",
                   help="display window low,high (HU) of --axial-slices, or 'auto': fitted on the slices whose case "
                   "is also in --data (write --slices-window=-1.4,257.4 when low is negative)")
    p.add_argument("--slices-pixel-spacing", type=float, default=None,
                   help="pixel spacing (mm) of --axial-slices (default: 0.82, the middle of NIH's 0.66-0.98 mm)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (checkpoints, logs, model)")
    p.add_argument("--name", default=None, help="model name written to model.json")
    p.add_argument("--views", default="XYZ", help="views to train, e.g. XYZ or Z")
    p.add_argument("--method", choices=("rstn", "c2f", "cai", "rstn+biclstm"), default="rstn",
                   help="rstn; c2f: the stage-wise baseline; cai: Cai et al.'s CNN (PNet-MSA) + (Bi)CLSTM, view Z; "
                   "rstn+biclstm: a (Bi)CLSTM refiner on the frozen RSTN package given by --init")
    p.add_argument("--backbone", default=None,
                   help="fcn8s (reference), light, pnet_msa or cai_miccai (default: fcn8s; pnet_msa for --method cai)")
    p.add_argument("--widths", default=None, help="light backbone widths, e.g. 16,32,64,128")
    p.add_argument("--norm", default=None, choices=["batch", "instance"],
                   help="light backbone normalisation (batch: running statistics; instance: each slice's own)")
    p.add_argument("--T", type=positive_int, default=1, help="unrolled fine iterations in the joint loss (paper: 1..5)")
    p.add_argument("--loss", choices=("dsc", "jaccard"), default="dsc",
                   help="soft DSC (the reference) or Jaccard (Cai et al.)")
    p.add_argument("--steps", default=None, help="steps per view of each stage, e.g. S:200,I:600,J:800, C2F:1000, "
                   "CNN:1000,SEQ:300 (cai) or REF:300 (rstn+biclstm)")
    cai = p.add_argument_group("Cai et al.'s system and the refiner (--method cai / rstn+biclstm)")
    cai.add_argument("--direction", choices=("bi", "forward"), default="bi",
                     help="CLSTM directions: bi (top-down + bottom-up, TMI) or forward (top-down, MICCAI 2017)")
    cai.add_argument("--window", type=positive_int, default=None,
                     help="forward only: slice t sees slices t-W .. t (MICCAI 2017: 3; default: all previous)")
    cai.add_argument("--sequence-length", type=positive_int, default=5,
                     help="consecutive axial slices per training sequence")
    cai.add_argument("--crop", type=int, default=128, help="square training crop around the organ in pixels (0: "
                     "whole slices)")
    cai.add_argument("--batch-size", type=positive_int, default=2, help="3-slice crops per CNN step")
    cai.add_argument("--channels", type=positive_int, default=None,
                     help="width of every conv of pnet_msa / cai_miccai (paper: 64; default 64)")
    cai.add_argument("--unit-share", type=float, default=0.1,
                     help="share of the CNN steps each PNet-MSA unit trains before the next is added (from the "
                     "bottom; the last unit and the fusion train for the rest)")
    p.add_argument("--epochs", default=None, help="epochs of S,I,J (reference: 2,6,8); an epoch = the mean training "
                   "slices per view")
    p.add_argument("--noisy-steps", type=int, default=0, help="steps of fine-tuning with noisy data (mode N) after J")
    p.add_argument("--noisy-lr-factor", type=float, default=0.1, help="LR multiplier during the noisy stage (mode N)")
    p.add_argument("--prior-noise", type=float, default=0.0, metavar="SHARE",
                   help="share of noisy-stage steps whose fine rounds start from a perturbed truth (dilated, eroded, "
                   "shifted, boxed or blurred), so the model can refine a person's rough mask (segment --prior); "
                   "needs --noisy-steps; default 0")
    p.add_argument("--j-decay-every", type=int, default=None, help="halve the LR every N steps in J (default: 2 epochs "
                   "with --epochs, never with --steps)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                   help="sgd: the reference (momentum, per-group LRs); adamw: easier to train from scratch")
    p.add_argument("--lr", type=float, default=None, help="fine/saliency LR (default 1e-4 sgd, 1e-3 adamw)")
    p.add_argument("--coarse-lr-ratio", type=float, default=0.1, help="coarse LR / fine LR (reference 0.1)")
    p.add_argument("--momentum", type=float, default=0.99, help="SGD momentum (reference 0.99)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay of weights, not biases (reference)")
    p.add_argument("--slice-threshold", type=float, default=0.98,
                   help="train on slices whose organ area reaches the top 98 %% (<= 1), or this many pixels (> 1)")
    p.add_argument("--negative-fraction", type=float, default=0.0,
                   help="organ-free slices per organ slice (not in the reference)")
    p.add_argument("--init", default=None, help="model package folder or reference checkpoint ({view} in the path is "
                   "replaced by X/Y/Z); default: from scratch")
    p.add_argument("--no-bn-recalibration", action="store_true", help="keep the BatchNorm running statistics of "
                   "training (default: recompute them from training slices after each view, if the backbone has "
                   "BatchNorm)")
    p.add_argument("--bn-recalibration-samples", type=int, default=500, help="training slices per view for the "
                   "BatchNorm recalibration (0: all)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="save a resumable checkpoint every N steps (0: "
                   "only at the end of each view)")
    p.add_argument("--log-every", type=int, default=10, help="write the CSV/TensorBoard log every N steps")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="start again in an OUT that holds a previous run")
    p.add_argument("--stop-after", type=int, default=None, help="stop each view after this many steps (resume later)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: $OMP_NUM_THREADS when set, else one per core)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, data order, crop margins and "
                   "augmentations (a run is reproducible and resumes bit-exactly)")
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress output (a bar on a terminal, else one line per epoch)")
    p.set_defaults(func=run)


def _numbers(text: str, n: int, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise RSTNError(f"{option} '{text}' is invalid: give {n} numbers separated by commas.")
    return values


def load_cases(args: argparse.Namespace) -> tuple[list, dict, tuple[float, float, float] | None]:
    """Training cases (canonical, windowed or HU), their provenance for model.json, and the voxel spacing the
    model learns at (None for phantoms of mixed size)."""
    if args.phantoms is not None:
        size = parse_triple(args.phantom_shape, int)
        cases, provenance = phantom_cases(size, args.phantom_seed, args.phantoms)
        return cases, provenance, canonical_spacing(size)
    from ...training.data_cache import build_cache
    from ...training.datasets import open_dataset
    from ...training.training_data import kfold_split

    target = None if args.spacing == "native" else _numbers(args.spacing, 3, "--spacing")
    dataset = open_dataset(args.data, organ=args.organ, label_value=args.label_value)
    names = dataset.case_names()
    held_out: list[str] = []
    if args.fold is not None:
        names, held_out = kfold_split(names, args.folds, args.fold, convention=args.fold_convention)
    cache = build_cache(dataset, args.cache or args.out / "cache", names=names, on_bad_case=args.on_bad_case,
                        spacing=target)
    cached = cache.cases()
    cases = [TrainCase(c.name, c.image, c.label) for c in cached]
    spacings = np.array([c.spacing for c in cached])
    spacing = tuple(float(v) for v in (target or np.median(spacings, axis=0)))
    if target is None and np.any(spacings.max(0) > 1.1 * spacings.min(0)):
        log.warning("training cases differ in voxel spacing by more than 10 %% (%s to %s mm): consider --spacing",
                    spacings.min(0).round(3).tolist(), spacings.max(0).round(3).tolist())
    provenance = {"source": Path(args.data).resolve().name, "layout": dataset.layout, "organ": args.organ,
                  "label_value": dataset.label_value, "fold": args.fold, "folds": args.folds,
                  "fold_convention": args.fold_convention, "skipped": cache.skipped,
                  "spacing": "resampled" if target else "native (median recorded)"}
    if args.axial_slices:
        slice_cases, slice_info = _axial_slice_cases(args, spacing, {c.name: c for c in cached}, target is None,
                                                     held_out)
        cases += slice_cases
        provenance["axial_slices"] = slice_info
    return cases, provenance, spacing


def _axial_slice_cases(args: argparse.Namespace, spacing: tuple[float, float, float], cached: dict, native: bool,
                       held_out: list[str]) -> tuple[list, dict]:
    """--axial-slices: JPEG slices in HU at the model's in-plane spacing, view Z only; never a slice of a patient
    held out by --fold (the fold's test cases must stay unseen)."""
    from ...training.jpeg_slices import (
        ASSUMED_PIXEL_SPACING_MM,
        WindowFit,
        check_window_inside,
        fit_window_from_volumes,
        read_jpeg_slices,
        slice_sample,
    )

    slices = read_jpeg_slices(args.axial_slices, exclude_cases=held_out)
    if args.slices_window == "auto":
        if not native:
            raise RSTNError("--slices-window auto fits the window on the slices' own cases at their native "
                            "spacing: train with --spacing native, or give the window as low,high.")
        fit = fit_window_from_volumes(slices, {n: np.asarray(c.image) for n, c in cached.items()})
        window = fit["window"]
    else:
        low, high = _numbers(args.slices_window, 2, "--slices-window")
        window = WindowFit(low, high, float("nan"), float("nan"), 0)
    check_window_inside(window, *_numbers(args.hu_window, 2, "--hu-window"))
    pixel = args.slices_pixel_spacing or ASSUMED_PIXEL_SPACING_MM
    cases = []
    for s in slices:
        image, label = slice_sample(s, window, spacing, pixel_spacing=pixel)
        cases.append(TrainCase(f"slice_{s.name}", image, label, views=("Z",)))
    log.info("%d axial slices of %d cases, display window %.1f..%.1f HU", len(cases), len({s.case for s in slices}),
             window.low, window.high)
    return cases, {"source": Path(args.axial_slices).resolve().name, "slices": len(cases),
                   "window_hu": window.to_dict(), "pixel_spacing_mm": pixel, "excluded_cases": held_out}


def _train_config(args: argparse.Namespace, views: tuple[str, ...], schedule: tuple, j_decay: int,
                  spacing: tuple[float, float, float] | None) -> TrainConfig:
    """The TrainConfig the options ask for (the schedule resolved by ``training.schedule``)."""
    backbone_kwargs: dict = {}
    sequence_method = args.method in ("cai", "rstn+biclstm")
    backbone = args.backbone or ("pnet_msa" if args.method == "cai" else "fcn8s")
    if args.widths:
        backbone_kwargs["widths"] = tuple(int(w) for w in args.widths.split(","))
    if args.norm:
        backbone_kwargs["norm"] = args.norm
    if args.channels:
        backbone_kwargs["channels"] = args.channels
    return TrainConfig(
        views=views, backbone=backbone, backbone_kwargs=backbone_kwargs, method=args.method, T=args.T,
        loss="jaccard" if sequence_method else args.loss, schedule=schedule, j_decay_every=j_decay,
        noisy_lr_factor=args.noisy_lr_factor, prior_noise=args.prior_noise,
        optimizer="adamw" if sequence_method else args.optimizer,
        lr=args.lr if args.lr is not None else DEFAULT_LR["adamw" if sequence_method else args.optimizer],
        coarse_lr_ratio=args.coarse_lr_ratio, momentum=args.momentum, weight_decay=args.weight_decay,
        slice_threshold=args.slice_threshold, negative_fraction=args.negative_fraction, seed=args.seed,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, init=args.init,
        bn_recalibration=False if args.no_bn_recalibration else None,
        bn_recalibration_samples=args.bn_recalibration_samples,
        hu_window=_numbers(args.hu_window, 2, "--hu-window"), augment=_augment_config(args.augment),
        pretrained_encoder=args.pretrained_encoder, samples_per_step=args.samples_per_step,
        spacing=spacing, refiner_direction=args.direction, refiner_window=args.window,
        sequence_length=args.sequence_length, crop_size=args.crop, batch_size=args.batch_size,
        unit_share=args.unit_share,
    )


def _augment_config(name: str | None) -> AugmentConfig | None:
    """``--augment``: none, the basic set, or the real-CT recipe's (scanner and contrast-phase simulation too)."""
    if name is None:
        return None
    if name == "real-ct":
        return REAL_CT_AUGMENT
    return AugmentConfig()


def check_pretrained_encoder(args: argparse.Namespace) -> None:
    """Refuse a missing, unknown or misapplied encoder file before any data is read."""
    if args.pretrained_encoder is None:
        return
    if (args.backbone or "") != "mobilenet_unet":
        raise OptionsError(f"--pretrained-encoder needs --backbone mobilenet_unet, not {args.backbone or 'fcn8s'}.",
                           fix="Add --backbone mobilenet_unet, or drop --pretrained-encoder.")
    load_encoder_weights(args.pretrained_encoder)


def _package_metadata(args: argparse.Namespace, provenance: dict) -> dict:
    """model.json's name, organ and data provenance (the trainer adds the training record)."""
    metadata = {"name": args.name or args.out.name, "organ": args.organ, "training": {"data": provenance}}
    if args.label_value is not None:
        metadata["organ"] = default_metadata(metadata["name"], args.organ, args.label_value)["organ"]
    if args.phantoms is not None:
        metadata["description"] = "Trained on synthetic phantoms only: a demo model, not for clinical images."
        metadata["synthetic"] = True
    return metadata


def run(args: argparse.Namespace) -> int:
    stages = ScheduleOptions(method=args.method, steps=args.steps, epochs=args.epochs, noisy_steps=args.noisy_steps,
                             j_decay_every=args.j_decay_every)
    views = tuple(v for v in args.views.upper() if v in VIEWS)
    if args.method == "cai":
        if args.views.upper() not in ("Z", "XYZ"):
            raise RSTNError("Cai et al.'s CNN segments axial slices: --method cai trains view Z only (drop --views).")
        views = ("Z",)
    if args.method == "rstn+biclstm" and not args.init:
        raise RSTNError("--method rstn+biclstm refines a trained RSTN: give its model package with --init.")
    if args.method == "cai" and args.init:
        raise RSTNError("--method cai trains from scratch, as the paper does: drop --init.")
    check_pretrained_encoder(args)
    cases, provenance, spacing = load_cases(args)
    schedule, j_decay = stages.resolve(cases, views, args.slice_threshold)
    cfg = _train_config(args, views, schedule, j_decay, spacing)
    package = train(cases, cfg, args.out, resume=args.resume, overwrite=args.overwrite, device=args.device,
                    progress=not args.quiet, stop_after=args.stop_after,
                    package_metadata=_package_metadata(args, provenance))
    if package is not None:
        print(f"model package written to {package}")
    elif args.stop_after is not None:
        print(f"stopped after {args.stop_after} steps; continue with --resume")
    return 0
