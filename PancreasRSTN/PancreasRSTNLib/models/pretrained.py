"""ImageNet-pretrained encoder weights: where they live, how they are verified, how a backbone takes them.

Why hashes: a training that starts "from ImageNet" must start from exactly the weights it says; the converted
file (``scripts/convert_mobilenetv2.py``) is verified by sha256 before it is read, like every weight file here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelPackageError

RESOURCES = Path(__file__).resolve().parents[3] / "Resources"
DEFAULT_ENCODER_FILE = RESOURCES / "Pretrained" / "mobilenetv2_imagenet_encoder.safetensors"
#: sha256 of the converted file -> what it is (source, licence, the ONNX file it came from)
KNOWN_ENCODERS = {
    "bf9025b7d1763d029f94ed244e1dc355842614bab177dd716c20a7168894d38c": {
        "name": "MobileNetV2 1.0 ImageNet (ONNX Model Zoo mobilenetv2-12-int8, dequantised)",
        "licence": "Apache-2.0 (onnx/models)",
        "onnx_sha256": "83530ad811bc31d2b60a5599a21265a5057608c9b044b4ee758cc22f2309f54f",
    },
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_encoder_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def load_encoder_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The verified encoder state_dict and its record; refuses a file whose hash is not a known encoder."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelPackageError(f"Pretrained encoder {path} not found. Make it with "
                                "`python scripts/convert_mobilenetv2.py` from the ONNX Model Zoo's "
                                "mobilenetv2-12-int8.onnx.")
    digest = file_sha256(path)
    record = KNOWN_ENCODERS.get(digest)
    if record is None:
        raise ModelPackageError(f"Pretrained encoder {path} has sha256 {digest}, which is not a known encoder. "
                                "Convert it again with scripts/convert_mobilenetv2.py from the original ONNX file.")
    return load_file(str(path)), dict(record, sha256=digest, file=path.name)


def init_encoders_from(model: nn.Module, path: str | Path) -> dict:
    """Load the pretrained encoder into every backbone of ``model`` that has an ``encoder`` (RSTN: the coarse and
    the fine network); strict: every encoder key must be present with its shape. Returns the record."""
    state, record = load_encoder_weights(path)
    encoders = [m.encoder for m in model.modules() if hasattr(m, "encoder") and isinstance(m.encoder, nn.Module)]
    if not encoders:
        raise ModelPackageError("--pretrained-encoder needs a backbone with a pretrainable encoder "
                                "(--backbone mobilenet_unet).")
    for encoder in encoders:
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelPackageError(f"The pretrained encoder does not fit: missing {missing[:4]}, "
                                    f"unexpected {unexpected[:4]}.")
    return dict(record, networks=len(encoders))
