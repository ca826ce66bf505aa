"""Helpers of the GUI suite: tiny real-architecture model packages and CT volume nodes."""

from __future__ import annotations

from pathlib import Path

from helpers import tiny_models
from PancreasRSTNLib.io.model_package import default_metadata, save_model_package


def tiny_package(directory: Path, organ: str = "pancreas", seed: int = 0, name: str | None = None,
                 always_on: bool = False, refiner: bool = False) -> Path:
    """A light-backbone model (widths 4, 8) with random weights; ``always_on`` makes it find organ everywhere
    (the output layers' bias at +4), so a run is deterministic and non-empty; ``refiner`` adds an (untrained)
    BiCLSTM refiner, as ``train --method rstn+biclstm`` does."""
    models = tiny_models(seed)
    if always_on:
        for model in models.values():
            for head in (model.coarse_model.head, model.fine_model.head):
                head.bias.data.fill_(4.0)
                head.weight.data.zero_()
    meta = default_metadata(name or f"tiny-{organ}", organ)
    meta["training"] = {"source": "random initialisation (tests)"}
    if not refiner:
        return save_model_package(directory, models, meta)
    from PancreasRSTNLib.models.clstm import RefinerConfig

    config = RefinerConfig("bi", None, "rstn")
    return save_model_package(directory, models, meta, refiner=config.build(), refiner_config=config)
