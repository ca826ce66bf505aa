"""Saliency-module variants of the paper, the backbone registry, and the backbones' cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import demo_model_dir
from PancreasRSTNLib.engine.inference import InferenceConfig, RSTNEngine
from PancreasRSTNLib.errors import ModelPackageError
from PancreasRSTNLib.evaluation.metrics import dice
from PancreasRSTNLib.io.model_package import load_model_package, save_model_package
from PancreasRSTNLib.models.backbones import (
    available_backbones,
    backbone_gflops,
    build_backbone,
    count_parameters,
)
from PancreasRSTNLib.models.model import RSTN, RSTNConfig, SaliencyConfig
from PancreasRSTNLib.phantom import make_phantom_canonical


@pytest.mark.parametrize("kernels", [(1,), (3,), (5,), (1, 1), (3, 3), (3, 5), (5, 5)])
def test_saliency_variants(kernels, tmp_path):
    cfg = RSTNConfig(backbone="light", saliency=SaliencyConfig(kernels), backbone_kwargs={"widths": (4, 8)})
    model = RSTN(cfg).eval()
    keys = [k for k in model.state_dict() if k.startswith("saliency")]
    assert len(keys) == 2 * len(kernels)
    assert model.saliency1.weight.shape == (3, 3, kernels[0], kernels[0])
    prob = torch.rand(2, 3, 17, 23)
    weights = model.saliency(prob)
    assert weights.shape == prob.shape
    # initialised as in the reference: g starts as the constant weights (1, 1.5, 2) per slice channel
    if len(kernels) == 1:  # one layer: zero weights, biases (1, 1.5, 2)
        assert torch.allclose(weights[:, :, 8, 11], torch.tensor([1.0, 1.5, 2.0]).expand(2, 3))
    else:  # two layers: the last has zero weights, so g starts constant (1, 1.5, 2) too
        assert torch.allclose(weights, torch.tensor([1.0, 1.5, 2.0])[None, :, None, None].expand_as(weights))
    save_model_package(tmp_path / "m", {"Z": model}, {"name": "variant", "organ": "pancreas"})
    pkg = load_model_package(tmp_path / "m")
    assert pkg.config.saliency.kernels == kernels


def test_invalid_saliency_config():
    with pytest.raises(ModelPackageError, match="kernel size 1, 3 or 5"):
        SaliencyConfig((7,))
    with pytest.raises(ModelPackageError, match="one or two layers"):
        SaliencyConfig((3, 3, 3))


def test_backbone_registry_and_costs():
    assert {"fcn8s", "light"} <= set(available_backbones())
    fcn, light = backbone_gflops("fcn8s", 512, 512), backbone_gflops("light", 512, 512)
    assert fcn == pytest.approx(379.3, rel=0.01)  # the reference figure for FCN-8s with padding 100
    assert light < fcn / 10
    assert count_parameters(build_backbone("light")) <= 8_000_000
    for name in ("fcn8s", "light"):
        net = build_backbone(name).eval()
        for h, w in ((1, 1), (7, 30), (33, 17)):  # any input size gives the same output size
            with torch.no_grad():
                assert net(torch.zeros(1, 3, h, w)).shape == (1, 3, h, w)
    with pytest.raises(ModelPackageError, match="Unknown backbone"):
        build_backbone("resnet")


def test_reduced_precision_path_agrees_with_fp32():
    """The mixed-precision path (bf16 autocast; used on CUDA) checked for correctness on the CPU."""
    pkg = load_model_package(demo_model_dir())
    hu, _ = make_phantom_canonical(size=(128, 128, 64), seed=99)  # the demo model's native scale
    fp32 = list(RSTNEngine(pkg.models, InferenceConfig(precision="fp32", max_iter=2), device="cpu").run(hu))
    bf16_engine = RSTNEngine(pkg.models, InferenceConfig(precision="bf16", max_iter=2), device="cpu")
    assert bf16_engine.dtype == torch.bfloat16
    bf16 = list(bf16_engine.run(hu))
    assert fp32[-1].mask.any()
    assert dice(fp32[-1].mask, bf16[-1].mask) >= 0.99  # the target for bf16 against fp32
    assert np.abs(fp32[0].probability - bf16[0].probability).max() < 0.1


def test_instance_norm_light_unet_uses_each_slice_own_statistics():
    torch.manual_seed(0)
    net = build_backbone("light", widths=(4, 8), norm="instance").eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(3, 3, 32, 40)
    x[1] *= 50  # a very different slice in the same batch
    with torch.no_grad():
        together = net(x)
        alone = net(x[:1])
    assert torch.allclose(together[:1], alone, atol=1e-5)
    with pytest.raises(ModelPackageError, match="cannot be built with {'norm': 'group'}: Unknown norm"):
        build_backbone("light", norm="group")


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_the_light_unet_trains_on_a_crop_a_few_pixels_wide(norm):
    """A fine crop around a tiny prediction (random margin 0) can be 3 px wide: its deepest level must still hold
    more than one element per channel, or normalisation refuses to train."""
    import torch

    from PancreasRSTNLib.models.light_unet import LightUNet

    net = LightUNet(widths=(4, 8, 16, 32, 64), norm=norm).train()
    out = net(torch.rand(1, 3, 3, 5))
    assert out.shape == (1, 3, 3, 5)
    out.sum().backward()
    small, large = net(torch.rand(1, 3, 17, 40)), net(torch.rand(1, 3, 64, 64))
    assert small.shape == (1, 3, 17, 40) and large.shape == (1, 3, 64, 64)
