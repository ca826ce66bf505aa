"""The schedule of a view's training: which mode each global step runs, its LR factor, and how the CLI's
``--steps`` / ``--epochs`` / ``--noisy-steps`` / ``--j-decay-every`` become that schedule.

Why here and not in the command: the schedule decides what a seed learns; scripts and tests build the same
schedules without argparse, and ``stage_at`` / ``LRFactor`` read the result step by step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import RSTNError
from .config import TrainConfig
from .training_data import TrainCase, view_samples

Stages = tuple[tuple[str, int], ...]

#: The steps per view of each stage when neither --steps nor --epochs is given.
DEFAULT_STAGES: dict[str, Stages] = {"rstn": (("S", 200), ("I", 600), ("J", 800)), "c2f": (("C2F", 1000),),
                                     "cai": (("CNN", 1000), ("SEQ", 300)), "rstn+biclstm": (("REF", 300),)}


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


def parse_steps(text: str) -> Stages:
    """'S:200,I:600,J:800' -> (("S", 200), ("I", 600), ("J", 800)); the modes are checked by TrainConfig."""
    stages = []
    for part in text.split(","):
        mode, _, n = part.partition(":")
        if not n.strip().isdigit():
            raise RSTNError(f"--steps '{text}' is invalid: write stages like S:200,I:600,J:800.")
        stages.append((mode.strip().upper(), int(n)))
    return tuple(stages)


def parse_epochs(text: str) -> tuple[float, float, float]:
    """'2,6,8' -> epochs of stages S, I and J."""
    try:
        epochs = tuple(float(e) for e in text.split(","))
    except ValueError:
        epochs = ()
    if len(epochs) != 3:
        raise RSTNError("--epochs takes three numbers, for S, I and J (reference: 2,6,8).")
    return epochs  # type: ignore[return-value]


def steps_per_epoch(cases: Sequence[TrainCase], views: Sequence[str], slice_threshold: float) -> float:
    """An epoch in steps: the mean number of training slices per view (every case's label counted in every
    view, as the schedules recorded in earlier model.json files were computed)."""
    labels = [c.label for c in cases]
    return sum(len(view_samples(labels, v, slice_threshold)) for v in views) / len(views)


@dataclass(frozen=True)
class ScheduleOptions:
    """The stage lengths as asked: ``steps`` ('S:200,I:600,J:800') or ``epochs`` of S, I, J ('2,6,8') or neither
    (the method's default), then ``noisy_steps`` of mode N; ``j_decay_every`` None: 2 epochs with ``epochs``,
    else never. Checked on creation, so a wrong option fails before any data is read."""

    method: str = "rstn"
    steps: str | None = None
    epochs: str | None = None
    noisy_steps: int = 0
    j_decay_every: int | None = None

    def __post_init__(self) -> None:
        if self.steps and self.epochs:
            raise RSTNError("Give either --steps or --epochs, not both.")
        if self.steps:
            parse_steps(self.steps)
        if self.epochs:
            parse_epochs(self.epochs)
            if self.method != "rstn":
                raise RSTNError(f"--epochs sets RSTN's stages S, I, J; give --method {self.method} its --steps.")

    def resolve(self, cases: Sequence[TrainCase], views: Sequence[str], slice_threshold: float) -> tuple[Stages, int]:
        """(stages, j_decay_every) for TrainConfig; ``cases`` and ``views`` size an epoch."""
        j_decay = self.j_decay_every or 0
        if self.epochs:
            epochs = parse_epochs(self.epochs)
            per_epoch = steps_per_epoch(cases, views, slice_threshold)
            stages = tuple((m, int(round(e * per_epoch))) for m, e in zip("SIJ", epochs, strict=True))
            if self.j_decay_every is None:
                j_decay = int(round(2 * per_epoch))
        elif self.steps:
            stages = parse_steps(self.steps)
        else:
            stages = DEFAULT_STAGES[self.method]
        if self.noisy_steps:
            stages = stages + (("N", self.noisy_steps),)
        return stages, j_decay
