"""A U-Net whose encoder is MobileNetV2 (Sandler et al., CVPR 2018), so that it can start from ImageNet weights.

Why: the RSTN paper starts its FCN-8s from ImageNet; a network learning from a few hundred slices of one
institution generalises better from a pretrained encoder. RSTN's three slices map onto the three colour channels,
normalised with ImageNet's mean and standard deviation as the pretrained weights expect.

Same contract as the other backbones: 3 channels in, 3 logit channels out, the input's size for any input size
(padded bottom/right to a multiple of the deepest stride, at least twice it, and cropped back).

The encoder is torchvision's ``features[0:18]`` layout with BatchNorm folded into biased convolutions (the
ImageNet file ships that way; see ``pretrained.py``); the 1280-channel head and the classifier are dropped.
The decoder upsamples bilinearly and merges each skip with two 3x3 convolutions under instance normalisation
(batch-1 training, as the light U-Net's ``--norm instance``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._blocks import pad_to_multiple

#: (expansion t, output channels c, repeats n, first stride s) of MobileNetV2's inverted residual stages
INVERTED_RESIDUAL_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                              (6, 160, 3, 2), (6, 320, 1, 1))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: indices into ``MobileNetV2Encoder.features`` whose outputs are the skips at strides 2, 4, 8, 16 and 32
SKIP_AFTER = (1, 3, 6, 13, 17)
SKIP_CHANNELS = (16, 24, 32, 96, 320)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu6: bool = True) -> nn.Sequential:
    """A convolution with its (folded) BatchNorm as a bias, then ReLU6 unless it is a linear bottleneck."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=True)]
    if relu6:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); a residual connection when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [_conv(cin, hidden, 1)] if expand != 1 else []
        layers += [_conv(hidden, hidden, 3, stride, groups=hidden), _conv(hidden, cout, 1, relu6=False)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2's feature layers 0-17 (width 1.0); ``forward`` returns the five skips, shallowest first."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(3, 32, 3, stride=2)]
        cin = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def convolutions(self) -> list[nn.Conv2d]:
        """Every convolution in the order of the network (and of the ONNX file's nodes)."""
        return [m for m in self.features.modules() if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std  # windowed slices in [0, 1] as an ImageNet-normalised picture
        skips = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in SKIP_AFTER:
                skips.append(x)
        return skips


def _instance_norm(channels: int) -> nn.GroupNorm:
    """Instance normalisation with a per-channel affine, as a GroupNorm of one channel per group: the same numbers
    and state_dict keys as ``InstanceNorm2d(affine=True)``, but a native kernel that keeps the channels-last layout
    (``InstanceNorm2d`` repeats the input into a batch norm: 1.6x slower on a CPU)."""
    return nn.GroupNorm(channels, channels)


def _merge_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), _instance_norm(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), _instance_norm(cout), nn.ReLU(inplace=True),
    )


class MobileUNet(nn.Module):
    """MobileNetV2 encoder + a light U-Net decoder; ``decoder_widths`` from the deepest merge (stride 16) to the
    full-resolution one."""

    activation_bytes_per_pixel = 500
    multiple = 32
    replicate_pad_multiple = 32

    def __init__(self, in_channels: int = 3, n_class: int = 3,
                 decoder_widths: tuple[int, ...] = (64, 32, 24, 16, 8)) -> None:
        super().__init__()
        if in_channels != 3:
            raise ValueError(f"the MobileNetV2 encoder takes exactly 3 channels (RSTN's slice triplet), not "
                             f"{in_channels}")
        if len(decoder_widths) != 5:
            raise ValueError("decoder_widths needs 5 entries (strides 16, 8, 4, 2 and 1)")
        self.decoder_widths = tuple(int(w) for w in decoder_widths)
        self.encoder = MobileNetV2Encoder()
        skip_channels = (*SKIP_CHANNELS[-2::-1], in_channels)  # stride 16, 8, 4, 2, then the input itself
        self.merge = nn.ModuleList()
        cin = SKIP_CHANNELS[-1]
        for w, skip in zip(self.decoder_widths, skip_channels):
            self.merge.append(_merge_block(cin + skip, w))
            cin = w
        self.head = nn.Conv2d(cin, n_class, 1)
        self.full_resolution_channels = self.decoder_widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # channels-last: oneDNN's depthwise and 1x1 convolutions run about 1.5x faster on a CPU in this layout
        padded = pad_to_multiple(x, self.multiple).contiguous(memory_format=torch.channels_last)
        skips = self.encoder(padded)
        y = skips[-1]
        for merge, skip in zip(self.merge, [*skips[-2::-1], padded]):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = merge(torch.cat([y, skip.to(y.dtype)], dim=1))
        return self.head(y)[:, :, :h, :w].contiguous()
