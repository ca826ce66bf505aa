"""Convert the ImageNet MobileNetV2 (int8 ONNX, ../shared/pretrained) into our encoder's float weights, once.

    python scripts/convert_mobilenetv2.py [--onnx ../shared/pretrained/mobilenetv2-12-int8.onnx] [-o FILE]

Why a script and not a dependency: the ONNX file is read with the ``onnx`` package (pip install onnx), which
training from it needs only here. Each QLinearConv's weight is dequantised per output channel,
``w = (q - zero_point) * scale``, and its int32 bias ``b = q_b * input_scale * w_scale`` (BatchNorm is already
folded into them). The 52 convolutions come in network order; the first 51 are torchvision's features[0:18],
our encoder's layers (``MobileNetV2Encoder.convolutions()``), the last (320 -> 1280) is not used.

Writes a safetensors file (default Resources/Pretrained/mobilenetv2_imagenet_encoder.safetensors, not committed:
7 MB) and prints the sha256 of the input and of the output; the output's hash is recorded in
``PancreasRSTNLib.models.pretrained.KNOWN_ENCODERS`` so that training verifies what it loads.
Source: ONNX Model Zoo mobilenetv2-12-int8 (onnx/models, Apache-2.0); see ../shared/pretrained/PROVENANCE.md.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "PancreasRSTN"))

from PancreasRSTNLib.models.mobilenet_unet import MobileNetV2Encoder  # noqa: E402
from PancreasRSTNLib.models.pretrained import DEFAULT_ENCODER_FILE, save_encoder_weights  # noqa: E402

DEFAULT_ONNX = ROOT.parent / "shared" / "pretrained" / "mobilenetv2-12-int8.onnx"


def dequantised_convolutions(onnx_path: Path) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """(weight, bias, attributes) of every QLinearConv of the file, in node order, as float32."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "QLinearConv":
            continue
        x_scale, w_q, w_scale, w_zero, b_q = (init[node.input[k]] for k in (1, 3, 4, 5, 8))
        per_channel = (-1,) + (1,) * (w_q.ndim - 1)
        weight = (w_q.astype(np.float32) - np.asarray(w_zero, np.float32).reshape(per_channel)) \
            * np.asarray(w_scale, np.float32).reshape(per_channel)
        bias = b_q.astype(np.float64) * float(x_scale) * np.asarray(w_scale, np.float64)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        out.append((weight.astype(np.float32), bias.astype(np.float32), attrs))
    return out


def encoder_state(onnx_path: Path) -> dict[str, torch.Tensor]:
    """The encoder's state_dict from the ONNX file; every shape, group and stride checked against ours."""
    encoder = MobileNetV2Encoder()
    convs = encoder.convolutions()
    found = dequantised_convolutions(onnx_path)
    if len(found) != len(convs) + 1:
        raise SystemExit(f"{onnx_path} has {len(found)} convolutions; MobileNetV2 1.0 has {len(convs) + 1}.")
    names = {id(m): n for n, m in encoder.named_modules()}
    state = {}
    for conv, (weight, bias, attrs) in zip(convs, found):
        if tuple(weight.shape) != tuple(conv.weight.shape) or attrs.get("group", 1) != conv.groups \
                or tuple(attrs.get("strides", (1, 1))) != conv.stride:
            raise SystemExit(f"Convolution {names[id(conv)]} does not match the file: {weight.shape} "
                             f"group {attrs.get('group')} strides {attrs.get('strides')}.")
        state[f"{names[id(conv)]}.weight"] = torch.from_numpy(weight)
        state[f"{names[id(conv)]}.bias"] = torch.from_numpy(bias)
    return state


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=DEFAULT_ONNX)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_ENCODER_FILE)
    args = parser.parse_args()
    if not args.onnx.is_file():
        raise SystemExit(f"{args.onnx} not found: give --onnx the ONNX Model Zoo's mobilenetv2-12-int8.onnx.")
    state = encoder_state(args.onnx)
    save_encoder_weights(state, args.output)
    print(f"input  {args.onnx} sha256 {sha256(args.onnx)}")
    print(f"output {args.output} sha256 {sha256(args.output)} ({sum(v.numel() for v in state.values()):,} "
          f"parameters in {len(state) // 2} convolutions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
