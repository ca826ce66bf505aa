"""Small builders shared by tests: tiny real models and packages (random weights), CT images on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from PancreasRSTNLib.model import RSTN, RSTNConfig
from PancreasRSTNLib.model_package import default_metadata, save_model_package

ROOT = Path(__file__).resolve().parents[1]
TINY = RSTNConfig(backbone="light", backbone_kwargs={"widths": (4, 8)})


def demo_model_dir() -> Path:
    """The bundled, trained demo model package."""
    found = sorted(p.parent for p in (ROOT / "Resources" / "Models").glob("*/model.json"))
    assert found, "the bundled demo model is missing from Resources/Models"
    return found[0]


def tiny_models(seed: int = 0, views: str = "XYZ") -> dict[str, RSTN]:
    torch.manual_seed(seed)
    return {v: RSTN(TINY).eval() for v in views}


def tiny_package(directory: Path, seed: int = 0, views: str = "XYZ") -> Path:
    meta = default_metadata("tiny-test-model", "pancreas")
    meta["warning"] = "random weights, for tests only"
    return save_model_package(directory, tiny_models(seed, views), meta)


def ct_image(shape_xyz=(24, 20, 12), direction=None, seed: int = 0, dtype=np.int16) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = rng.normal(0, 30, size=shape_xyz[::-1])
    array[:, :, :3] = -1000  # air
    array[:, :, 3:6] = -100  # fat
    img = sitk.GetImageFromArray(array.astype(dtype))
    img.SetSpacing((0.9, 0.9, 2.5))
    img.SetOrigin((10.0, -20.0, 30.0))
    if direction is not None:
        img.SetDirection(tuple(np.asarray(direction, float).reshape(-1)))
    return img


def rotation(axis: int, degrees: float) -> np.ndarray:
    """A rotation matrix about one axis, to build oblique direction cosines."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r
