"""FCN-8s on VGG16, exactly as the RSTN reference builds it, so that its checkpoints load unchanged.

Faithful details: ``conv1_1`` pads by 100, max-pooling uses ``ceil_mode=True``, the score maps are cropped at
offsets 5 (pool4), 9 (pool3) and 31 (final), the upsampling layers are bias-free transposed convolutions with
bilinear weights that are never trained, and the output is raw logits (the RSTN applies an element-wise sigmoid).
The output has the input's spatial size for any input size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_VGG_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def bilinear_kernel(size: int) -> np.ndarray:
    """The 2-D bilinear interpolation kernel used to initialise (and freeze) FCN upsampling layers."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return ((1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)).astype(np.float32)


class FCN8s(nn.Module):
    """3-in / n_class-out FCN-8s with the reference's parameter names (``conv1_1`` ... ``upscore8``)."""

    # Rough peak activation bytes per input pixel at batch 1 in inference (fp32), used for adaptive batching.
    activation_bytes_per_pixel = 2600
    # Channels of the widest full-resolution activation; sizes CPU batches to the cache (inference.py).
    full_resolution_channels = 64

    def __init__(self, in_channels: int = 3, n_class: int = 3) -> None:
        super().__init__()
        channels = in_channels
        for block, widths in enumerate(_VGG_BLOCKS, start=1):
            for layer, width in enumerate(widths, start=1):
                padding = 100 if (block, layer) == (1, 1) else 1
                setattr(self, f"conv{block}_{layer}", nn.Conv2d(channels, width, 3, padding=padding))
                channels = width
        self.fc6 = nn.Conv2d(512, 4096, 7)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.drop6 = nn.Dropout2d()
        self.drop7 = nn.Dropout2d()
        self.score_fr = nn.Conv2d(4096, n_class, 1)
        self.score_pool3 = nn.Conv2d(256, n_class, 1)
        self.score_pool4 = nn.Conv2d(512, n_class, 1)
        self.upscore2 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(n_class, n_class, 16, stride=8, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """From-scratch init (PASCAL weights are not reachable here): He-normal convs, zero score layers,
        frozen bilinear upsampling as in the reference."""
        for name, module in self.named_children():
            if isinstance(module, nn.ConvTranspose2d):
                n = module.weight.shape[0]
                kernel = torch.from_numpy(bilinear_kernel(module.weight.shape[-1]))
                with torch.no_grad():
                    module.weight.zero_()
                    module.weight[range(n), range(n)] = kernel
                module.weight.requires_grad_(False)
            elif isinstance(module, nn.Conv2d):
                if name.startswith("score"):
                    nn.init.zeros_(module.weight)
                else:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def _block(self, h: torch.Tensor, block: int) -> torch.Tensor:
        for layer in range(1, len(_VGG_BLOCKS[block - 1]) + 1):
            h = F.relu(getattr(self, f"conv{block}_{layer}")(h), inplace=True)
        return F.max_pool2d(h, 2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._block(x, 1)
        h = self._block(h, 2)
        pool3 = h = self._block(h, 3)
        pool4 = h = self._block(h, 4)
        h = self._block(h, 5)
        h = self.drop6(F.relu(self.fc6(h), inplace=True))
        h = self.drop7(F.relu(self.fc7(h), inplace=True))
        upscore2 = self.upscore2(self.score_fr(h))
        score_pool4 = self.score_pool4(pool4)[:, :, 5 : 5 + upscore2.shape[2], 5 : 5 + upscore2.shape[3]]
        upscore_pool4 = self.upscore_pool4(upscore2 + score_pool4)
        score_pool3 = self.score_pool3(pool3)[:, :, 9 : 9 + upscore_pool4.shape[2], 9 : 9 + upscore_pool4.shape[3]]
        out = self.upscore8(upscore_pool4 + score_pool3)
        return out[:, :, 31 : 31 + x.shape[2], 31 : 31 + x.shape[3]]
