"""A uniform weight average ("model soup": Wortsman et al., ICML 2022) of model packages that were trained on from
one start. Fine-tunings of one model stay in one basin, so the average of their weights is one network of the same
size and speed whose accuracy is usually at least that of its members; an ensemble of their outputs would cost each
member's size and time again."""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..errors import ModelPackageError, OutputExistsError
from ..io.model_package import MODEL_JSON, ModelPackage, load_model_package, save_model_package

#: model.json fields that must agree for weights to be averaged: the network, the views and the input they read
MUST_AGREE = ("rstn", "views", "spacing", "hu_window")


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point tensors (computed in float64, stored in their own dtype); integer
    tensors (BatchNorm's batch counters) are taken from the first state."""
    if len(states) < 2:
        raise ModelPackageError(f"A weight average needs two or more models (got {len(states)}).")
    names = set(states[0])
    for state in states[1:]:
        if set(state) != names or any(state[k].shape != states[0][k].shape for k in names):
            raise ModelPackageError("The models' weights differ in names or shapes: only models of one architecture "
                                    "can be averaged.")
    out = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            mean = torch.stack([s[name].double() for s in states]).mean(dim=0)
            out[name] = mean.to(first.dtype)
        else:
            out[name] = first.clone()
    return out


def _average_module(modules: Sequence[torch.nn.Module]) -> torch.nn.Module:
    averaged = copy.deepcopy(modules[0])
    averaged.load_state_dict(average_state_dicts([m.state_dict() for m in modules]), strict=True)
    return averaged


def check_compatible(packages: Sequence[ModelPackage]) -> None:
    """Refuse packages whose weights cannot be averaged, naming the field that differs."""
    first = packages[0]
    if first.method != "rstn":
        raise ModelPackageError(f"Only RSTN packages can be averaged ({first.path} is {first.method}).")
    for other in packages[1:]:
        for key in MUST_AGREE:
            if json.dumps(first.metadata.get(key), sort_keys=True) != json.dumps(other.metadata.get(key),
                                                                                    sort_keys=True):
                raise ModelPackageError(f"{first.path} and {other.path} differ in {key!r}: "
                                        "only fine-tunings of one model can be averaged.")
        if (first.refiner is None) != (other.refiner is None):
            raise ModelPackageError(f"{first.path} and {other.path}: one has a refiner and the other has not.")


def soup_packages(sources: Sequence[str | Path], target: str | Path, metadata: Mapping | None = None,
                  overwrite: bool = False) -> Path:
    """Write the weight average of ``sources`` (verified packages) as a new package in ``target``, whole or not at
    all (written beside it, then renamed). Its model.json is the first source's, without its measured accuracy (the
    average has not been evaluated), with ``metadata`` on top and a ``soup`` record of the sources' names and
    weight hashes. A folder that is not a model package is never replaced; a package only with ``overwrite``."""
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        if not (target / MODEL_JSON).is_file():
            raise OutputExistsError(f"{target} exists and is not a model package: choose a new folder.")
        if not overwrite:
            raise OutputExistsError(f"A model package already exists in {target}. Pass overwrite=True / "
                                    "--overwrite to replace it.")
    packages = [load_model_package(s) for s in sources]
    if len(packages) < 2:
        raise ModelPackageError(f"A weight average needs two or more model packages (got {len(packages)}).")
    check_compatible(packages)
    first = packages[0]
    models = {view: _average_module([p.models[view] for p in packages]) for view in first.views}
    refiner = _average_module([p.refiner for p in packages]) if first.refiner is not None else None
    meta = {k: v for k, v in first.metadata.items() if k not in ("files", "created", "refiner", "evaluation")}
    meta.update(metadata or {})
    meta["soup"] = {"method": "uniform weight average", "of": [
        {"name": p.metadata.get("name", p.path.name),
         "weights_sha256": {f["path"]: f["sha256"] for f in p.metadata["files"].values()}}  # verified on load
        for p in packages]}
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        save_model_package(staging, models, meta, refiner=refiner, refiner_config=first.refiner_config)
        _replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _replace_folder(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; a folder already there is set aside first and put back if the move fails."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}") if target.exists() else None
    if old is not None:
        os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
