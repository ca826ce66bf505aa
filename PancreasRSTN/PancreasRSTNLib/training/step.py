"""One training step: its input (a sample's triplets, crop margins, the C2F box), the unrolled forward pass with
the joint loss, and the optimiser update (with mixed precision on CUDA).

Why a step is its own module: every random draw of a step comes from a generator seeded by the step number, so
the same step gives the same input and update whether the run was resumed or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import DistInfo
from ..errors import DatasetError
from ..models.model import RSTN
from .augmentation import augment_triplet
from .checkpoints import TrainingState
from .config import TrainConfig
from .losses import LossFn, joint_weights
from .training_data import (
    Sample,
    TrainCase,
    bounding_box,
    epoch_order,
    labels_for_view,
    triplet,
    view_axis,
    view_samples,
)

Box = tuple[int, int, int, int]


class StepModule(nn.Module):
    """Wraps an RSTN so that a whole unrolled training step is one ``forward`` (what DDP needs)."""

    def __init__(self, model: RSTN, loss_fn: LossFn, T: int) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.T = T
        self.w0, self.wt = joint_weights(T)

    @staticmethod
    def _fine_full(model: RSTN, inp: torch.Tensor, box: Box) -> torch.Tensor:
        """Fine probability on the full slice: the crop's sigmoid pasted into zeros (the reference's uncrop
        with -9999999 logits)."""
        a0, a1, b0, b1 = box
        h, w = inp.shape[-2:]
        prob = torch.sigmoid(model.fine(inp[..., a0:a1, b0:b1]).float())
        return F.pad(prob, (b0, w - b1, a0, h - a1))

    def forward(self, x: torch.Tensor, y: torch.Tensor, mode: str, margins: np.ndarray,
                c2f_box: Box | None = None, prior: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The joint loss; ``prior`` (stage N, a perturbed truth) replaces the coarse prediction as the first fine
        round's previous probability, as a person's mask does at refinement time."""
        model = self.model
        prob = torch.sigmoid(model.coarse(x).float())
        coarse_loss = self.loss_fn(prob, y)
        label_np = y[0].detach().cpu().numpy() > 0.5
        if mode == "C2F":
            fine = self._fine_full(model, x, c2f_box)
            fine_loss = self.loss_fn(fine, y)
            return coarse_loss + fine_loss, coarse_loss, fine_loss  # independent nets: plain sum
        total = self.w0 * coarse_loss
        prev = prob if prior is None else prior
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


@dataclass(frozen=True)
class SampleOrder:
    """Which training sample a global step uses: position ``step % per_rank`` of epoch ``step // per_rank``'s
    seeded permutation (this process's share of it under DDP), so the order is a function of the step alone."""

    samples: list[Sample]
    seed: int
    rank: int
    world: int
    per_rank: int

    @classmethod
    def for_view(cls, cases: Sequence[TrainCase], cfg: TrainConfig, view: str, dist_info: DistInfo) -> SampleOrder:
        samples = view_samples(labels_for_view(cases, view), view, cfg.slice_threshold, cfg.negative_fraction,
                               cfg.seed)
        if not samples:
            raise DatasetError(f"No training slices for view {view}: every label is empty. Check --organ / "
                               "--label-value.")
        per_rank = len(epoch_order(len(samples), 0, 0, dist_info.rank, dist_info.world))
        if per_rank == 0:
            raise DatasetError(f"{len(samples)} training slices cannot be shared by {dist_info.world} processes.")
        return cls(samples, cfg.seed * 1000 + view_axis(view), dist_info.rank, dist_info.world, per_rank)

    def at(self, step: int) -> Sample:
        epoch, pos = divmod(step, self.per_rank)
        order = epoch_order(len(self.samples), self.seed, epoch, self.rank, self.world)
        return self.samples[int(order[pos])]


@dataclass
class StepInput:
    """What one step trains on: the stage's mode, (1, 3, H, W) image and label triplets on the device, the crop
    margins and, for C2F, the framed ground-truth box."""

    mode: str
    x: torch.Tensor
    y: torch.Tensor
    margins: np.ndarray
    c2f_box: Box | None = None
    prior: torch.Tensor | None = None  # stage N: a perturbed truth to start the fine rounds from


def sample_tensors(case: TrainCase, view: str, j: int, cfg: TrainConfig, rng: np.random.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, label) triplets of one training sample, (1, 3, H, W) float32: windowed to [0, 1] and, if the
    config asks, augmented with draws from ``rng`` (the step's own generator, so resuming replays them)."""
    x, y = window_and_augment(triplet(case.image, view, j), triplet(case.label, view, j), cfg, rng)
    return x[None].contiguous(), y[None].contiguous()


def window_and_augment(x_np: np.ndarray, y_np: np.ndarray, cfg: TrainConfig, rng: np.random.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, W) slices (HU, or already windowed for phantoms) and labels -> float32 tensors windowed to [0, 1],
    augmented when the config asks (one draw for all C slices: a triplet, or a sequence of slices)."""
    is_hu = x_np.dtype != np.float32  # HU (int16 cache) or already windowed (phantoms)
    window = cfg.window
    if cfg.augment is None:
        x_np = window.apply(x_np) if is_hu else x_np
        return (torch.from_numpy(np.ascontiguousarray(x_np, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(y_np, dtype=np.float32)))
    x = torch.from_numpy(np.ascontiguousarray(x_np, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(y_np, dtype=np.float32))
    if is_hu:
        x, y = augment_triplet(x, y, rng, cfg.augment)
        return window.apply(x), y
    x, y = augment_triplet(x, y, rng, cfg.augment, hu_per_unit=window.high - window.low, hu_offset=window.low)
    return x.clamp(0.0, 1.0), y


def c2f_boxes(cases: Sequence[TrainCase], view: str) -> list[Box | None]:
    """Each case's ground-truth 3-D box projected onto the view's slice plane (a0, a1, b0, b1); None for a case
    without slices of this view."""
    axis = view_axis(view)
    out: list[Box | None] = []
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


def framed_box(box: Box, frame: np.ndarray, shape: tuple[int, int]) -> Box:
    """``box`` grown by ``frame`` (top, bottom, left, right), clamped to the slice: the C2F fine net's crop."""
    a0, a1, b0, b1 = box
    return (max(a0 - int(frame[0]), 0), min(a1 + int(frame[1]), shape[0]),
            max(b0 - int(frame[2]), 0), min(b1 + int(frame[3]), shape[1]))


@dataclass
class Precision:
    """Mixed precision of the steps: bf16 autocast on CUDA (fp16 with a grad scaler where bf16 is missing),
    none on the CPU or with ``amp="off"``."""

    enabled: bool
    dtype: torch.dtype
    scaler: torch.amp.GradScaler | None

    @classmethod
    def for_device(cls, amp: str, device: torch.device) -> Precision:
        enabled = amp == "auto" and device.type == "cuda"
        dtype = torch.bfloat16 if enabled and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda") if enabled and dtype == torch.float16 else None
        return cls(enabled, dtype, scaler)


def apply_gradients(loss: torch.Tensor, state: TrainingState) -> None:
    """Backward, optimiser step (through the grad scaler when there is one), then the LR schedule's step."""
    state.optimizer.zero_grad(set_to_none=True)
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        loss.backward()
        state.optimizer.step()
    state.scheduler.step()
