"""Training of RSTN (one model per view) with the paper's joint loss, and of the stage-wise C2F baseline.

Why this shape: a step is a pure function of (weights, optimiser state, global step, seed) -- the data order,
crop margins and dropout RNG all derive from the step number or from saved state -- so ``--resume`` ends
bit-identical to an uninterrupted run, and DDP ranks stay in lock-step without a sampler object.

Modes (the reference's, per step):
  S  fine input = raw image, cropped by the label;
  I  fine input = image * g(prob), cropped by the label;
  J  fine input = image * g(prob), cropped by the previous prediction (the label if it is empty);
  N  "fine-tuning with noisy data": as J, but always from the prediction with random margins, at a lower LR;
  C2F the stage-wise baseline: coarse and fine nets trained separately (no saliency, no shared gradient), the
      fine net on the ground-truth 3-D box with a random 10-20 px frame.
The fine stage is unrolled T times; loss = l0 * L(coarse) + sum_t lt * L(fine_t), 2*l0 = lt = 2/(2T+1).

Where the parts live: ``config`` (TrainConfig), ``schedule`` (stages, LR factor), ``optimizer`` (parameter
groups), ``step`` (one step's input, loss and update), ``checkpoints`` (weights in and out), ``run_log``
(progress, CSV, TensorBoard), ``view_training`` (one view as named steps). This module trains every view and
writes the model package; it also re-exports the names scripts import from ``training.trainer``.
Cai et al.'s system and the refiner on a frozen RSTN train in ``cai_training`` (one network, no views); their
packages are written here too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from ..distributed import DistInfo, init_distributed
from ..errors import OutputExistsError, RSTNError
from ..io.model_package import save_model_package
from ..models.model import RSTN
from .checkpoints import checkpoint_path, initial_model, load_final_model
from .config import MODES, TrainConfig
from .optimizer import make_optimizer, param_groups
from .run_log import CsvLog
from .schedule import LRFactor, stage_at
from .step import StepModule, sample_tensors
from .step_loop import TrainRunOptions
from .training_data import TrainCase, phantom_cases
from .view_training import ViewTraining, recalibrate_bn

__all__ = [
    "MODES", "CsvLog", "LRFactor", "TrainRunOptions", "StepModule", "TrainCase", "TrainConfig", "ViewTraining",
    "initial_model", "make_optimizer", "param_groups", "phantom_cases", "recalibrate_bn", "sample_tensors",
    "stage_at", "train", "train_view",
]


# --resume, --device, --quiet and --stop-after of `pancreas-rstn train`, one keyword each, as scripts call it
def train_view(cases: Sequence[TrainCase], cfg: TrainConfig, view: str, out: Path, resume: bool = False,  # noqa: PLR0913
               device: str = "auto", progress: bool | str = True, stop_after: int | None = None,
               dist_info: DistInfo | None = None) -> tuple[RSTN, dict]:
    """Train (or resume) one view's RSTN; returns the model (on CPU, eval mode) and a summary dict.

    ``progress``: True (a bar on a terminal, a line per epoch in a pipe), False (nothing) or a mode of
    ``progress.Progress``. ``stop_after``: stop after that many global steps (leaves a checkpoint; used to test
    ``resume``)."""
    options = TrainRunOptions(resume=resume, device=device, progress=progress, stop_after=stop_after)
    return ViewTraining(cases, cfg, view, Path(out), options, dist_info or DistInfo()).run()


# the options of `pancreas-rstn train` (--resume, --overwrite, --device, --quiet, --stop-after), one keyword each
def train(cases: Sequence[TrainCase], cfg: TrainConfig, out: Path, resume: bool = False,  # noqa: PLR0913
          overwrite: bool = False, device: str = "auto", progress: bool | str = True, stop_after: int | None = None,
          package_metadata: dict | None = None) -> Path | None:
    """Train every view, then write the model package to ``out/model``. Returns the package path (None on
    non-main DDP ranks or when stopped early)."""
    out = Path(out)
    dist_info = init_distributed()
    _refuse_to_clobber(out, resume or overwrite)
    if cfg.method in ("cai", "rstn+biclstm"):
        if dist_info.world > 1:
            raise RSTNError(f"--method {cfg.method} trains in one process; run it without torchrun.")
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        options = TrainRunOptions(resume=resume, device=device, progress=progress, stop_after=stop_after)
        return _train_sequence_method(cases, cfg, out, options, package_metadata, overwrite or resume)
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    options = TrainRunOptions(resume=resume, device=device, progress=progress, stop_after=stop_after)
    models: dict[str, RSTN] = {}
    summaries = []
    for view in cfg.views:
        final = checkpoint_path(out, view, "final")
        if resume and final.exists():
            models[view], summary = load_final_model(cfg, final)
            summaries += [summary] if summary else []
            continue
        model, summary = ViewTraining(cases, cfg, view, out, options, dist_info).run()
        summaries.append(summary)
        if summary["final_step"] < cfg.total_steps:
            return None
        models[view] = model
    if dist_info.world > 1:
        dist.barrier()
    if not dist_info.main:
        return None
    metadata = _package_metadata(cfg, cases, summaries, dist_info.world, package_metadata)
    return save_model_package(out / "model", models, metadata, overwrite=overwrite or resume)


def _train_sequence_method(cases: Sequence[TrainCase], cfg: TrainConfig, out: Path, options: TrainRunOptions,
                           package_metadata: dict | None, overwrite: bool) -> Path | None:
    """Cai et al.'s CNN + refiner, or a refiner on the frozen RSTN package ``cfg.init``; writes OUT/model."""
    from ..models.clstm import RefinerConfig
    from .cai_training import SequenceTraining

    rstn = None
    probabilities = None
    if cfg.method == "rstn+biclstm":
        rstn, probabilities = _frozen_rstn_probabilities(cases, cfg, options.device)
    model, summary = SequenceTraining(cases, cfg, out, options, probabilities).run()
    if summary["final_step"] < cfg.total_steps:
        return None
    metadata = _package_metadata(cfg, cases, [summary], 1, package_metadata)
    if rstn is None:
        refiner_config = RefinerConfig(cfg.refiner_direction, cfg.refiner_window, "cnn")
        return save_model_package(out / "model", {"Z": model.cnn}, metadata, overwrite=overwrite,
                                  refiner=model.refiner, refiner_config=refiner_config)
    refiner_config = RefinerConfig(cfg.refiner_direction, cfg.refiner_window, "rstn")
    dropped = ("files", "created", "refiner", "schema_version", "evaluation")  # the RSTN's own, not the package's
    meta = {k: v for k, v in rstn.metadata.items() if k not in dropped}
    meta["name"] = metadata.get("name") or f"{rstn.metadata['name']}+biclstm"
    meta["training"] = {**rstn.metadata.get("training", {}), "refiner": metadata["training"]}
    meta["refined_from"] = {"name": rstn.metadata["name"], "files": rstn.metadata["files"]}
    return save_model_package(out / "model", rstn.models, meta, overwrite=overwrite, refiner=model,
                              refiner_config=refiner_config)


def _frozen_rstn_probabilities(cases: Sequence[TrainCase], cfg: TrainConfig, device: str) -> tuple:
    """The RSTN package of ``cfg.init`` and its final probability on every training volume (None for single
    slices), run as ``segment`` runs it with default settings."""
    import numpy as np

    from ..engine.inference import InferenceConfig, RSTNEngine
    from ..engine.resampling import needs_resampling
    from ..io.model_package import load_model_package

    if not cfg.init or not Path(cfg.init).is_dir():
        raise RSTNError("--method rstn+biclstm refines a trained RSTN: give its model package with --init.")
    package = load_model_package(cfg.init)
    if package.method != "rstn":
        raise RSTNError(f"--init {cfg.init} is a {package.method.upper()} package; rstn+biclstm needs an RSTN one.")
    if cfg.spacing is not None and package.spacing is not None and needs_resampling(cfg.spacing, package.spacing):
        raise RSTNError(f"The training data are at {cfg.spacing} mm and the RSTN at {package.spacing} mm: train the "
                        f"refiner at the RSTN's spacing (--spacing {','.join(map(str, package.spacing))}).")
    engine = RSTNEngine(package.models, InferenceConfig(views=package.views), device=device, window=package.window)
    probabilities = []
    for case in cases:
        if "Z" not in case.views or case.label.shape[2] < cfg.sequence_length:
            probabilities.append(None)
            continue
        hu = np.asarray(case.image)
        if hu.dtype == np.float32:  # phantoms come windowed to [0, 1]: back to HU for the engine
            hu = cfg.window.low + hu * (cfg.window.high - cfg.window.low)
        *_, last = engine.run(hu)
        probabilities.append(last.probability)
    return package, probabilities


def _refuse_to_clobber(out: Path, allowed: bool) -> None:
    """A folder that holds a run or a package is continued (--resume) or replaced (--overwrite), never mixed."""
    if allowed:
        return
    ckpt_dir = out / "checkpoints"
    if ckpt_dir.exists() and any(ckpt_dir.iterdir()):
        raise OutputExistsError(f"{out} already holds a training run; pass --resume to continue it or "
                                "--overwrite to start again (old checkpoints are replaced).")
    if (out / "model").exists():
        raise OutputExistsError(f"{out / 'model'} already exists; choose another --out or pass --overwrite.")


def _package_metadata(cfg: TrainConfig, cases: Sequence[TrainCase], summaries: list[dict], world: int,
                      package_metadata: dict | None) -> dict:
    """model.json's fields: the caller's, plus the training record (config, cases, per-view summaries)."""
    metadata = dict(package_metadata or {})
    training = dict(metadata.pop("training", {}))
    config = cfg.to_dict()
    if config.get("init"):  # the name, not the training machine's path (model.json travels)
        config["init"] = Path(str(config["init"]).replace("{view}", "*")).name
    training.update({"config": config, "cases": [c.name for c in cases], "views": summaries,
                     "world_size": world, "torch": torch.__version__})
    metadata["training"] = training
    metadata.setdefault("views", list(cfg.views))
    metadata.setdefault("hu_window", cfg.window.to_dict())
    if cfg.spacing is not None:
        metadata.setdefault("spacing", list(cfg.spacing))
    if cfg.method in ("c2f", "cai"):
        metadata.setdefault("method", cfg.method)
    return metadata
