"""Weights in and out of a view's training: the starting weights (scratch, a model package or a checkpoint),
resumable checkpoints, and the final weights of a finished view.

Why a checkpoint holds the RNG states and the scheduler with the weights: a resumed run must continue the exact
sequence an uninterrupted one would have taken (dropout draws come from torch's global generator).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelPackageError
from ..io.model_package import load_model_package
from ..models.model import RSTN, load_reference_state_dict
from .config import TrainConfig


@dataclass
class TrainingState:
    """Everything a step changes and a checkpoint saves, besides the RNG states."""

    model: RSTN
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None


def checkpoint_path(out: Path, view: str, tag: str) -> Path:
    """OUT/checkpoints/<view>_<tag>.pt; tags: 'last' (resume from it), 'final', 'step0000500'."""
    return out / "checkpoints" / f"{view}_{tag}.pt"


def save_checkpoint(path: Path, state: TrainingState, step: int, cfg: TrainConfig, view: str,
                    summary: dict | None = None) -> None:
    """Write a resumable checkpoint atomically (a temporary file renamed into place); a finished view's carries
    its ``summary`` (plain values only: it loads with ``weights_only=True``) for the package a resume writes."""
    content = {
        "view": view,
        "step": step,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else {},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "config": cfg.to_dict(),
        **({"summary": summary} if summary is not None else {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(content, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind


def restore_checkpoint(path: Path, state: TrainingState) -> int:
    """Load a checkpoint into ``state`` and torch's RNGs; returns the global step it was saved at."""
    content = torch.load(path, map_location="cpu", weights_only=True)
    state.model.load_state_dict(content["model"])
    state.optimizer.load_state_dict(content["optimizer"])
    state.scheduler.load_state_dict(content["scheduler"])
    if state.scaler is not None and content.get("scaler"):
        state.scaler.load_state_dict(content["scaler"])
    torch.set_rng_state(content["torch_rng"])
    if torch.cuda.is_available() and content.get("cuda_rng"):
        torch.cuda.set_rng_state_all(content["cuda_rng"])
    return int(content["step"])


def load_final_model(cfg: TrainConfig, path: Path) -> tuple[RSTN, dict | None]:
    """A finished view's weights (its 'final' checkpoint), in eval mode, and its training summary (None in a
    checkpoint written before summaries were kept)."""
    content = torch.load(path, map_location="cpu", weights_only=True)
    model = RSTN(cfg.rstn_config())
    model.load_state_dict(content["model"])
    return model.eval(), content.get("summary")


def initial_model(cfg: TrainConfig, view: str) -> RSTN:
    """From scratch (seeded), from a model package, or from a reference / our own checkpoint."""
    model = RSTN(cfg.rstn_config())
    if cfg.pretrained_encoder and not cfg.init:
        from ..models.pretrained import init_encoders_from

        init_encoders_from(model, cfg.pretrained_encoder)
    if not cfg.init:
        return model
    path = Path(cfg.init.replace("{view}", view))
    if path.is_dir():
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
