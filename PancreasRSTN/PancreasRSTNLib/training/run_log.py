"""What a view's training reports while it runs: a progress bar (or one line per epoch in a pipe), and every
``log_every`` steps a CSV row and TensorBoard scalars. Only the main process reports.

Why the CSV drops rows on resume: a resumed run rewrites the steps after its checkpoint, and the log must hold
each step once (the Slicer panel's loss chart reads it while the run goes on).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..distributed import DistInfo
from ..errors import RSTNError
from ..progress import Progress

log = logging.getLogger(__name__)


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


def open_tensorboard(path: Path):  # noqa: ANN201 (a SummaryWriter, or None without the optional tensorboard)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional [train] dependency
        log.warning("tensorboard is not installed; logging to CSV only (pip install 'pancreas-rstn[train]').")
        return None
    return SummaryWriter(str(path))


@dataclass(frozen=True)
class StepSpan:
    """The steps one call trains: from ``start`` (0, or where a resumed run stopped) to ``end`` (the schedule's
    ``total`` or --stop-after); an epoch of this process is ``per_epoch`` steps."""

    start: int
    end: int
    total: int
    per_epoch: int


class ViewLog:
    """The reports of one view's training, and the exponential moving average of its loss."""

    def __init__(self, out: Path, view: str, span: StepSpan, log_every: int, dist_info: DistInfo, shown: str) -> None:
        self.view = view
        self.span = span
        self.log_every = max(log_every, 1)
        self.world = dist_info.world
        self.csv = CsvLog(out / "logs" / "train_log.csv", view, span.start) if dist_info.main else None
        self.tensorboard = open_tensorboard(out / "logs" / "tensorboard") if dist_info.main else None
        self.bar = Progress(shown if dist_info.main else "quiet", total=span.total - span.start, desc=f"train {view}",
                            unit="step", fraction=False).__enter__()
        self.t0 = time.perf_counter()
        self.running: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def slices_per_s(self, step: int) -> float:
        """Training slices per second over all processes since this call started."""
        return (step - self.span.start) * self.world / max(self.elapsed(), 1e-9)

    def record_step(self, step: int, mode: str, losses: tuple[torch.Tensor, ...], lr: float, where: str) -> None:
        """Stop on a non-finite loss (``where``: which run, for the message); else report the step."""
        loss = float(losses[0].detach())
        if not math.isfinite(loss):
            raise RSTNError(f"The training loss became {loss} at step {step} ({where}); lower --lr.")
        self.record(step, mode, loss, losses, lr)

    def record(self, step: int, mode: str, loss: float, losses: tuple[torch.Tensor, ...], lr: float) -> None:
        """After step ``step`` (1-based): advance the bar; a line per epoch; a log row every ``log_every``."""
        self.running = loss if self.running is None else 0.95 * self.running + 0.05 * loss
        self.bar.advance(1)
        if step % self.span.per_epoch == 0 or step == self.span.end:
            self._epoch_line(step, mode, lr)
        if step % self.log_every == 0 or step == self.span.end:
            self._log_row(step, mode, loss, losses, lr)

    def _epoch_line(self, step: int, mode: str, lr: float) -> None:
        """One line per epoch (in a pipe; above the bar on a terminal)."""
        span = self.span
        rate = (step - span.start) / max(self.elapsed(), 1e-9)
        eta = (span.end - step) / max(rate, 1e-9)
        self.bar.line(f"train {self.view}: epoch {step / span.per_epoch:.1f}, step {step}/{span.total}, mode {mode}, "
                      f"loss {self.running:.4f}, lr {lr:.2e}, {rate * self.world:.2f} steps/s, ETA {eta / 60:.1f} min")

    def _log_row(self, step: int, mode: str, loss: float, losses: tuple[torch.Tensor, ...], lr: float) -> None:
        elapsed = self.elapsed()
        rate = (step - self.span.start) * self.world / max(elapsed, 1e-9)
        self.bar.advance(0, mode=mode, loss=f"{self.running:.4f}", lr=f"{lr:.2e}")
        coarse, fine = float(losses[1].detach()), float(losses[2].detach())
        if self.csv is not None:
            self.csv.write({"view": self.view, "step": step, "mode": mode, "loss": f"{loss:.6f}",
                            "coarse_loss": f"{coarse:.6f}", "fine_loss": f"{fine:.6f}", "lr": f"{lr:.3e}",
                            "slices_per_s": f"{rate:.3f}", "elapsed_s": f"{elapsed:.1f}"})
        if self.tensorboard is not None:
            for name, value in (("loss", loss), ("coarse_loss", coarse), ("fine_loss", fine), ("lr", lr)):
                self.tensorboard.add_scalar(f"{self.view}/{name}", value, step)

    def finish_bar(self) -> float:
        """Close the bar; returns the seconds since the first step."""
        self.bar.__exit__(None, None, None)
        return self.elapsed()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
