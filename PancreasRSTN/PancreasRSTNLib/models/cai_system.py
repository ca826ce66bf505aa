"""Cai et al.'s system as the packages hold it: a 2-D CNN on 3 adjacent axial slices (PNet-MSA, IEEE TMI, or the
MICCAI 2017 CNN), followed by the (Bi)CLSTM refiner of ``clstm.py`` over the CNN's probability maps.

Why a wrapper around the backbone: packages, the engine and training read one contract from every model --
``config`` (backbone and its arguments, written to model.json as ``network``) and ``forward`` (3 slices in, 3
slices' logits out, as RSTN's networks) -- and training also needs ``forward_deep`` (the deep-supervision outputs,
with the progressive units of PNet-MSA).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .backbones import build_backbone
from .clstm import SliceRefiner
from .model import RSTNConfig

CAI_BACKBONES = ("pnet_msa", "cai_miccai")


def network_config(data: Mapping) -> RSTNConfig:
    """The CNN's backbone and arguments from model.json's ``network`` record."""
    return RSTNConfig(backbone=str(data.get("backbone", "pnet_msa")), backbone_kwargs=dict(data.get("backbone_kwargs",
                                                                                                  {})))


def network_dict(config: RSTNConfig) -> dict:
    return {"backbone": config.backbone, "backbone_kwargs": dict(config.backbone_kwargs)}


class CaiCNN(nn.Module):
    """The 2-D CNN of Cai et al.: 3 adjacent slices in, their 3 logit maps out (the middle one is the slice's
    own prediction; the engine averages the 3 triplets that hold each slice, as for RSTN and C2F)."""

    def __init__(self, config: RSTNConfig | None = None) -> None:
        super().__init__()
        self.config = config or RSTNConfig(backbone="pnet_msa")
        self.cnn = build_backbone(self.config.backbone, **self.config.backbone_kwargs)

    @property
    def units(self) -> int:
        """Unit modules that can be added progressively (1: a network trained whole, as the MICCAI CNN)."""
        return len(self.cnn.units) if hasattr(self.cnn, "forward_deep") else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn(x)

    def forward_deep(self, x: torch.Tensor, active_units: int | None = None
                     ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """(fused logits or None while units are still being added, deep-supervision logits); a network without
        deep supervision gives (logits, [])."""
        if hasattr(self.cnn, "forward_deep"):
            return self.cnn.forward_deep(x, active_units)
        return self.cnn(x), []


class CaiSystem(nn.Module):
    """CNN + refiner, as trained end to end on sequences of axial slices (training only; packages store the two
    parts as ``model_Z.safetensors`` and ``refiner.safetensors``)."""

    def __init__(self, cnn: CaiCNN, refiner: SliceRefiner) -> None:
        super().__init__()
        self.cnn = cnn
        self.refiner = refiner
