"""The reference's (OrganSegRSTN_PyTorch) per-view ``.pkl`` checkpoints, read safely and made into a package.

Checkpoints are never unpickled: ``torch.load(weights_only=True)`` refuses anything but tensors and plain
containers. When it refuses a file, the message says why in a few words and never passes on torch's advice to
load it with ``weights_only=False`` (which would run whatever code the file holds).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import ModelPackageError
from ..models.model import RSTN, load_reference_state_dict, strip_module_prefix


def load_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a reference ``.pkl`` state_dict safely (weights_only) and strip a ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise ModelPackageError(f"Checkpoint not found: {path}.")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds here; all mean "not a safe state_dict"
        raise ModelPackageError(
            f"{path} cannot be loaded as a plain state_dict with torch.load(weights_only=True): {_why_unsafe(exc)}. "
            "It is corrupt, not a PyTorch checkpoint, or holds code, which this tool never unpickles. Ask for the "
            "checkpoint as a plain state_dict (tensors only), or as safetensors.",
            fix="Ask for the checkpoint as a plain state_dict (tensors only), or as safetensors.") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelPackageError(f"{path} does not hold a state_dict (a mapping of names to tensors).")
    return strip_module_prefix(obj)


def _why_unsafe(exc: Exception) -> str:
    """torch's reason in a few words, without its advice (which offers ``weights_only=False``: never take it for a
    file from elsewhere, since unpickling runs the code it holds)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it refers to the Python object {found.group(1)}, not only to tensors"
    _, marker, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (rest if marker else text).splitlines() if line.strip()]
    reason = lines[0].split(". ")[0].rstrip(".") if lines else ""
    safe = reason and "weights_only" not in reason and "can still be loaded" not in reason
    return reason if safe else f"torch refused it ({type(exc).__name__})"


def import_reference_checkpoints(checkpoints: Mapping[str, str | Path], out_dir: str | Path, organ: str = "pancreas",
                                 name: str | None = None, label_value: int | None = None, overwrite: bool = False
                                 ) -> Path:
    """Convert the reference's per-view ``.pkl`` checkpoints into a verified model package."""
    from .model_package import (
        MODEL_JSON,
        default_metadata,
        save_model_package,
        sha256_of,
    )

    out_dir = Path(out_dir)
    if not checkpoints:
        raise ModelPackageError("Give at least one view's checkpoint (--x, --y, --z).")
    models = {}
    for view, path in sorted(checkpoints.items()):
        state = load_reference_checkpoint(path)
        models[view] = load_reference_state_dict(RSTN(), state, source=Path(path).name)
    meta = default_metadata(name or f"rstn-reference-{organ}", organ, label_value)
    meta["training"] = {
        "source": "imported reference checkpoints (OrganSegRSTN_PyTorch)",
        "checkpoints": {v: {"file": Path(p).name, "sha256": sha256_of(p)} for v, p in checkpoints.items()},
    }
    if overwrite and out_dir.exists() and (out_dir / MODEL_JSON).exists():
        shutil.rmtree(out_dir)
    return save_model_package(out_dir, models, meta, overwrite=overwrite)
