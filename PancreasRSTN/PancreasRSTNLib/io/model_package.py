"""Model packages: a folder with ``model.json`` and one safetensors file per view, verified by sha256.

A package holds one method's networks (model.json ``method``): RSTN (default) and the C2F baseline keep an RSTN
per view (``rstn`` record), Cai et al.'s system keeps its 2-D CNN for view Z (``network`` record). Any package
may carry a (Bi)CLSTM refiner (``refiner`` record, ``refiner.safetensors``), applied after its last round.

Checkpoints are never unpickled: packages use safetensors, and reference ``.pkl`` files are read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ModelPackageError, OutputExistsError
from ..models.cai_system import CaiCNN, network_config, network_dict
from ..models.clstm import RefinerConfig, SliceRefiner
from ..models.intensity import DEFAULT_WINDOW, HUWindow
from ..models.model import RSTN, RSTNConfig, load_reference_state_dict
from ..organs import get_organ
from ..views import VIEWS
from .geometry import CANONICAL_LAYOUT
from .model_schema import METHODS, validate_metadata

#: 2: ``spacing`` (the training voxel spacing, canonical axis order, mm; null = unknown) and ``synthetic``.
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
MODEL_JSON = "model.json"
REFINER_FILE = "refiner.safetensors"
SYNTHETIC_WARNING = "Synthetic demo model: trained on phantoms, not for clinical use."


def sha256_of(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelPackage:
    path: Path
    metadata: dict
    config: RSTNConfig
    models: dict[str, RSTN] | dict[str, CaiCNN]
    refiner: SliceRefiner | None = None

    @property
    def method(self) -> str:
        """"rstn", "c2f" (the stage-wise baseline) or "cai" (Cai et al.'s CNN)."""
        return package_method(self.metadata)

    @property
    def refiner_config(self) -> RefinerConfig | None:
        record = self.metadata.get("refiner")
        return None if record is None else RefinerConfig.from_dict(record)

    @property
    def organ(self) -> str:
        return self.metadata["organ"]["name"]

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.models)

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        """The voxel spacing the model was trained at (canonical axes: rows, cols, slices; mm), or None."""
        return model_spacing(self.metadata)

    @property
    def warning(self) -> str | None:
        return model_warning(self.metadata)

    @property
    def max_iter(self) -> int | None:
        """The fine rounds the model was validated to run by default (model.json ``inference.max_iter``); None:
        the reference's bound."""
        return model_max_iter(self.metadata)

    @property
    def prior_max_iter(self) -> int | None:
        """The fine rounds a refinement from a person's prior runs by default (model.json
        ``inference.prior_max_iter``, validated apart: a prior is a better start than the coarse round); None: as
        ``max_iter``."""
        inference = self.metadata.get("inference")
        found = inference.get("prior_max_iter") if isinstance(inference, Mapping) else None
        return None if found is None else int(found)

    @property
    def prior_weight(self) -> float | None:
        """A person's prior's weight in every fine round of a refinement (model.json); None: 0."""
        return self._inference_weight("prior_weight")

    @property
    def coarse_weight(self) -> float | None:
        """The coarse round's weight in every fine round of an automatic run (model.json); None: 0."""
        return self._inference_weight("coarse_weight")

    @property
    def previous_weight(self) -> float | None:
        """The previous fine round's weight in every later fine round (model.json); None: 0."""
        return self._inference_weight("previous_weight")

    def _inference_weight(self, key: str) -> float | None:
        inference = self.metadata.get("inference")
        found = inference.get(key) if isinstance(inference, Mapping) else None
        return None if found is None else float(found)

    @property
    def window(self) -> HUWindow:
        """The HU window the model was trained with (the reference's [-100, 240] unless model.json says)."""
        return HUWindow(**self.metadata.get("hu_window", {}))


def model_max_iter(meta: Mapping) -> int | None:
    """model.json's validated default of fine rounds, or None (the schema checks it is an integer >= 0)."""
    inference = meta.get("inference")
    return int(inference["max_iter"]) if isinstance(inference, Mapping) and "max_iter" in inference else None


def package_id(meta: Mapping) -> str:
    """A short identity of a package's weights: the sha256 of its weight files' own sha256s (model.json), so two
    packages with one name but other weights differ, without reading the weights again."""
    files = meta.get("files") or {}
    parts = sorted(f"{view}:{entry.get('sha256', '')}" for view, entry in files.items() if isinstance(entry, Mapping))
    refiner = meta.get("refiner")
    if isinstance(refiner, Mapping):
        parts.append(f"refiner:{refiner.get('sha256', '')}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def package_method(meta: Mapping) -> str:
    method = str(meta.get("method", "rstn"))
    if method not in METHODS:
        raise ModelPackageError(f"Unknown method '{method}' in model.json (known: {', '.join(METHODS)}). Upgrade "
                                "PancreasRSTN or re-export the model.")
    return method


def network_record(meta: Mapping) -> dict:
    """The backbone record of any package: ``rstn`` (RSTN, C2F) or ``network`` (Cai et al.)."""
    return dict(meta.get("network") or meta.get("rstn") or {})


def model_spacing(meta: Mapping) -> tuple[float, float, float] | None:
    spacing = meta.get("spacing")
    if spacing is None:
        return None
    return tuple(float(s) for s in spacing)  # type: ignore[return-value]


def is_synthetic(meta: Mapping) -> bool:
    """Trained on synthetic phantoms? model.json says so since schema 2; older packages are recognised by the
    words of their name, description and training data."""
    if isinstance(meta.get("synthetic"), bool):
        return meta["synthetic"]
    training = meta.get("training") if isinstance(meta.get("training"), Mapping) else {}
    data = training.get("data") if isinstance(training.get("data"), Mapping) else {}
    text = " ".join(str(v) for v in (meta.get("name", ""), meta.get("warning", ""), meta.get("description", ""),
                                      training.get("dataset", ""), data.get("source", ""), meta.get("provenance", "")))
    return any(word in text.lower() for word in ("synthetic", "phantom"))


def model_warning(meta: Mapping) -> str | None:
    """What every front end shows about a model before the user trusts its output."""
    if is_synthetic(meta):
        return SYNTHETIC_WARNING
    return meta.get("warning") or None


def migrate_metadata(meta: dict, path: Path) -> dict:
    """Bring an older model.json up to the current schema (in memory; the file is left as it is)."""
    version = meta.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise ModelPackageError(
            f"{path} has schema version {version!r}; this PancreasRSTN reads versions "
            f"{', '.join(map(str, READABLE_SCHEMAS))}. Upgrade PancreasRSTN or re-export the model."
        )
    if version == 1:
        meta = dict(meta)
        meta.setdefault("spacing", None)  # unknown: such a model sees every input at its own spacing
        meta.setdefault("synthetic", is_synthetic(meta))
        meta["migrated_from_schema"] = 1
        meta["schema_version"] = SCHEMA_VERSION
    return meta


def check_spacing(spacing: Sequence[float] | None) -> list[float] | None:
    if spacing is None:
        return None
    values = [float(s) for s in spacing]
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ModelPackageError(f"A model's spacing must be three positive numbers in mm (got {spacing!r}).")
    return values


def default_metadata(name: str, organ: str, label_value: int | None = None) -> dict:
    """The fields every model.json carries; callers add ``training`` and may override the rest. ``label_value``
    is the organ's value in the training labels (provenance; outputs follow ``organs``' label value rule)."""
    o = get_organ(organ)
    return {
        "name": name,
        "organ": {"name": o.name, "snomed_code": o.snomed_code, "snomed_meaning": o.snomed_meaning,
                  "label_value": int(label_value if label_value is not None else o.label_value)},
        "hu_window": DEFAULT_WINDOW.to_dict(),
        "slab_thickness": 3,
        "margin": 20,
        "canonical_layout": CANONICAL_LAYOUT,
        "spacing": None,
        "training": {},
    }


def save_model_package(directory: str | Path, models: Mapping[str, RSTN] | Mapping[str, CaiCNN], metadata: Mapping,
                       overwrite: bool = False, refiner: SliceRefiner | None = None,
                       refiner_config: RefinerConfig | None = None) -> Path:
    """Write ``model.json`` and ``model_<view>.safetensors`` files (and ``refiner.safetensors`` with its
    ``refiner_config``). Refuses to replace a package unless asked."""
    directory = Path(directory)
    if (directory / MODEL_JSON).exists() and not overwrite:
        raise OutputExistsError(f"A model package already exists in {directory}. Pass overwrite=True / --overwrite "
                                "to replace it.")
    bad = [v for v in models if v not in VIEWS]
    if bad or not models:
        raise ModelPackageError(f"Views must be a non-empty subset of X, Y, Z (got {list(models)}).")
    directory.mkdir(parents=True, exist_ok=True)
    configs = {json.dumps(m.config.to_dict(), sort_keys=True) for m in models.values()}
    if len(configs) != 1:
        raise ModelPackageError("All views of a package must share one backbone and saliency configuration.")
    files = {}
    for view, model in models.items():
        filename = f"model_{view}.safetensors"
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(directory / filename), metadata={"view": view, "format": "pt"})
        files[view] = {"path": filename, "sha256": sha256_of(directory / filename)}
    meta = dict(metadata)
    meta["spacing"] = check_spacing(meta.get("spacing"))
    config = next(iter(models.values())).config
    if isinstance(next(iter(models.values())), CaiCNN):
        meta.update({"method": "cai", "network": network_dict(config)})
        meta.pop("rstn", None)
    else:
        meta["rstn"] = config.to_dict()
    meta.pop("refiner", None)
    if refiner is not None:
        _save_refiner(directory, refiner, refiner_config or RefinerConfig(refiner.direction, refiner.window), meta)
    meta.update({
        "schema_version": SCHEMA_VERSION,
        "views": sorted(models),
        "files": files,
        "created": meta.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    organ = meta.get("organ", "pancreas")  # a name, or the full record
    organ_name = organ.get("name", "pancreas") if isinstance(organ, dict) else organ
    for key, value in default_metadata(meta.get("name", directory.name), organ_name).items():
        meta.setdefault(key, value)
    if isinstance(meta["organ"], str):
        meta["organ"] = default_metadata(meta["name"], meta["organ"])["organ"]
    meta["synthetic"] = is_synthetic(meta)  # explicit from schema 2 on
    (directory / MODEL_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def _save_refiner(directory: Path, refiner: SliceRefiner, config: RefinerConfig, meta: dict) -> None:
    state = {k: v.detach().to("cpu").contiguous() for k, v in refiner.state_dict().items()}
    save_file(state, str(directory / REFINER_FILE), metadata={"format": "pt"})
    meta["refiner"] = {**config.to_dict(), "path": REFINER_FILE, "sha256": sha256_of(directory / REFINER_FILE)}


def read_metadata(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / MODEL_JSON
    if not directory.is_dir():
        raise ModelPackageError(f"Model folder not found: {directory}. Give the folder that holds model.json.")
    if not path.is_file():
        raise ModelPackageError(f"{directory} is not a model package: it has no model.json.")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelPackageError(f"{path} is not valid JSON ({exc}). The package is corrupt: re-install it.") from exc
    if not isinstance(meta, dict):
        raise ModelPackageError(f"{path} does not hold a JSON object. The package is corrupt: re-install it.")
    meta = migrate_metadata(meta, path)
    validate_metadata(meta, path)  # every field the code reads, against the one schema
    return meta


def verify_model_package(directory: str | Path, views: tuple[str, ...] | None = None) -> dict[str, str]:
    """Check every weight file (and the refiner's) against its sha256 in model.json; returns view (or "refiner")
    -> hash."""
    directory = Path(directory)
    meta = read_metadata(directory)
    checked = {}
    for view in views or tuple(meta["views"]):
        entry = meta["files"].get(view)
        if entry is None:
            raise ModelPackageError(
                f"The model in {directory} has no weights for view {view} (views: {', '.join(meta['views'])})."
            )
        checked[view] = _verified(directory / entry["path"], entry["sha256"], f"view {view}")
    if meta.get("refiner") is not None:
        checked["refiner"] = _verified(directory / meta["refiner"]["path"], meta["refiner"]["sha256"], "the refiner")
    return checked


def _verified(path: Path, expected: str, what: str) -> str:
    if not path.is_file():
        raise ModelPackageError(f"Missing weight file {path} for {what}. Re-install the model package.")
    if path.resolve().parent != path.parent.resolve():
        raise ModelPackageError(f"The weight file {path.name} for {what} is a link to {path.resolve()}, outside the "
                                "package: a package holds its weight files itself. Copy the file into the package "
                                "folder in place of the link.")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelPackageError(
            f"Hash mismatch for {path.name}: model.json says {expected[:16]}..., the file has "
            f"{actual[:16]}.... The file is corrupt or was modified: re-install the model package."
        )
    return actual


def load_model_package(directory: str | Path, device: str | torch.device = "cpu", views: tuple[str, ...] | None = None,
                       verify: bool = True) -> ModelPackage:
    """Load (and by default verify) a package's per-view networks (RSTNs, or Cai et al.'s CNN) and its refiner."""
    directory = Path(directory)
    meta = read_metadata(directory)
    views = tuple(views or meta["views"])
    if verify:
        verify_model_package(directory, views)
    cai = package_method(meta) == "cai"
    config = network_config(meta["network"]) if cai else RSTNConfig.from_dict(meta["rstn"])
    models = {}
    for view in views:
        if view not in meta["files"]:
            raise ModelPackageError(f"The model in {directory} has no weights for view {view}.")
        path = directory / meta["files"][view]["path"]
        model = CaiCNN(config) if cai else RSTN(config)
        models[view] = _load_weights(model, path).to(device).eval()
    refiner = None
    if meta.get("refiner") is not None:
        refiner_config = RefinerConfig.from_dict(meta["refiner"])
        refiner = _load_weights(refiner_config.build(), directory / meta["refiner"]["path"]).to(device).eval()
    return ModelPackage(directory, meta, config, models, refiner)


def _load_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Strictly load a safetensors file into ``model`` (names and shapes must match)."""
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelPackageError(f"Cannot read {path}: {exc}. The file is corrupt: re-install the model.") from exc
    if isinstance(model, RSTN):
        return load_reference_state_dict(model, state, source=path.name)
    expected = model.state_dict()
    if set(state) != set(expected) or any(tuple(state[k].shape) != tuple(v.shape) for k, v in expected.items()):
        raise ModelPackageError(f"{path.name} does not fit its {type(model).__name__} as model.json describes it "
                                f"({len(state)} tensors, {len(expected)} expected). Re-install the model package.")
    model.load_state_dict(state, strict=True)
    return model


def package_summary(directory: str | Path) -> dict:
    """What ``models info`` prints: identity, organ, backbone, views, provenance, sizes."""
    directory = Path(directory)
    meta = read_metadata(directory)
    weights = [directory / f["path"] for f in meta["files"].values()]
    if meta.get("refiner"):
        weights.append(directory / meta["refiner"]["path"])
    size = sum(p.stat().st_size for p in weights if p.exists())
    return {
        "path": str(directory),
        "name": meta["name"],
        "organ": meta["organ"],
        "method": package_method(meta),
        "backbone": network_record(meta).get("backbone"),
        "saliency": network_record(meta).get("saliency"),
        "refiner": meta.get("refiner"),
        "views": meta["views"],
        "size_mb": round(size / 1e6, 2),
        "spacing": model_spacing(meta),
        "synthetic": is_synthetic(meta),
        "warning": model_warning(meta),
        "intended_use": meta.get("intended_use"),
        "evaluation": meta.get("evaluation"),
        "training": meta.get("training", {}),
        "schema_version": meta["schema_version"],
        "migrated_from_schema": meta.get("migrated_from_schema"),
    }
