"""One view's training as a short list of named steps, the shape of nnU-Net v2's trainer:

    build_model -> resume_checkpoint -> open_log -> per step: draw_input, train_step, record,
    save_periodic_checkpoint -> finish (DDP check, last/final checkpoints, BatchNorm recalibration, summary)

The loop, resuming, the log and the checkpoints are ``step_loop.StepLoop``'s (shared with Cai et al.'s
trainer); this module gives RSTN's model, its draws and its step.

Why a class: the steps share the model, optimiser, sample order and log; each stays a few lines, and the order of
their random draws -- which makes ``--resume`` bit-exact -- is visible in ``run``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..devices import pick_device
from ..distributed import DistInfo
from ..errors import RSTNError
from ..models.model import RSTN
from .bn_recalibration import RecalibrationOptions, has_batchnorm, recalibrate_view
from .checkpoints import TrainingState, initial_model
from .collapse_check import check_and_mend
from .config import TrainConfig
from .losses import get_loss
from .optimizer import make_optimizer
from .prior_noise import corrupt_prior
from .schedule import LRFactor, stage_at
from .step import (
    Precision,
    SampleOrder,
    StepInput,
    StepModule,
    apply_gradients,
    c2f_boxes,
    framed_box,
    sample_tensors,
)
from .step_loop import StepLoop, TrainRunOptions
from .training_data import TrainCase, crop_margins, view_axis

log = logging.getLogger(__name__)


class ViewTraining(StepLoop):
    """Train (or resume) one view's RSTN; ``run`` returns the model (on CPU, eval mode) and a summary dict."""

    # set by build_model and open_log
    state: TrainingState
    precision: Precision
    step_module: torch.nn.Module

    def __init__(self, cases: Sequence[TrainCase], cfg: TrainConfig, view: str, out: Path, options: TrainRunOptions,
                 dist_info: DistInfo) -> None:
        self.cases, self.cfg, self.view, self.out = cases, cfg, view, out
        self.options = options
        self.dist = dist_info
        self.device = pick_device(options.device, dist_info)
        self.view_idx = view_axis(view)
        self.order = SampleOrder.for_view(cases, cfg, view, dist_info)
        self.c2f_boxes = c2f_boxes(cases, view) if cfg.method == "c2f" else None
        self.tag, self.label = view, f"view {view}"
        self.step = 0

    def train_one_step(self) -> tuple[str, tuple[torch.Tensor, ...]]:
        inputs = [self.draw_input(self.step, k) for k in range(self.cfg.samples_per_step)]
        return inputs[0].mode, self.train_step(inputs)

    def samples_per_epoch(self) -> int:
        return self.order.per_rank

    def build_model(self) -> None:
        """Seeded initial weights, the optimiser with its LR schedule, mixed precision, DDP."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed * 1009 + self.view_idx)
        model = initial_model(cfg, self.view).to(self.device)
        model.train()
        optimizer = make_optimizer(model, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(cfg))
        self.precision = Precision.for_device(cfg.amp, self.device)
        self.state = TrainingState(model, optimizer, scheduler, self.precision.scaler)
        self.step_module = StepModule(model, get_loss(cfg.loss), cfg.T)
        if self.dist.world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = DistributedDataParallel(self.step_module, device_ids=device_ids,
                                                       find_unused_parameters=True)

    def draw_input(self, step: int, k: int = 0) -> StepInput:
        """The step's ``k``-th sample and its random draws (margins, augmentation, C2F frame), from its own RNG
        (the first sample's is the one runs of one sample per step always used)."""
        cfg = self.cfg
        mode, _ = stage_at(cfg, step)
        sample = self.order.at(step * cfg.samples_per_step + k)
        key = [cfg.seed, self.view_idx, step, self.dist.rank] + ([k] if k else [])
        rng = np.random.default_rng(key)
        prob = 1.0 if mode == "N" else cfg.margin_random_prob
        margins = crop_margins(rng, prob, 0, cfg.margin_high, cfg.margin_fixed)
        x, y = sample_tensors(self.cases[sample.case], self.view, sample.j, cfg, rng)
        x, y = x.to(self.device), y.to(self.device)
        c2f_box = None
        if self.c2f_boxes is not None:
            frame = rng.integers(cfg.c2f_frame[0], cfg.c2f_frame[1] + 1, size=4)
            c2f_box = framed_box(self.c2f_boxes[sample.case], frame, tuple(x.shape[-2:]))
        prior = None
        if mode == "N" and cfg.prior_noise > 0 and rng.random() < cfg.prior_noise:  # no draw when off: old runs
            prior = corrupt_prior(y, rng)                                             # replay bit for bit
        return StepInput(mode, x, y, margins, c2f_box, prior)

    def train_step(self, inputs: list[StepInput]) -> tuple[torch.Tensor, ...]:
        """Forward (the unrolled joint loss of each sample, averaged) under autocast, then one update; returns
        (total, coarse, fine)."""
        precision = self.precision
        parts = []
        with torch.autocast(self.device.type, dtype=precision.dtype, enabled=precision.enabled):
            for i in inputs:
                parts.append(self.step_module(i.x, i.y, i.mode, i.margins, i.c2f_box, i.prior))
        losses = tuple(sum(p[j] for p in parts) / len(parts) for j in range(3)) if len(parts) > 1 else parts[0]
        apply_gradients(losses[0], self.state)
        return losses

    def finish(self) -> tuple[RSTN, dict]:
        """Check DDP ranks agree; save 'last' (training-time BatchNorm statistics: resumable) and, when the
        schedule is done, recalibrate BatchNorm, check (and mend) a collapsed coarse network and save 'final';
        summarise."""
        elapsed = self.log.finish_bar()
        model, total = self.state.model, self.cfg.total_steps
        summary: dict = {"view": self.view, "steps": total, "samples": len(self.order.samples)}
        if self.dist.world > 1:  # DDP must leave every rank with the same weights: check it, cheaply
            summary["ddp_ranks_in_sync"] = ranks_in_sync(model, self.dist.world)
            if not summary["ddp_ranks_in_sync"]:
                raise RSTNError(f"DDP ranks ended view {self.view} with different weights; report this as a bug.")
        steps_run = self.step - self.log.span.start
        summary.update({"final_step": self.step, "seconds": round(elapsed, 2), "final_loss_ema": self.log.running,
                        "slices_per_s": round(steps_run * self.dist.world / max(elapsed, 1e-9), 3)})
        if self.dist.main:
            self.save("last")
            if self.step >= total:
                summary["bn_recalibration"] = recalibrate_bn(model, self.cases, self.cfg, self.view)
                summary["coarse_check"] = check_and_mend(model, self.cases, self.cfg, self.view)
                self.save("final", summary)
        self.log.close()
        return model.cpu().eval(), summary


def ranks_in_sync(model: RSTN, world: int) -> bool:
    """Do all DDP processes hold the same weights? (A checksum per process, gathered.)"""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1).cpu()
    gathered = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(gathered, checksum)
    return bool(all(torch.equal(g, gathered[0]) for g in gathered))


def recalibrate_bn(model: RSTN, cases: Sequence[TrainCase], cfg: TrainConfig, view: str) -> dict:
    """BatchNorm recalibration of a trained view as configured (``cfg.bn_recalibration``; None = if the backbone
    has BatchNorm): inference-style pass (coarse, then J-style fine crops with the fixed margin, ``cfg.T``
    rounds) over ``cfg.bn_recalibration_samples`` seeded training slices. Deterministic; weights untouched."""
    enabled = has_batchnorm(model) if cfg.bn_recalibration is None else bool(cfg.bn_recalibration)
    if not enabled:
        return {"applied": False, "reason": "disabled" if cfg.bn_recalibration is False else "no BatchNorm layers"}
    t0 = time.perf_counter()
    options = RecalibrationOptions(slice_threshold=cfg.slice_threshold, seed=cfg.seed * 1000 + view_axis(view),
                                   rounds=cfg.T, margin=cfg.margin_fixed, window=cfg.window)
    info = recalibrate_view(model, cases, view, cfg.bn_recalibration_samples, options=options)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("view %s: BatchNorm statistics recalibrated on %s slices", view, info.get("samples"))
    return info
