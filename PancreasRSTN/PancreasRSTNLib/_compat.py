"""Old import paths, kept for one release.

Until the core was split into subpackages, every module sat at the top (``PancreasRSTNLib.inference``). Scripts
written against those paths keep working: importing an old name returns the module at its new place (the same
module object, so patches and isinstance checks see one module) and warns once with the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

#: old top-level module -> its new place below PancreasRSTNLib
MOVED: dict[str, str] = {
    "fcn8s": "models.fcn8s", "light_unet": "models.light_unet", "backbones": "models.backbones",
    "model": "models.model",
    "inference": "engine.inference", "boxes": "engine.boxes", "postprocess": "engine.postprocess",
    "intensity": "engine.intensity", "segmentation": "engine.segmentation", "reference_loop": "engine.reference_loop",
    "c2f_inference": "engine.c2f_inference", "resampling": "engine.resampling",
    "volume_io": "io.volume_io", "geometry": "io.geometry", "model_package": "io.model_package",
    "user_models": "io.user_models", "outputs": "io.outputs", "round_files": "io.round_files",
    "trainer": "training.trainer", "training_data": "training.training_data", "datasets": "training.datasets",
    "data_cache": "training.data_cache", "losses": "training.losses", "bn_recalibration": "training.bn_recalibration",
    "augmentation": "training.augmentation", "jpeg_slices": "training.jpeg_slices",
    "metrics": "evaluation.metrics", "plots": "evaluation.plots",
    "benchmark": "evaluation.speed_benchmark", "cohort_benchmark": "evaluation.cohort_throughput",
    "demo": "app.demo", "progress": "app.progress", "background_run": "app.background_run", "cohort": "app.cohort",
    "commands": "app.commands",
}
PACKAGE = __name__.rpartition(".")[0]


def new_name(fullname: str) -> str | None:
    """``PancreasRSTNLib.commands.segment`` -> ``PancreasRSTNLib.app.commands.segment``; None if not moved."""
    prefix = PACKAGE + "."
    if not fullname.startswith(prefix):
        return None
    head, _, rest = fullname[len(prefix):].partition(".")
    if head not in MOVED:
        return None
    return prefix + MOVED[head] + ("." + rest if rest else "")


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec):  # noqa: ANN201 (a module)
        warnings.warn(f"{spec.name} moved to {self.target}; the old path works until the next release.",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(self.target)

    def exec_module(self, module: object) -> None:  # already executed at its new place
        return None


class _MovedModules(importlib.abc.MetaPathFinder):
    """Answers only for old module names (no file has them any more). It goes first on sys.meta_path: below an
    aliased package (``commands``), the path finder would otherwise load ``commands/segment.py`` a second time
    under its old name."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):  # noqa: ANN201
        target_name = new_name(fullname)
        if target_name is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(target_name))


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())
