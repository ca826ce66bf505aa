"""The one schema of ``model.json``, checked whenever a package is read (load, verify, install, list, info).

Why: a package that lies about itself failed late and badly: a ``spacing`` of zero or of the wrong type gave a
traceback mid-run, a missing ``spacing`` silently switched resampling off, an inverted HU window ran, and a weight
"file name" such as ``../x.safetensors`` made ``models verify`` and ``models install`` depend on files outside the
package. Every field the code reads is checked here, once, and a bad one is a ``ModelPackageError`` naming the
field, the value and what it must be. Weight files are plain names inside the package, never paths.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

from ..errors import ModelPackageError
from ..views import VIEWS

#: The methods a package may hold: RSTN, the stage-wise C2F baseline, Cai et al.'s CNN (+ refiner).
METHODS = ("rstn", "c2f", "cai")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
FIX = "Fix model.json (or re-export the model with PancreasRSTN), then try again."


#: model.json ``inference`` weights, each in [0, 1) (``engine.config.InferenceConfig`` says what each does)
INFERENCE_WEIGHTS = ("prior_weight", "coarse_weight", "previous_weight")

def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def plain_file_name(name: object) -> bool:
    """A file name with no folder part: not empty, no '/' or '\\', not '.' or '..', no drive, not hidden."""
    return (isinstance(name, str) and name not in ("", ".", "..") and not re.search(r"[/\\:\x00]", name)
            and not name.startswith("."))


class _Checker:
    """Collects what is wrong with one model.json, field by field."""

    def __init__(self, meta: Mapping) -> None:
        self.meta = meta
        self.problems: list[str] = []

    def need(self, ok: bool, field: str, what: str) -> bool:
        if not ok:
            self.problems.append(f"'{field}' must be {what} (it is {self.meta_value(field)!r})")
        return ok

    def meta_value(self, field: str) -> object:
        value: object = self.meta
        for part in field.split("."):
            value = value.get(part, "missing") if isinstance(value, Mapping) else "missing"
        return value

    def weight_entry(self, entry: object, field: str) -> None:
        if not self.need(isinstance(entry, Mapping), field, "an object with 'path' and 'sha256'"):
            return
        path, sha = entry.get("path"), entry.get("sha256")
        if not plain_file_name(path):
            self.problems.append(f"'{field}.path' must be a file name inside the package, not a path (it is "
                                 f"{path!r})")
        self.need(isinstance(sha, str) and bool(_SHA256.match(sha)), f"{field}.sha256", "64 lower-case hex digits")


def validate_metadata(meta: Mapping, path: Path) -> None:
    """Raise ``ModelPackageError`` listing every field of ``meta`` (a migrated model.json) that breaks the schema."""
    c = _Checker(meta)
    c.need(isinstance(meta.get("name"), str) and bool(meta.get("name", "").strip()), "name", "a non-empty text")
    method = meta.get("method", "rstn")
    c.need(method in METHODS, "method", f"one of {', '.join(METHODS)}")
    _organ(c, meta.get("organ"))
    record = "network" if method == "cai" else "rstn"
    if c.need(isinstance(meta.get(record), Mapping), record, "an object (the network's configuration)"):
        _network(c, meta[record], record)
    views = meta.get("views")
    if c.need(isinstance(views, list) and bool(views) and all(v in VIEWS for v in views) and len(set(views)) == len(
            views), "views", "a non-empty list of distinct views from X, Y, Z"):
        files = meta.get("files")
        if c.need(isinstance(files, Mapping), "files", "an object mapping each view to its weight file"):
            for view in views:
                c.weight_entry(files.get(view), f"files.{view}")
    _spacing(c, meta)
    _window(c, meta.get("hu_window"))
    if meta.get("refiner") is not None:
        c.weight_entry(meta["refiner"], "refiner")
        _refiner(c, meta["refiner"])
    for key, low in (("margin", 0), ("slab_thickness", 1)):
        if key in meta:
            c.need(_whole(meta[key]) and meta[key] >= low, key, f"a whole number >= {low}")
    if "synthetic" in meta:
        c.need(isinstance(meta["synthetic"], bool), "synthetic", "true or false")
    if "inference" in meta:
        inference = meta["inference"]
        known = isinstance(inference, Mapping)
        rounds = [inference.get(k, 0) for k in ("max_iter", "prior_max_iter")] if known else [None]
        weights = [inference.get(k, 0.0) for k in INFERENCE_WEIGHTS] if known else [None]
        c.need(known and set(inference) <= {"max_iter", "prior_max_iter", *INFERENCE_WEIGHTS}
               and all(_whole(r) and r >= 0 for r in rounds)
               and all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w < 1 for w in weights),
               "inference",
               "an object with 'max_iter' (and optionally 'prior_max_iter'), whole numbers >= 0 (the fine rounds the "
               "model was validated to run, from its coarse round and from a person's prior), and optionally "
               "'prior_weight', 'coarse_weight' and 'previous_weight' in [0, 1)")
    if c.problems:
        raise ModelPackageError(f"{path} breaks the model.json schema: {'; '.join(c.problems)}. {FIX}", fix=FIX)


def _organ(c: _Checker, organ: object) -> None:
    if not c.need(isinstance(organ, Mapping), "organ", "an object with 'name' and 'label_value'"):
        return
    c.need(isinstance(organ.get("name"), str) and bool(organ.get("name")), "organ.name", "a non-empty text")
    if "label_value" in organ:
        value = organ["label_value"]
        c.need(_whole(value) and 1 <= value <= 255, "organ.label_value", "a whole number from 1 to 255 (the value "
               "of the organ in the training labels)")


def _network(c: _Checker, record: Mapping, field: str) -> None:
    if "backbone" in record:
        c.need(isinstance(record["backbone"], str), f"{field}.backbone", "a backbone name")
    if "backbone_kwargs" in record:
        c.need(isinstance(record["backbone_kwargs"], Mapping), f"{field}.backbone_kwargs", "an object")
    saliency = record.get("saliency")
    if saliency is not None and c.need(isinstance(saliency, Mapping), f"{field}.saliency", "an object"):
        kernels = saliency.get("kernels", [3, 5])
        c.need(isinstance(kernels, list) and 1 <= len(kernels) <= 2 and all(_whole(k) and k > 0 and k % 2 for k in
                                                                             kernels),
               f"{field}.saliency.kernels", "one or two odd positive kernel sizes")


def _spacing(c: _Checker, meta: Mapping) -> None:
    if "spacing" not in meta:  # schema 2 asks for it: without it, resampling was silently off
        c.problems.append("'spacing' is missing: give the voxel spacing the model was trained at, in mm "
                          "([rows, cols, slices]), or null to run every CT at its own spacing")
        return
    spacing = meta["spacing"]
    if spacing is not None:
        c.need(isinstance(spacing, list) and len(spacing) == 3 and all(_number(s) and s > 0 for s in spacing),
               "spacing", "three positive numbers in mm, or null")


def _window(c: _Checker, window: object) -> None:
    if window is None:
        return
    if not c.need(isinstance(window, Mapping) and set(window) <= {"low", "high"}, "hu_window",
                  "an object with 'low' and 'high' (HU)"):
        return
    low, high = window.get("low", -100.0), window.get("high", 240.0)
    if c.need(_number(low) and _number(high), "hu_window", "two finite numbers 'low' and 'high'"):
        c.need(low < high, "hu_window", "a window whose 'low' is below its 'high'")


def _refiner(c: _Checker, record: Mapping) -> None:
    from ..models.clstm import RefinerConfig

    try:
        RefinerConfig.from_dict(record)
    except (TypeError, ValueError) as exc:
        c.problems.append(f"'refiner' is not a refiner this version builds ({exc})")
