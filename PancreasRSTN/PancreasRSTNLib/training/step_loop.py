"""The step loop both trainers share, with the method's own steps plugged in:

    build_model -> resume_checkpoint -> open_log -> per step: train_one_step, record, save_periodic_checkpoint
    -> finish

``ViewTraining`` (RSTN and C2F, one view) and ``SequenceTraining`` (Cai et al.'s CNN and refiners) differ in how a
model is built, how one step draws and learns, and what a finished run saves; resuming, the log, the periodic
checkpoints and the order of these steps (which makes ``--resume`` bit-exact) are this one loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..distributed import DistInfo
from ..progress import progress_mode
from .checkpoints import TrainingState, checkpoint_path, restore_checkpoint, save_checkpoint
from .config import TrainConfig
from .run_log import StepSpan, ViewLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRunOptions:
    """How to run a training, not what it learns (that is TrainConfig): --resume, --device, the progress output
    (True: a bar on a terminal, a line per epoch in a pipe; False: nothing; or a mode of ``progress.Progress``)
    and --stop-after (stop after that many global steps, leaving a checkpoint to resume from)."""

    resume: bool = False
    device: str = "auto"
    progress: bool | str = True
    stop_after: int | None = None

    @property
    def shown(self) -> str:
        return self.progress if isinstance(self.progress, str) else progress_mode(quiet=not self.progress)


class StepLoop:
    """A training run as named steps; subclasses give ``build_model``, ``train_one_step``, ``samples_per_epoch``,
    ``finish`` and set ``tag`` (the checkpoints' and log's name) and ``label`` (what a log line says)."""

    tag: str
    label: str
    cfg: TrainConfig
    out: Path
    options: TrainRunOptions
    dist: DistInfo
    state: TrainingState
    log: ViewLog
    step: int

    def run(self) -> tuple[torch.nn.Module, dict]:
        self.build_model()
        self.resume_checkpoint()
        self.log = self.open_log()
        while self.step < self.log.span.end:
            mode, losses = self.train_one_step()
            self.step += 1
            self.record(mode, losses)
            self.save_periodic_checkpoint()
        return self.finish()

    def build_model(self) -> None:
        raise NotImplementedError

    def train_one_step(self) -> tuple[str, tuple[torch.Tensor, ...]]:
        """Draw this step's inputs, learn from them; returns (stage, (total, and two parts of the loss))."""
        raise NotImplementedError

    def samples_per_epoch(self) -> int:
        raise NotImplementedError

    def finish(self) -> tuple[torch.nn.Module, dict]:
        raise NotImplementedError

    def resume_checkpoint(self) -> None:
        """With --resume, continue from the 'last' checkpoint: weights, optimiser, schedule and RNG states."""
        last = checkpoint_path(self.out, self.tag, "last")
        if not (self.options.resume and last.exists()):
            return
        self.step = restore_checkpoint(last, self.state)
        if self.dist.main:
            log.info("%s: resumed at step %d from %s", self.label, self.step, last)

    def open_log(self) -> ViewLog:
        total, stop_after = self.cfg.total_steps, self.options.stop_after
        end = total if stop_after is None else min(total, stop_after)
        span = StepSpan(self.step, end, total, max(1, self.samples_per_epoch()))
        return ViewLog(self.out, self.tag, span, self.cfg.log_every, self.dist, self.options.shown)

    def record(self, mode: str, losses: tuple[torch.Tensor, ...]) -> None:
        """Stop on a non-finite loss; else report the step."""
        self.log.record_step(self.step, mode, losses, self.state.optimizer.param_groups[-1]["lr"],
                             self.record_label(mode))

    def record_label(self, mode: str) -> str:
        return self.label

    def save_periodic_checkpoint(self) -> None:
        every = self.cfg.checkpoint_every
        if self.dist.main and every and self.step % every == 0 and self.step < self.cfg.total_steps:
            self.save(f"step{self.step:07d}")
            self.save("last")

    def save(self, tag: str, summary: dict | None = None) -> None:
        save_checkpoint(checkpoint_path(self.out, self.tag, tag), self.state, self.step, self.cfg, self.tag, summary)
