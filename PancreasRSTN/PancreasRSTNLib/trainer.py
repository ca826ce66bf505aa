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
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augmentation import AugmentConfig, augment_triplet
from .bn_recalibration import has_batchnorm, recalibrate_view
from .distributed import DistInfo, init_distributed, pick_device
from .errors import DatasetError, ModelPackageError, OutputExistsError, RSTNError
from .intensity import HUWindow
from .losses import get_loss, joint_weights
from .model import RSTN, RSTNConfig, SaliencyConfig, load_reference_state_dict
from .training_data import (
    bounding_box,
    crop_margins,
    epoch_order,
    labels_for_view,
    triplet,
    view_axis,
    view_samples,
)

log = logging.getLogger(__name__)

MODES = ("S", "I", "J", "N", "C2F")


@dataclass
class TrainCase:
    """One training case in the canonical layout: ``image`` either windowed to [0, 1] (float32) or HU (int16,
    e.g. a cache memmap; windowed per triplet on the fly), ``label`` the organ mask (uint8/bool). ``views``: the
    views it gives slices of (a single axial slice: Z only)."""

    name: str
    image: np.ndarray
    label: np.ndarray
    views: tuple[str, ...] = ("X", "Y", "Z")


def phantom_cases(size: tuple[int, int, int], first_seed: int, count: int) -> tuple[list[TrainCase], dict]:
    """Training cases from synthetic phantoms (seeds first_seed .. first_seed+count-1), plus their provenance."""
    from .intensity import DEFAULT_WINDOW
    from .phantom import make_phantom_canonical

    seeds = range(first_seed, first_seed + count)
    cases = []
    for seed in seeds:
        hu, label = make_phantom_canonical(size, seed=seed)
        cases.append(TrainCase(f"phantom_{seed:05d}", DEFAULT_WINDOW.apply(hu), label))
    provenance = {"source": "synthetic phantoms (pancreas-rstn phantom)", "shape": list(size),
                  "seeds": [seeds.start, seeds.stop - 1]}
    return cases, provenance


@dataclass
class TrainConfig:
    views: tuple[str, ...] = ("X", "Y", "Z")
    backbone: str = "fcn8s"
    backbone_kwargs: dict = field(default_factory=dict)
    saliency_kernels: tuple[int, ...] = (3, 5)
    method: str = "rstn"  # "rstn" or "c2f"
    T: int = 1
    loss: str = "dsc"
    #: (mode, steps per view) stages, run in order with one optimiser; the reference is S -> I -> J.
    schedule: tuple[tuple[str, int], ...] = (("S", 200), ("I", 600), ("J", 800))
    j_decay_every: int = 0  # halve the LR every this many steps in J (reference: 2 epochs); 0 = never
    noisy_lr_factor: float = 0.1
    optimizer: str = "sgd"  # "sgd" (reference) or "adamw"
    lr: float = 1e-4  # saliency + fine weights; coarse = lr * coarse_lr_ratio; biases x bias_lr_ratio
    coarse_lr_ratio: float = 0.1
    bias_lr_ratio: float = 2.0
    momentum: float = 0.99
    weight_decay: float = 5e-4
    slice_threshold: float = 0.98
    negative_fraction: float = 0.0  # organ-free slices per organ slice (not in the reference)
    margin_random_prob: float = 0.5
    margin_high: int = 40
    margin_fixed: int = 20
    c2f_frame: tuple[int, int] = (10, 20)
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end
    log_every: int = 10
    amp: str = "auto"  # "auto" (bf16/fp16 on CUDA, fp32 on CPU), "off"
    init: str | None = None  # None (scratch), a model package folder, or a reference checkpoint ("{view}" in path)
    #: After a view's training, recompute BatchNorm running stats from this many training slices (see
    #: bn_recalibration.py; batch-1 training leaves them stale). None: on when the backbone has BatchNorm.
    bn_recalibration: bool | None = None
    bn_recalibration_samples: int = 500  # <= 0: every training slice of the view
    hu_window: tuple[float, float] = (-100.0, 240.0)  # applied to HU cases (the reference's window by default)
    augment: AugmentConfig | None = None  # None: no augmentation (the reference)
    spacing: tuple[float, float, float] | None = None  # the voxel spacing of the training data (model.json)

    def __post_init__(self) -> None:
        self.views = tuple(self.views)
        self.schedule = tuple((str(m), int(n)) for m, n in self.schedule)
        self.hu_window = tuple(float(v) for v in self.hu_window)
        if len(self.hu_window) != 2 or self.hu_window[1] <= self.hu_window[0]:
            raise RSTNError(f"HU window {self.hu_window} invalid: give low,high with low < high.")
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.spacing is not None:
            self.spacing = tuple(float(v) for v in self.spacing)
        for m, n in self.schedule:
            if m not in MODES:
                raise RSTNError(f"Unknown training mode '{m}': use S, I, J, N (noisy fine-tuning) or C2F.")
            if n < 0:
                raise RSTNError(f"Stage {m} has {n} steps; steps must be >= 0.")
        if self.method == "c2f" and any(m != "C2F" for m, _ in self.schedule):
            raise RSTNError("The c2f method trains only in mode C2F: use --schedule C2F:<steps>.")
        if self.method == "rstn" and any(m == "C2F" for m, _ in self.schedule):
            raise RSTNError("Mode C2F belongs to --method c2f.")
        if self.optimizer not in ("sgd", "adamw"):
            raise RSTNError(f"Unknown optimizer '{self.optimizer}': use sgd or adamw.")
        for v in self.views:
            view_axis(v)
        joint_weights(self.T)
        get_loss(self.loss)

    @property
    def total_steps(self) -> int:
        return sum(n for _, n in self.schedule)

    @property
    def window(self) -> HUWindow:
        return HUWindow(*self.hu_window)

    def rstn_config(self) -> RSTNConfig:
        return RSTNConfig(backbone=self.backbone, saliency=SaliencyConfig(tuple(self.saliency_kernels)),
                          backbone_kwargs=dict(self.backbone_kwargs))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["views"] = list(self.views)
        d["schedule"] = [[m, n] for m, n in self.schedule]
        d["saliency_kernels"] = list(self.saliency_kernels)
        d["c2f_frame"] = list(self.c2f_frame)
        d["hu_window"] = list(self.hu_window)
        d["augment"] = None if self.augment is None else self.augment.to_dict()
        d["spacing"] = None if self.spacing is None else list(self.spacing)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["schedule"] = tuple((m, n) for m, n in d.get("schedule", ()))
        for k in ("views", "saliency_kernels", "c2f_frame", "hu_window"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# ----------------------------------------------------------------------------------------------------------
# one step


class StepModule(nn.Module):
    """Wraps an RSTN so that a whole unrolled training step is one ``forward`` (what DDP needs)."""

    def __init__(self, model: RSTN, loss_fn: Callable, T: int) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.T = T
        self.w0, self.wt = joint_weights(T)

    @staticmethod
    def _fine_full(model: RSTN, inp: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        """Fine probability on the full slice: the crop's sigmoid pasted into zeros (the reference's uncrop
        with -9999999 logits)."""
        a0, a1, b0, b1 = box
        h, w = inp.shape[-2:]
        prob = torch.sigmoid(model.fine(inp[..., a0:a1, b0:b1]).float())
        return F.pad(prob, (b0, w - b1, a0, h - a1))

    def forward(self, x: torch.Tensor, y: torch.Tensor, mode: str, margins: np.ndarray,
                c2f_box: tuple[int, int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        prob = torch.sigmoid(model.coarse(x).float())
        coarse_loss = self.loss_fn(prob, y)
        label_np = y[0].detach().cpu().numpy() > 0.5
        if mode == "C2F":
            fine = self._fine_full(model, x, c2f_box)
            fine_loss = self.loss_fn(fine, y)
            return coarse_loss + fine_loss, coarse_loss, fine_loss  # independent nets: plain sum
        total = self.w0 * coarse_loss
        prev = prob
        label_box = bounding_box(label_np, margins)
        fine_loss = coarse_loss
        for _ in range(self.T):
            if mode in ("S", "I"):
                box = label_box
            else:
                box = bounding_box(prev[0].detach().cpu().numpy() >= 0.5, margins) or label_box
            if box is None:
                # An organ-free slice (--negative-fraction) with nothing predicted: at test time the fine stage
                # would not run here, so it does not train here either (only the coarse net learns silence).
                break
            inp = x if mode == "S" else x * model.saliency(prev)
            fine = self._fine_full(model, inp, box)
            fine_loss = self.loss_fn(fine, y)
            total = total + self.wt[0] * fine_loss
            prev = fine
        return total, coarse_loss, fine_loss


# ----------------------------------------------------------------------------------------------------------
# optimiser, schedule


def param_groups(model: RSTN, cfg: TrainConfig) -> list[dict]:
    """The reference's groups: coarse (lr x coarse_lr_ratio) vs saliency+fine (lr); weights with decay vs
    biases and norm parameters (lr x bias_lr_ratio, no decay). Frozen (bilinear) weights are left out."""
    groups: dict[tuple[str, str], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "coarse" if name.startswith("coarse_model.") else "fine"
        kind = "bias" if p.ndim <= 1 else "weight"
        groups.setdefault((part, kind), []).append(p)
    out = []
    for (part, kind), params in sorted(groups.items()):
        lr = cfg.lr * (cfg.coarse_lr_ratio if part == "coarse" else 1.0) * (cfg.bias_lr_ratio if kind == "bias" else 1.0)
        out.append({"params": params, "lr": lr, "weight_decay": cfg.weight_decay if kind == "weight" else 0.0,
                    "name": f"{part}_{kind}"})
    return out


def make_optimizer(model: RSTN, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def stage_at(cfg: TrainConfig, step: int) -> tuple[str, int]:
    """(mode, first step of that stage) at a global step of one view."""
    start = 0
    for mode, n in cfg.schedule:
        if step < start + n:
            return mode, start
        start += n
    return cfg.schedule[-1][0], start - cfg.schedule[-1][1]


def LRFactor(cfg: TrainConfig) -> Callable[[int], float]:  # noqa: N802 (reads like the class it replaces)
    """LR multiplier at a step: halves every ``j_decay_every`` steps in J, ``noisy_lr_factor`` in N.

    A plain function (not an object), so LambdaLR's state_dict holds no pickled config and checkpoints load
    with ``weights_only=True``; the schedule is rebuilt from the config on resume."""

    def factor(step: int) -> float:
        mode, start = stage_at(cfg, step)
        if mode == "J" and cfg.j_decay_every > 0:
            return 0.5 ** ((step - start) // cfg.j_decay_every)
        if mode == "N":
            return cfg.noisy_lr_factor
        return 1.0

    return factor


# ----------------------------------------------------------------------------------------------------------
# initialisation


def initial_model(cfg: TrainConfig, view: str) -> RSTN:
    """From scratch (seeded), from a model package, or from a reference / our own checkpoint."""
    model = RSTN(cfg.rstn_config())
    if not cfg.init:
        return model
    path = Path(cfg.init.replace("{view}", view))
    if path.is_dir():
        from .model_package import load_model_package

        package = load_model_package(path, device="cpu")
        if view not in package.models:
            raise ModelPackageError(f"The model package {path} has no view {view}; train other views or drop --init.")
        load_reference_state_dict(model, package.models[view].state_dict(), source=f"model package {path}")
        return model
    if not path.is_file():
        raise ModelPackageError(f"--init {path} is neither a model package folder nor a checkpoint file.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # our own training checkpoint
    load_reference_state_dict(model, state, source=str(path))
    return model


# ----------------------------------------------------------------------------------------------------------
# the training loop of one view


class CsvLog:
    """Append-only CSV of per-step metrics; on resume, rows after the resumed step are dropped."""

    FIELDS = ("view", "step", "mode", "loss", "coarse_loss", "fine_loss", "lr", "slices_per_s", "elapsed_s")

    def __init__(self, path: Path, view: str, resume_step: int) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if not (r["view"] == view and int(r["step"]) > resume_step)]
            with path.open("w", newline="") as f:
                w = csv.DictWriter(f, self.FIELDS)
                w.writeheader()
                w.writerows(rows)
        else:
            with path.open("w", newline="") as f:
                csv.DictWriter(f, self.FIELDS).writeheader()

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.FIELDS).writerow(row)


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional [train] dependency
        log.warning("tensorboard is not installed; logging to CSV only (pip install 'pancreas-rstn[train]').")
        return None
    return SummaryWriter(str(path))


def _c2f_boxes(cases: Sequence[TrainCase], view: str) -> list[tuple[int, int, int, int] | None]:
    """Each case's ground-truth 3-D box projected onto the view's slice plane (a0, a1, b0, b1); None for a case
    without slices of this view."""
    axis = view_axis(view)
    out: list[tuple[int, int, int, int] | None] = []
    for case, label in zip(cases, labels_for_view(cases, view), strict=True):
        if label is None:
            out.append(None)
            continue
        proj = np.asarray(label).any(axis=axis)
        box = bounding_box(proj[None], (0, 0, 0, 0))
        if box is None:
            raise DatasetError(f"Case {case.name} has an empty label; remove it or pick the right organ.")
        out.append(box)
    return out


def _framed(box: tuple[int, int, int, int], frame: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    a0, a1, b0, b1 = box
    return (max(a0 - int(frame[0]), 0), min(a1 + int(frame[1]), shape[0]),
            max(b0 - int(frame[2]), 0), min(b1 + int(frame[3]), shape[1]))


def _checkpoint_path(out: Path, view: str, tag: str) -> Path:
    return out / "checkpoints" / f"{view}_{tag}.pt"


def _save_checkpoint(path: Path, model: RSTN, opt, sched, scaler, step: int, cfg: TrainConfig, view: str) -> None:
    state = {
        "view": view,
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "config": cfg.to_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind


def recalibrate_bn(model: RSTN, cases: Sequence[TrainCase], cfg: TrainConfig, view: str) -> dict:
    """BatchNorm recalibration of a trained view as configured (``cfg.bn_recalibration``; None = if the backbone
    has BatchNorm): inference-style pass (coarse, then J-style fine crops with the fixed margin, ``cfg.T``
    rounds) over ``cfg.bn_recalibration_samples`` seeded training slices. Deterministic; weights untouched."""
    enabled = has_batchnorm(model) if cfg.bn_recalibration is None else bool(cfg.bn_recalibration)
    if not enabled:
        return {"applied": False, "reason": "disabled" if cfg.bn_recalibration is False else "no BatchNorm layers"}
    t0 = time.perf_counter()
    info = recalibrate_view(model, cases, view, cfg.bn_recalibration_samples, cfg.slice_threshold,
                            seed=cfg.seed * 1000 + "XYZ".index(view), rounds=cfg.T, margin=cfg.margin_fixed,
                            window=cfg.window)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("view %s: BatchNorm statistics recalibrated on %s slices", view, info.get("samples"))
    return info


def sample_tensors(case: TrainCase, view: str, j: int, cfg: TrainConfig, rng: np.random.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, label) triplets of one training sample, (1, 3, H, W) float32: windowed to [0, 1] and, if the
    config asks, augmented with draws from ``rng`` (the step's own generator, so resuming replays them)."""
    x_np = triplet(case.image, view, j)
    y_np = triplet(case.label, view, j)
    is_hu = x_np.dtype != np.float32  # HU (int16 cache) or already windowed (phantoms)
    window = cfg.window
    if cfg.augment is None:
        x_np = window.apply(x_np) if is_hu else x_np
        x = torch.from_numpy(np.ascontiguousarray(x_np, dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(y_np, dtype=np.float32))
        return x[None], y[None]
    x = torch.from_numpy(np.ascontiguousarray(x_np, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(y_np, dtype=np.float32))
    if is_hu:
        x, y = augment_triplet(x, y, rng, cfg.augment)
        x = window.apply(x)
    else:
        x, y = augment_triplet(x, y, rng, cfg.augment, hu_per_unit=window.high - window.low, hu_offset=window.low)
        x = x.clamp(0.0, 1.0)
    return x[None].contiguous(), y[None].contiguous()


def train_view(cases: Sequence[TrainCase], cfg: TrainConfig, view: str, out: Path, resume: bool = False,
               device: str = "auto", progress: bool | str = True, stop_after: int | None = None,
               dist_info: DistInfo | None = None) -> tuple[RSTN, dict]:
    """Train (or resume) one view's RSTN; returns the model (on CPU, eval mode) and a summary dict.

    ``progress``: True (a bar on a terminal, a line per epoch in a pipe), False (nothing) or a mode of
    ``progress.Progress``. ``stop_after``: stop after that many global steps (leaves a checkpoint; used to test
    ``resume``)."""
    from .progress import Progress, progress_mode

    shown = progress if isinstance(progress, str) else progress_mode(quiet=not progress)
    dist_info = dist_info or DistInfo()
    dev = pick_device(device, dist_info)
    view_idx = "XYZ".index(view)
    samples = view_samples(labels_for_view(cases, view), view, cfg.slice_threshold, cfg.negative_fraction, cfg.seed)
    if not samples:
        raise DatasetError(f"No training slices for view {view}: every label is empty. Check --organ / --label-value.")
    n_per_rank = len(epoch_order(len(samples), 0, 0, dist_info.rank, dist_info.world))
    if n_per_rank == 0:
        raise DatasetError(f"{len(samples)} training slices cannot be shared by {dist_info.world} processes.")
    c2f_boxes = _c2f_boxes(cases, view) if cfg.method == "c2f" else None

    torch.manual_seed(cfg.seed * 1009 + view_idx)
    model = initial_model(cfg, view).to(dev)
    model.train()
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRFactor(cfg))
    use_amp = cfg.amp == "auto" and dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
    step_module: nn.Module = StepModule(model, get_loss(cfg.loss), cfg.T)
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_module = DDP(step_module, device_ids=[dev.index] if dev.type == "cuda" else None,
                          find_unused_parameters=True)

    start = 0
    last = _checkpoint_path(out, view, "last")
    if resume and last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start = int(state["step"])
        if dist_info.main:
            log.info("view %s: resumed at step %d from %s", view, start, last)

    total = cfg.total_steps
    end = total if stop_after is None else min(total, stop_after)
    csv_log = CsvLog(out / "logs" / "train_log.csv", view, start) if dist_info.main else None
    tb = _tensorboard(out / "logs" / "tensorboard") if dist_info.main else None
    bar = Progress(shown if dist_info.main else "quiet", total=total - start, desc=f"train {view}", unit="step",
                   fraction=False).__enter__()
    t0 = time.perf_counter()
    running = None
    summary: dict = {"view": view, "steps": total, "samples": len(samples)}
    step = start
    while step < end:
        mode, _ = stage_at(cfg, step)
        epoch, pos = divmod(step, n_per_rank)
        order = epoch_order(len(samples), cfg.seed * 1000 + view_idx, epoch, dist_info.rank, dist_info.world)
        sample = samples[int(order[pos])]
        case = cases[sample.case]
        rng = np.random.default_rng([cfg.seed, view_idx, step, dist_info.rank])
        prob = 1.0 if mode == "N" else cfg.margin_random_prob
        margins = crop_margins(rng, prob, 0, cfg.margin_high, cfg.margin_fixed)
        x, y = sample_tensors(case, view, sample.j, cfg, rng)
        x, y = x.to(dev), y.to(dev)
        c2f_box = None
        if c2f_boxes is not None:
            frame = rng.integers(cfg.c2f_frame[0], cfg.c2f_frame[1] + 1, size=4)
            c2f_box = _framed(c2f_boxes[sample.case], frame, tuple(x.shape[-2:]))
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
            loss, coarse_loss, fine_loss = step_module(x, y, mode, margins, c2f_box)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        sched.step()
        step += 1
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise RSTNError(f"The training loss became {lv} at step {step} (view {view}); lower --lr.")
        running = lv if running is None else 0.95 * running + 0.05 * lv
        lr = opt.param_groups[-1]["lr"]
        bar.advance(1)
        if step % n_per_rank == 0 or step == end:  # one line per epoch (in a pipe; above the bar on a terminal)
            elapsed = time.perf_counter() - t0
            rate = (step - start) / max(elapsed, 1e-9)
            eta = (end - step) / max(rate, 1e-9)
            bar.line(f"train {view}: epoch {step / n_per_rank:.1f}, step {step}/{total}, mode {mode}, loss "
                     f"{running:.4f}, lr {lr:.2e}, {rate * dist_info.world:.2f} steps/s, ETA {eta / 60:.1f} min")
        if step % max(cfg.log_every, 1) == 0 or step == end:
            elapsed = time.perf_counter() - t0
            rate = (step - start) * dist_info.world / max(elapsed, 1e-9)
            bar.advance(0, mode=mode, loss=f"{running:.4f}", lr=f"{lr:.2e}")
            if csv_log is not None:
                csv_log.write({"view": view, "step": step, "mode": mode, "loss": f"{lv:.6f}",
                               "coarse_loss": f"{float(coarse_loss.detach()):.6f}",
                               "fine_loss": f"{float(fine_loss.detach()):.6f}",
                               "lr": f"{lr:.3e}", "slices_per_s": f"{rate:.3f}", "elapsed_s": f"{elapsed:.1f}"})
            if tb is not None:
                tb.add_scalar(f"{view}/loss", lv, step)
                tb.add_scalar(f"{view}/coarse_loss", float(coarse_loss.detach()), step)
                tb.add_scalar(f"{view}/fine_loss", float(fine_loss.detach()), step)
                tb.add_scalar(f"{view}/lr", lr, step)
        if dist_info.main and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
            _save_checkpoint(_checkpoint_path(out, view, f"step{step:07d}"), model, opt, sched, scaler, step, cfg, view)
            _save_checkpoint(last, model, opt, sched, scaler, step, cfg, view)
    bar.__exit__(None, None, None)
    elapsed = time.perf_counter() - t0
    if dist_info.world > 1:  # DDP must leave every rank with the same weights: check it, cheaply
        import torch.distributed as dist

        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1).cpu()
        gathered = [torch.zeros_like(checksum) for _ in range(dist_info.world)]
        dist.all_gather(gathered, checksum)
        summary["ddp_ranks_in_sync"] = bool(all(torch.equal(g, gathered[0]) for g in gathered))
        if not summary["ddp_ranks_in_sync"]:
            raise RSTNError(f"DDP ranks ended view {view} with different weights; report this as a bug.")
    if dist_info.main:
        _save_checkpoint(last, model, opt, sched, scaler, step, cfg, view)  # training-time BN stats: resumable
        if step >= total:
            summary["bn_recalibration"] = recalibrate_bn(model, cases, cfg, view)
            _save_checkpoint(_checkpoint_path(out, view, "final"), model, opt, sched, scaler, step, cfg, view)
    if tb is not None:
        tb.close()
    summary.update({"final_step": step, "seconds": round(elapsed, 2), "final_loss_ema": running,
                    "slices_per_s": round((step - start) * dist_info.world / max(elapsed, 1e-9), 3)})
    return model.cpu().eval(), summary


# ----------------------------------------------------------------------------------------------------------
# all views -> model package


def train(cases: Sequence[TrainCase], cfg: TrainConfig, out: Path, resume: bool = False, overwrite: bool = False,
          device: str = "auto", progress: bool | str = True, stop_after: int | None = None,
          package_metadata: dict | None = None) -> Path | None:
    """Train every view, then write the model package to ``out/model``. Returns the package path (None on
    non-main DDP ranks or when stopped early)."""
    out = Path(out)
    dist_info = init_distributed()
    ckpt_dir = out / "checkpoints"
    if ckpt_dir.exists() and any(ckpt_dir.iterdir()) and not (resume or overwrite):
        raise OutputExistsError(f"{out} already holds a training run; pass --resume to continue it or "
                                "--overwrite to start again (old checkpoints are replaced).")
    if (out / "model").exists() and not (resume or overwrite):
        raise OutputExistsError(f"{out / 'model'} already exists; choose another --out or pass --overwrite.")
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    models: dict[str, RSTN] = {}
    summaries = []
    for view in cfg.views:
        final = _checkpoint_path(out, view, "final")
        if resume and final.exists():
            model = RSTN(cfg.rstn_config())
            model.load_state_dict(torch.load(final, map_location="cpu", weights_only=True)["model"])
            models[view] = model.eval()
            continue
        model, summary = train_view(cases, cfg, view, out, resume=resume, device=device, progress=progress,
                                    stop_after=stop_after, dist_info=dist_info)
        summaries.append(summary)
        if summary["final_step"] < cfg.total_steps:
            return None
        models[view] = model
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
    if not dist_info.main:
        return None
    from .model_package import save_model_package

    metadata = dict(package_metadata or {})
    training = dict(metadata.pop("training", {}))
    config = cfg.to_dict()
    if config.get("init"):  # the name, not the training machine's path (model.json travels)
        config["init"] = Path(str(config["init"]).replace("{view}", "*")).name
    training.update({"config": config, "cases": [c.name for c in cases], "views": summaries,
                     "world_size": dist_info.world, "torch": torch.__version__})
    metadata["training"] = training
    metadata.setdefault("views", list(cfg.views))
    metadata.setdefault("hu_window", cfg.window.to_dict())
    if cfg.spacing is not None:
        metadata.setdefault("spacing", list(cfg.spacing))
    if cfg.method == "c2f":
        metadata.setdefault("method", "c2f")
    return save_model_package(out / "model", models, metadata, overwrite=overwrite or resume)
