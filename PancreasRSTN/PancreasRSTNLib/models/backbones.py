"""Backbone registry: RSTN wraps any 3-in / 3-out 2-D segmentation network registered here."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ModelPackageError
from .cai_cnn import CaiMiccaiCNN
from .fcn8s import FCN8s
from .light_unet import LightUNet
from .mobilenet_unet import MobileUNet
from .pnet_msa import PNetMSA

BackboneFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, BackboneFactory] = {}


def register_backbone(name: str, factory: BackboneFactory) -> None:
    """Make ``factory(in_channels=3, n_class=3, **kwargs)`` available under ``name``."""
    _REGISTRY[name] = factory


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def build_backbone(name: str, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise ModelPackageError(
            f"Unknown backbone '{name}'. Available backbones: {', '.join(available_backbones())}."
        )
    try:
        return _REGISTRY[name](**kwargs)
    except (TypeError, ValueError) as exc:  # wrong arguments for this backbone: say which, before any work
        raise ModelPackageError(f"Backbone '{name}' cannot be built with {kwargs}: {exc}") from exc


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that follows a convolution in a Sequential into the convolution (in place).

    Same outputs (to float rounding), one pass over memory less per layer: inference only."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in module.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(seq[i].eval(), seq[i + 1].eval())
                    seq[i + 1] = nn.Identity()
    return module


def output_head(backbone: nn.Module) -> nn.Conv2d | None:
    """The 1x1 convolution (with a bias) that a backbone's output is, cropped, so that adding to its bias shifts
    every output logit alike (the U-Nets' ``head``); None for a backbone that ends otherwise (FCN-8s sums
    upsampled scores)."""
    head = getattr(backbone, "head", None)
    if isinstance(head, nn.Conv2d) and head.bias is not None and head.kernel_size == (1, 1):
        return head
    return None


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def backbone_gflops(name: str, height: int, width: int, **kwargs) -> float:
    """FLOPs of a registered backbone at one slice size, computed on the meta device (no memory, no math)."""
    with torch.device("meta"):
        module = build_backbone(name, **kwargs)
    total = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _conv_flops(mod, inputs[0], output)

    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    handles = [m.register_forward_hook(hook) for m in convs]
    module.eval()
    with torch.no_grad():
        module(torch.empty(1, 3, height, width, device="meta"))
    for h in handles:
        h.remove()
    return total / 1e9


def _conv_flops(mod: nn.Module, inp: torch.Tensor, output: torch.Tensor) -> int:
    if isinstance(mod, nn.ConvTranspose2d):  # every input pixel is scattered through the whole kernel
        n_in = inp.shape[-2] * inp.shape[-1]
        return 2 * n_in * mod.in_channels * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
    k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
    return 2 * (output.numel() // output.shape[0]) * k


register_backbone("fcn8s", FCN8s)
register_backbone("light", LightUNet)
register_backbone("mobilenet_unet", MobileUNet)  # ImageNet-pretrainable encoder (pretrained.py)
register_backbone("pnet_msa", PNetMSA)  # Cai et al., IEEE TMI
register_backbone("cai_miccai", CaiMiccaiCNN)  # Cai et al., MICCAI 2017
