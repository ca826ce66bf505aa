"""PNet-MSA (Cai et al., IEEE TMI, "Pancreas segmentation in CT and MRI images via domain specific network
designing and recurrent neural contextual learning"): a compact 2-D CNN trained from scratch.

Five unit modules, 64 channels in every convolution and deconvolution. Unit 0 works at the input's size, unit ``i``
after ``i`` 2x2 max-poolings; each unit is two CBR blocks (3x3 conv, BatchNorm, ReLU). Multi-scale aggregation,
U-Net-like, runs from the deepest unit to the shallowest: ``agg_4 = unit_4`` and
``agg_i = CBR(concat(unit_i, deconv2x(agg_{i+1})))``, so the low-level features of each unit join the high-level
ones. Each unit has its own output branch (deep supervision): a deconvolution (kernel = stride = 2^i, 64 channels)
of ``agg_i`` back to the input size and a 1x1 convolution to logits; a 1x1 convolution fuses the five branches
(initialised to their mean).

Same contract as the other backbones: 3 slice channels in, ``n_class`` logit channels out, the input's spatial size
for any input size (replicate padding to a multiple of 16, at least 32, then cropping back, as the light U-Net).
About 2.1 M parameters, about 96 GFLOP per 512 x 512 slice (FCN-8s: 379).
"""

from __future__ import annotations

import torch
from torch import nn

from ._blocks import cbr, encode, pad_to_multiple


class PNetMSA(nn.Module):
    """PNet-MSA. ``forward`` returns the fused logits (in training and in evaluation mode, so RSTN and the
    engine use it as any backbone); ``forward_deep`` returns ``(fused, [side_0, ..., side_4])``, the fused logits
    and the five per-unit deep-supervision logits (side ``i`` from the aggregation at unit ``i``; all at the
    input's size), for a deeply supervised loss. ``channels``: the width of every conv and deconv (64 in the paper;
    not called ``width``, which ``backbone_gflops`` takes for the slice size)."""

    # Rough peak activation bytes per input pixel at batch 1 in inference (fp32), used for adaptive batching.
    activation_bytes_per_pixel = 1500
    # Channels of the widest full-resolution activation (unit 0's merge input, 2 x 64); sizes CPU batches.
    full_resolution_channels = 128

    def __init__(self, in_channels: int = 3, n_class: int = 3, channels: int = 64, units: int = 5) -> None:
        super().__init__()
        if units < 2:
            raise ValueError("PNet-MSA needs at least two unit modules.")
        width = self.channels = int(channels)
        self.units = nn.ModuleList(
            nn.Sequential(*cbr(in_channels if i == 0 else width, width), *cbr(width, width)) for i in range(units)
        )
        # up[i] doubles the aggregation at unit i + 1 to unit i's size
        self.up = nn.ModuleList(nn.ConvTranspose2d(width, width, 2, stride=2) for _ in range(1, units))
        # merge[i] aggregates unit i with the (upsampled) aggregation of the deeper units (i = 0 .. units - 2)
        self.merge = nn.ModuleList(nn.Sequential(*cbr(2 * width, width)) for _ in range(units - 1))
        # side_up[i - 1] brings the aggregation at unit i (i >= 1) back to the input size for its output branch
        self.side_up = nn.ModuleList(nn.ConvTranspose2d(width, width, 2**i, stride=2**i) for i in range(1, units))
        self.sides = nn.ModuleList(nn.Conv2d(width, n_class, 1) for _ in range(units))
        self.fuse = nn.Conv2d(units * n_class, n_class, 1)
        with torch.no_grad():  # the fused output starts as the mean of the side outputs
            self.fuse.weight.zero_()
            self.fuse.bias.zero_()
            for i in range(units):
                for c in range(n_class):
                    self.fuse.weight[c, i * n_class + c] = 1.0 / units
        self.multiple = 2 ** (units - 1)
        self.replicate_pad_multiple = self.multiple  # the engine batches fine crops exactly with it

    def forward_deep(self, x: torch.Tensor, active_units: int | None = None
                     ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """``(fused logits, [side logits of unit 0 .. unit k-1])``, each (N, n_class, H, W).

        ``active_units`` k (progressive training, Cai et al.): only the k bottom units run -- the aggregation
        starts at unit k-1 -- and the fused output is None until every unit is active (the fusion layer joins in
        the last stage)."""
        n_units = len(self.units) if active_units is None else int(active_units)
        if not 1 <= n_units <= len(self.units):
            raise ValueError(f"active_units must be in 1..{len(self.units)} (got {active_units}).")
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.multiple)
        features = encode(self.units[:n_units], x)
        agg = features[-1]
        aggs = [agg]
        for i in range(n_units - 2, -1, -1):
            agg = self.merge[i](torch.cat([features[i], self.up[i](agg)], dim=1))
            aggs.append(agg)
        aggs.reverse()  # aggs[i]: the aggregation at unit i
        sides = [self.sides[i](a if i == 0 else self.side_up[i - 1](a)) for i, a in enumerate(aggs)]
        sides = [s[:, :, :h, :w] for s in sides]
        if n_units < len(self.units):
            return None, sides
        return self.fuse(torch.cat(sides, dim=1)), sides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The fused logits (N, n_class, H, W)."""
        fused, _ = self.forward_deep(x)
        return fused
