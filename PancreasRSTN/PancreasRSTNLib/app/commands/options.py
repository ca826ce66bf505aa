"""Options every command that computes shares: the engine's settings, threads and quietness, argument types that
refuse nonsense (``--batch-size 0``) at parse time, and the model a run's arguments choose."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ...engine.config import InferenceConfig, RunSettings

if TYPE_CHECKING:
    from ...io.model_package import ModelPackage
    from ...io.user_models import ModelInfo


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return value


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: $OMP_NUM_THREADS when set, else one per core). On a busy "
                   "machine fewer threads can be faster")
    p.add_argument("--quiet", action="store_true", help="no progress output (errors and results still print)")


def apply_threads(args: argparse.Namespace) -> None:
    """--threads wins; else torch already follows OMP_NUM_THREADS (read when torch starts)."""
    threads = getattr(args, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs the engine."""
    d = InferenceConfig()
    p.add_argument("--thr", type=float, default=d.thr, help="stop when the inter-round DSC reaches this")
    p.add_argument("--max-iter", type=int, default=d.max_iter, help="maximum fine rounds (default: the model's "
                   "validated count, model.json inference.max_iter, else the reference's 10)")
    p.add_argument("--prob-threshold", type=float, default=d.prob_threshold, help="probability threshold")
    p.add_argument("--coarse-weight", type=float, default=None, metavar="W",
                   help="weight of the coarse round in every fine round's probability, in [0, 1): keeps the fine "
                   "rounds from drifting (default: the model's validated weight, model.json inference.coarse_weight, "
                   "else 0 as in the paper)")
    p.add_argument("--previous-weight", type=float, default=None, metavar="W",
                   help="weight of the previous fine round in every later fine round's probability, in [0, 1): the "
                   "rounds settle instead of swinging (default: the model's validated weight, model.json "
                   "inference.previous_weight, else 0 as in the paper)")
    p.add_argument("--margin", type=int, default=d.margin, help="crop margin in pixels of the model's grid")
    p.add_argument("--views", default=None, help="views to use, e.g. XYZ or Z (default: every view of the model)")
    p.add_argument("--no-postprocess", action="store_true", help="keep all connected components")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="triplets per batch (default: adapted to the free memory)")
    p.add_argument("--crop-bucket", type=int, default=d.crop_bucket,
                   help="grow fine crops to multiples of this to batch more of them (faster; 1 = exact reference "
                   "boxes)")
    p.add_argument("--coarse-downsample", type=int, default=1, choices=[1, 2, 3, 4],
                   help="run the coarse stage on slices pooled by this factor (faster on CPU; 1 = faithful)")
    p.add_argument("--no-resample", action="store_true",
                   help="run at the CT's own voxel spacing (the reference's behaviour) even when it differs from the "
                   "model's by more than 10 %%")


def config_from_args(args: argparse.Namespace, model_views: tuple[str, ...] = ("X", "Y", "Z")) -> InferenceConfig:
    """The engine's settings the arguments ask for; ``--views`` defaults to every view of the model."""
    views = tuple(args.views.upper()) if args.views else tuple(model_views)
    return InferenceConfig(
        thr=args.thr, max_iter=args.max_iter, prob_threshold=args.prob_threshold, margin=args.margin,
        views=views, postprocess=not args.no_postprocess, precision=args.precision,
        batch_size=args.batch_size, coarse_downsample=args.coarse_downsample,
        crop_bucket=args.crop_bucket, prior_weight=getattr(args, "prior_weight", None),
        coarse_weight=args.coarse_weight, previous_weight=args.previous_weight,
    )


def settings_from_args(args: argparse.Namespace, model_views: tuple[str, ...] = ("X", "Y", "Z")) -> RunSettings:
    """The run's settings record (``RunSettings``) the arguments ask for."""
    return RunSettings(config_from_args(args, model_views), device=args.device, resample=not args.no_resample,
                       allow_non_ct=args.allow_non_ct)


def load_model_from_args(args: argparse.Namespace) -> tuple[ModelInfo, ModelPackage, RunSettings]:
    """The model ``--model``/``--organ`` choose, loaded with the ``--views`` asked, and the run's settings."""
    from ...io.model_package import load_model_package
    from ...io.user_models import resolve_model

    model = resolve_model(args.model, args.organ)
    package = load_model_package(model.path, views=tuple(args.views.upper()) if args.views else None)
    return model, package, settings_from_args(args, package.views)
