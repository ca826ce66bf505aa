"""The MobileNetV2 U-Net backbone and its ImageNet encoder: parameter count, shapes, weights loaded and verified."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from PancreasRSTNLib.errors import ModelPackageError
from PancreasRSTNLib.models.backbones import (
    available_backbones,
    backbone_gflops,
    build_backbone,
    count_parameters,
)
from PancreasRSTNLib.models.mobilenet_unet import MobileNetV2Encoder
from PancreasRSTNLib.models.model import RSTN, RSTNConfig
from PancreasRSTNLib.models.pretrained import init_encoders_from, load_encoder_weights

ROOT = Path(__file__).resolve().parents[1]
ONNX = ROOT.parent / "shared" / "pretrained" / "mobilenetv2-12-int8.onnx"
MILITARY_UNIFORM = 652  # ImageNet class of the test photograph, as ../shared/pretrained/PROVENANCE.md reports


def test_registered_with_its_parameter_count_and_cost():
    assert "mobilenet_unet" in available_backbones()
    net = build_backbone("mobilenet_unet")
    # torchvision's MobileNetV2 features[0:18]: 52 convolutions less the 320->1280 head (409,600 + 1,280)
    assert count_parameters(net.encoder) == 1_795_936
    assert len(net.encoder.convolutions()) == 51
    assert count_parameters(net) == 2_137_171
    assert 6.0 < backbone_gflops("mobilenet_unet", 512, 512) < 7.0


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 37, 53), (1, 3, 5, 300)])
def test_keeps_the_input_size_and_three_channels(shape):
    net = build_backbone("mobilenet_unet").eval()
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == (shape[0], 3, *shape[2:])
    assert torch.isfinite(out).all()


def test_refuses_other_channel_counts():
    with pytest.raises(ModelPackageError, match="3 channels"):
        build_backbone("mobilenet_unet", in_channels=1)


def test_an_unknown_encoder_file_is_refused(tmp_path):
    from PancreasRSTNLib.models.pretrained import save_encoder_weights

    fake = tmp_path / "encoder.safetensors"
    save_encoder_weights(MobileNetV2Encoder().state_dict(), fake)
    with pytest.raises(ModelPackageError, match="not a known encoder"):
        load_encoder_weights(fake)
    with pytest.raises(ModelPackageError, match="not found"):
        load_encoder_weights(tmp_path / "missing.safetensors")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The shared ONNX file converted by the script, as a developer does once."""
    if not ONNX.is_file():
        pytest.skip(f"{ONNX} is absent (only in the developers' checkout)")
    pytest.importorskip("onnx", reason="converting the ONNX file needs the onnx package")
    out = tmp_path_factory.mktemp("pretrained") / "encoder.safetensors"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "PancreasRSTN"))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_mobilenetv2.py"), "--onnx", str(ONNX), "-o",
                    str(out)], check=True, capture_output=True, env=env)
    return out


def test_converted_encoder_is_verified_and_loaded_into_both_networks(converted):
    model = RSTN(RSTNConfig(backbone="mobilenet_unet"))
    record = init_encoders_from(model, converted)
    assert record["networks"] == 2 and record["licence"].startswith("Apache-2.0")
    state, _ = load_encoder_weights(converted)
    for net in (model.coarse_model, model.fine_model):
        for key, value in state.items():
            assert torch.equal(net.encoder.state_dict()[key], value), key


def test_converted_encoder_still_recognises_a_photograph(converted):
    """The dequantised weights in our layer order give ImageNet's answer on matplotlib's sample photograph: a
    wrong order, grouping or bias scale would not."""
    import matplotlib
    import matplotlib.image as mpimg
    import onnx
    from onnx import numpy_helper

    sys.path.insert(0, str(ROOT / "scripts"))
    from convert_mobilenetv2 import dequantised_convolutions

    photo = mpimg.imread(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    x = torch.from_numpy(np.asarray(photo, np.float32) / 255).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    encoder = MobileNetV2Encoder().eval()
    encoder.load_state_dict(load_encoder_weights(converted)[0])
    head_w, head_b, _ = dequantised_convolutions(ONNX)[-1]
    init = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(ONNX)).graph.initializer}
    w = (init["classifier.1.weight_quantized"].astype(np.float32)
         - init["classifier.1.weight_zero_point"].astype(np.float32)) * init["classifier.1.weight_scale"]
    b = (init["classifier.1.bias_quantized"].astype(np.float32)
         - init["classifier.1.bias_zero_point"].astype(np.float32)) * init["classifier.1.bias_scale"]
    with torch.no_grad():
        features = F.relu6(F.conv2d(encoder(x)[-1], torch.from_numpy(head_w), torch.from_numpy(head_b)))
        logits = features.mean((2, 3)).numpy() @ w + b
    assert int(logits.argmax()) == MILITARY_UNIFORM


def test_cli_refuses_a_pretrained_encoder_before_reading_any_data(tmp_path, capsys):
    from PancreasRSTNLib.app.cli import main

    base = ["train", "--data", str(tmp_path / "no-such-dataset"), "-o", str(tmp_path / "run"), "--no-progress"]
    assert main([*base, "--backbone", "light", "--pretrained-encoder", str(tmp_path / "x.safetensors")]) == 1
    assert "needs --backbone mobilenet_unet" in capsys.readouterr().err
    assert main([*base, "--backbone", "mobilenet_unet", "--pretrained-encoder", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "convert_mobilenetv2.py" in err and "no-such-dataset" not in err
    assert not (tmp_path / "run").exists()


def test_cli_trains_from_the_pretrained_encoder_with_real_ct_augmentation(converted, tmp_path):
    from PancreasRSTNLib.app.cli import main
    from PancreasRSTNLib.io.model_package import load_model_package

    out = tmp_path / "run"
    assert main(["train", "--phantoms", "2", "--phantom-shape", "48x48x16", "-o", str(out), "--views", "Z",
                 "--backbone", "mobilenet_unet", "--pretrained-encoder", str(converted), "--augment", "real-ct",
                 "--samples-per-step", "2", "--steps", "S:1,I:1,J:1", "--optimizer", "adamw",
                 "--no-progress"]) == 0
    config = load_model_package(out / "model").metadata["training"]["config"]
    assert config["pretrained_encoder"] == str(converted) and config["samples_per_step"] == 2
    assert config["augment"]["scanner"]["phase_probability"] > 0 and config["augment"]["fatty_organ_probability"] > 0


def test_decoder_normalisation_is_instance_normalisation_in_either_memory_layout():
    """The decoder's GroupNorm (one channel per group) must give InstanceNorm2d's numbers, so that packages trained
    with either keep their meaning; channels-last input must not change them."""
    from PancreasRSTNLib.models.mobilenet_unet import _instance_norm

    norm = _instance_norm(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.2, 0.2)
    x = torch.randn(2, 6, 17, 23) * 3 + 1
    expected = F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
    assert torch.allclose(norm(x), expected, atol=1e-5)
    assert torch.allclose(norm(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-5)
