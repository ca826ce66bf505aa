"""The CNN of Cai et al., MICCAI 2017 ("Improving deep pancreas segmentation in CT and MRI images via recurrent
neural contextual learning and direct loss function").

Five scale blocks of four CBR blocks (3x3 conv, BatchNorm, ReLU) each, 2x2 max-pooling between them, one width
throughout: 64 or 128 channels, the ``channels`` argument (not called ``width``, which ``backbone_gflops`` takes
for the slice size). A U-Net-like decoder brings the deepest block back: at each scale a 2x2 deconvolution doubles
the size and a CBR block merges it with that scale block's output; a 1x1 convolution gives the logits.

Same contract as the other backbones: 3 slice channels in, ``n_class`` logit channels out, the input's spatial size
for any input size (replicate padding to a multiple of 16, at least 32, then cropping back, as the light U-Net).
About 1.1 M parameters and 139 GFLOP per 512 x 512 slice at 64 channels, 4.3 M and 553 GFLOP at 128
(FCN-8s: 379 GFLOP).
"""

from __future__ import annotations

import torch
from torch import nn

from ._blocks import cbr, encode, pad_to_multiple


class CaiMiccaiCNN(nn.Module):
    """The MICCAI 2017 CNN: ``scales`` blocks of ``convs_per_scale`` CBR blocks, ``channels`` channels."""

    # Rough peak activation bytes per input pixel at batch 1 in inference (fp32), used for adaptive batching.
    activation_bytes_per_pixel = 1200
    # Channels of the widest full-resolution activation (the decoder's concatenation); sizes CPU batches.
    full_resolution_channels = 128

    def __init__(self, in_channels: int = 3, n_class: int = 3, channels: int = 64, scales: int = 5,
                 convs_per_scale: int = 4) -> None:
        super().__init__()
        if channels not in (64, 128):
            raise ValueError(f"{channels} channels: the MICCAI 2017 CNN uses 64 or 128.")
        width = self.channels = int(channels)
        self.full_resolution_channels = 2 * width
        self.activation_bytes_per_pixel = 1200 * width // 64
        self.blocks = nn.ModuleList()
        for i in range(scales):
            layers = cbr(in_channels if i == 0 else width, width)
            for _ in range(convs_per_scale - 1):
                layers += cbr(width, width)
            self.blocks.append(nn.Sequential(*layers))
        self.up = nn.ModuleList(nn.ConvTranspose2d(width, width, 2, stride=2) for _ in range(scales - 1))
        self.merge = nn.ModuleList(nn.Sequential(*cbr(2 * width, width)) for _ in range(scales - 1))
        self.head = nn.Conv2d(width, n_class, 1)
        self.multiple = 2 ** (scales - 1)
        self.replicate_pad_multiple = self.multiple  # the engine batches fine crops exactly with it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_class, H, W)."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.multiple)
        skips = encode(self.blocks, x)
        x = skips[-1]
        for up, merge, skip in zip(self.up[::-1], self.merge[::-1], skips[-2::-1]):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)[:, :, :h, :w]
