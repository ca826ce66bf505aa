"""Blocks shared by the 2-D backbones: the size contract of the light U-Net and the Cai et al. networks
(PNet-MSA, the MICCAI 2017 CNN), and the CBR blocks of the latter.

Inputs are padded (replicate; constant when a side is 1 pixel) on the bottom and right up to a multiple of
``multiple`` and at least ``2 * multiple``, so the deepest level is at least 2x2 (normalisation needs that in
training); the network's output is cropped back to the input's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` (N, C, H, W) padded bottom/right to a multiple of ``multiple`` and at least twice it."""
    h, w = x.shape[-2:]
    pad_h = max((-h) % multiple, 2 * multiple - h)
    pad_w = max((-w) % multiple, 2 * multiple - w)
    if pad_h or pad_w:
        mode = "replicate" if min(h, w) > 1 else "constant"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x


def cbr(cin: int, cout: int, kernel: int = 3) -> list[nn.Module]:
    """One CBR block (conv, BatchNorm, ReLU) as a list of layers, for an ``nn.Sequential``: the conv is
    bias-free (the BatchNorm's shift replaces the bias) and BatchNorm directly follows it, so
    ``fold_batch_norms`` can fold it."""
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def encode(blocks: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """A U-Net-style encoder: each block after the first sees its predecessor's output max-pooled by 2. Returns
    every block's output, shallowest first (the skips, and the deepest features last)."""
    features = []
    for i, block in enumerate(blocks):
        if i:
            x = F.max_pool2d(x, 2)
        x = block(x)
        features.append(x)
    return features
