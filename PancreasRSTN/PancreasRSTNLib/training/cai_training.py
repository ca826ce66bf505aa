"""Training of Cai et al.'s system (``--method cai``) and of a (Bi)CLSTM refiner on a frozen RSTN
(``--method rstn+biclstm``), with the Jaccard loss (JACLoss) throughout.

Stages (``TrainConfig.schedule``):
  CNN  the 2-D CNN alone on 3-slice crops, deeply supervised: the Jaccard loss of every active unit's side output,
       plus the fused output's once every unit is active. **Units are added progressively from the bottom**: the
       first ``unit_share`` of the CNN steps trains unit 1 (full resolution) alone, the next share units 1-2, and
       so on; the deepest unit and the fusion layer join for the remaining steps (50 % with 5 units and share 0.1).
       A network without deep supervision (the MICCAI CNN) trains whole from the start.
  SEQ  CNN and refiner end to end on sequences of ``sequence_length`` consecutive axial slices (crops of the same
       window): each slice's CNN probability is the mean of the 3 triplets that hold it, as at inference; loss =
       Jaccard(refined) + 0.5 Jaccard(CNN), the second keeping the CNN's output what the refiner learnt to read.
  REF  the refiner alone on sequences of a frozen RSTN's final probability (computed once per training volume
       with the RSTN package's default settings), loss = Jaccard(refined).
AdamW throughout; the refiner at ``REFINER_LR_FACTOR`` x the LR.

The log's columns ``coarse_loss`` / ``fine_loss`` hold the CNN's and the refined output's losses. Like RSTN's
trainer, every draw comes from the step's own generator and checkpoints hold the RNG states: ``--resume`` replays
the same samples and updates (equal to float rounding: we saw CPU runs of this network differ in the last bits).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..devices import pick_device
from ..distributed import DistInfo
from ..engine.c2f_inference import view_probability
from ..models.cai_system import CaiCNN, CaiSystem
from ..models.clstm import SliceRefiner
from .checkpoints import TrainingState
from .config import TrainConfig
from .losses import jaccard_loss
from .schedule import LRFactor, stage_at
from .slice_crops import SequenceSampler, crop_window, sequence_slices
from .step import Precision, SampleOrder, apply_gradients, sample_tensors, window_and_augment
from .step_loop import StepLoop, TrainRunOptions
from .training_data import TrainCase

log = logging.getLogger(__name__)
CNN_WEIGHT_IN_SEQ = 0.5
#: The refiner's ~160 parameters learn at 10x the CNN's LR (no weight decay): with its correction starting at zero,
#: the CNN's LR would leave it near the identity for the few hundred steps it trains.
REFINER_LR_FACTOR = 10.0
CONTEXT = 2  # slices beyond each end of a sequence, so that its slices' 3 triplets are all real


def active_units(cfg: TrainConfig, step: int, units: int) -> int | None:
    """Units of the CNN that train at ``step`` (None: all of them, with the fusion layer)."""
    mode, start = stage_at(cfg, step)
    cnn_steps = sum(n for m, n in cfg.schedule if m == "CNN")
    per_unit = int(round(cfg.unit_share * cnn_steps))
    if mode != "CNN" or units == 1 or per_unit == 0:
        return None
    k = (step - start) // per_unit + 1
    return None if k >= units else int(k)


class SequenceTraining(StepLoop):
    """Train Cai et al.'s CNN + refiner (``cfg.method == "cai"``), or a refiner alone on ``probabilities`` (one
    canonical probability volume per case, None for cases it skips; ``cfg.method == "rstn+biclstm"``)."""

    tag = "cai"
    state: TrainingState

    def __init__(self, cases: Sequence[TrainCase], cfg: TrainConfig, out: Path, options: TrainRunOptions,
                 probabilities: Sequence[np.ndarray | None] | None = None) -> None:
        self.cases, self.cfg, self.out, self.options = cases, cfg, Path(out), options
        self.device = pick_device(options.device, DistInfo())
        pairs = [(c, p) for c, p in zip(cases, probabilities or [None] * len(cases), strict=True)
                 if probabilities is None or p is not None]
        usable = [c for c, _ in pairs]
        self.sequence_probabilities = [p for _, p in pairs]  # aligned with the sequences' cases (REF only)
        self.sequences = SequenceSampler(usable, cfg.sequence_length)
        self.sequence_cases = usable
        self.order = SampleOrder.for_view(cases, cfg, "Z", DistInfo()) if cfg.method == "cai" else None
        self.dist, self.label = DistInfo(), cfg.method
        self.step = 0

    def train_one_step(self) -> tuple[str, tuple[torch.Tensor, ...]]:
        mode, _ = stage_at(self.cfg, self.step)
        rng = np.random.default_rng([self.cfg.seed, 77, self.step])
        return mode, self.train_step(mode, rng)

    def samples_per_epoch(self) -> int:
        return len(self.order.samples) if self.order is not None else len(self.sequences.starts)

    def record_label(self, mode: str) -> str:
        return mode

    def build_model(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed * 1009 + 77)
        refiner = SliceRefiner(cfg.refiner_direction, cfg.refiner_window)
        model = CaiSystem(CaiCNN(cfg.rstn_config()), refiner) if cfg.method == "cai" else refiner
        model = model.to(self.device).train()
        groups = [{"params": list(refiner.parameters()), "lr": REFINER_LR_FACTOR * cfg.lr, "weight_decay": 0.0}]
        if cfg.method == "cai":
            groups.insert(0, {"params": list(model.cnn.parameters())})
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(cfg))
        self.precision = Precision.for_device(cfg.amp, self.device)
        self.state = TrainingState(model, optimizer, scheduler, self.precision.scaler)

    def train_step(self, mode: str, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of ``mode``: (total, CNN, refined) losses, after the update."""
        step_fn = {"CNN": self.cnn_losses, "SEQ": self.sequence_losses, "REF": self.refiner_losses}[mode]
        with torch.autocast(self.device.type, dtype=self.precision.dtype, enabled=self.precision.enabled):
            losses = step_fn(rng)
        apply_gradients(losses[0], self.state)
        return losses

    def cnn_losses(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Deep supervision on a batch of 3-slice crops; the fused output's loss once every unit is active."""
        cfg, cnn = self.cfg, self.state.model.cnn
        xs, ys = [], []
        for k in range(cfg.batch_size):
            sample = self.order.at(self.step * cfg.batch_size + k)
            x, y = sample_tensors(self.cases[sample.case], "Z", sample.j, cfg, rng)
            rows, cols = crop_window(y[0].numpy(), cfg.crop_size, rng)
            xs.append(x[..., rows, cols])
            ys.append(y[..., rows, cols])
        h, w = min(x.shape[-2] for x in xs), min(x.shape[-1] for x in xs)  # equal unless slices are smaller
        x = torch.cat([t[..., :h, :w] for t in xs]).to(self.device)
        y = torch.cat([t[..., :h, :w] for t in ys]).to(self.device)
        fused, sides = cnn.forward_deep(x, active_units(cfg, self.step, cnn.units))
        side_losses = [jaccard_loss(torch.sigmoid(s.float()), y) for s in sides]
        deep = torch.stack(side_losses).mean() if side_losses else torch.zeros((), device=self.device)
        fused_loss = jaccard_loss(torch.sigmoid(fused.float()), y) if fused is not None else torch.zeros_like(deep)
        return deep + fused_loss, deep, fused_loss

    def _sequence(self, rng: np.random.Generator, context: int) -> tuple[TrainCase, int, np.ndarray, tuple]:
        """A drawn sequence: its case (index), slice indices with ``context``, the label crop window."""
        start = self.sequences.at(rng)
        case = self.sequence_cases[start.case]
        idx = sequence_slices(case.label.shape[2], start.start, self.cfg.sequence_length, context)
        labels = np.moveaxis(np.asarray(case.label[:, :, start.start:start.start + self.cfg.sequence_length]), 2, 0)
        return case, start.case, idx, crop_window(labels, self.cfg.crop_size, rng)

    def sequence_losses(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CNN + refiner end to end on one sequence of axial slices."""
        case, _, idx, (rows, cols) = self._sequence(rng, CONTEXT)
        x_np = np.moveaxis(np.take(case.image, idx, axis=2)[rows, cols], 2, 0)
        y_np = np.moveaxis(np.take(case.label, idx, axis=2)[rows, cols], 2, 0)
        x, y = window_and_augment(x_np, y_np, self.cfg, rng)
        x, y = x.to(self.device), y.to(self.device)
        model = self.state.model
        inner = slice(CONTEXT, CONTEXT + self.cfg.sequence_length)
        prob = view_probability(model.cnn, x, 0, x.shape[0])[inner]
        refined = model.refiner(prob[None].float())
        cnn_loss = jaccard_loss(prob[None], y[inner][None])
        refine_loss = jaccard_loss(refined, y[inner][None])
        return refine_loss + CNN_WEIGHT_IN_SEQ * cnn_loss, cnn_loss, refine_loss

    def refiner_losses(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The refiner alone on a sequence of the frozen RSTN's final probability."""
        case, k, idx, (rows, cols) = self._sequence(rng, 0)
        probability = self.sequence_probabilities[k]
        p = torch.from_numpy(np.ascontiguousarray(np.moveaxis(probability[rows, cols][:, :, idx], 2, 0)))
        y = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(case.label)[rows, cols][:, :, idx], 2, 0),
                                                  dtype=np.float32))
        p, y = p.to(self.device, torch.float32), y.to(self.device)
        refined = self.state.model(p[None])
        input_loss = jaccard_loss(p[None], y[None]).detach()  # what the RSTN alone scores: the log's baseline
        refine_loss = jaccard_loss(refined, y[None])
        return refine_loss, input_loss, refine_loss

    def finish(self) -> tuple[torch.nn.Module, dict]:
        elapsed = self.log.finish_bar()
        self.save("last")
        if self.step >= self.cfg.total_steps:
            self.save("final")
        self.log.close()
        steps_run = self.step - self.log.span.start
        summary = {"method": self.cfg.method, "steps": self.cfg.total_steps, "final_step": self.step,
                   "seconds": round(elapsed, 2), "final_loss_ema": self.log.running,
                   "steps_per_s": round(steps_run / max(elapsed, 1e-9), 3),
                   "sequences": len(self.sequences.starts)}
        if self.order is not None:
            summary["samples"] = len(self.order.samples)
        return self.state.model.cpu().eval(), summary
