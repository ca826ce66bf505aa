"""A light U-Net backbone (about 1.9 M parameters, ~3 % of FCN-8s' FLOPs per slice) for CPUs and small GPUs.

Same contract as FCN-8s: 3 slice channels in, 3 logit channels out, same spatial size for any input size.
Inputs are padded (replicate) up to a multiple of 2^(levels-1), at least twice that, and the output is cropped back.
"""

from __future__ import annotations

import torch
from torch import nn

from ._blocks import encode, pad_to_multiple


def _norm(kind: str, channels: int) -> nn.Module:
    """'batch' (running statistics at inference) or 'instance' (each slice's own statistics, always). With the
    reference's batch size of 1, BatchNorm trains exactly like instance normalisation; 'instance' keeps that
    behaviour at inference, where running statistics may fit no single slice."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"Unknown norm '{kind}': use 'batch' or 'instance'.")


def _double_conv(cin: int, cout: int, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
    )


class LightUNet(nn.Module):
    """Four-level U-Net with BatchNorm; widths (16, 32, 64, 128, 256) by default."""

    activation_bytes_per_pixel = 600
    # Inputs are replicate-padded to a multiple of this (when both sides exceed 1 pixel); the engine relies on it
    # to batch fine crops of different sizes exactly.
    replicate_pad_multiple = 16

    def __init__(self, in_channels: int = 3, n_class: int = 3, widths: tuple[int, ...] = (16, 32, 64, 128, 256),
                 norm: str = "batch") -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.norm = norm
        self.down = nn.ModuleList()
        cin = in_channels
        for w in self.widths:
            self.down.append(_double_conv(cin, w, norm))
            cin = w
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w_low, w_high in zip(self.widths[::-1][:-1], self.widths[::-1][1:]):
            self.up.append(nn.ConvTranspose2d(w_low, w_high, 2, stride=2))
            self.merge.append(_double_conv(2 * w_high, w_high, norm))
        self.head = nn.Conv2d(self.widths[0], n_class, 1)
        self.full_resolution_channels = self.widths[0]  # sizes CPU batches to the cache (inference.py)
        self.multiple = 2 ** (len(self.widths) - 1)
        self.replicate_pad_multiple = self.multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # a multiple of 2^(levels-1), and at least twice that: the deepest level is then at least 2x2, which
        # normalisation needs in training (a crop around a tiny prediction can be a few pixels wide)
        x = pad_to_multiple(x, self.multiple)
        skips = encode(self.down, x)
        x = skips[-1]
        for up, merge, skip in zip(self.up, self.merge, skips[-2::-1]):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)[:, :, :h, :w]
