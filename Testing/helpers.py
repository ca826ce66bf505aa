"""Small builders shared by tests: tiny real models and packages (random weights), CT images on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from PancreasRSTNLib.io.model_package import default_metadata, save_model_package
from PancreasRSTNLib.models.model import RSTN, RSTNConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = RSTNConfig(backbone="light", backbone_kwargs={"widths": (4, 8)})


def demo_model_dir() -> Path:
    """The bundled synthetic demo model package (trained on phantoms: the tests' phantoms match it)."""
    folder = ROOT / "Resources" / "Models" / "PancreasRSTN-demo-phantom-light"
    assert (folder / "model.json").is_file(), f"the bundled demo model is missing: {folder}"
    return folder


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


def write_dicom_series(image: sitk.Image, folder: Path, series_uid: str = "1.2.826.0.1.3680043.2.1125.1.1",
                       prefix: str = "IM") -> Path:
    """``image`` as a DICOM CT series (one file per slice, our series UID kept), HU = stored value."""
    folder.mkdir(parents=True, exist_ok=True)
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # keep our series UID, so the slices form one series
    for k in range(image.GetSize()[2]):
        sl = image[:, :, k]
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0008|0060", "CT"), ("0020|000e", series_uid),
                           ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.2"),
                           ("0008|0018", f"{series_uid}.{k + 1}"), ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(f"{v:.4f}" for v in origin)),
                           ("0020|0037", "\\".join(f"{v:.6f}" for v in direction[0:7:3] + direction[1:8:3])),
                           ("0028|0030", f"{image.GetSpacing()[1]:.5f}\\{image.GetSpacing()[0]:.5f}"),
                           ("0018|0050", f"{image.GetSpacing()[2]:.5f}"), ("0028|1052", "0"), ("0028|1053", "1")):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:04d}.dcm"))
        writer.Execute(sl)
    return folder


def demo_model_as(organ: str, directory: Path) -> Path:
    """The bundled demo model relabelled as another organ (its training labels marked it with 1): a model that
    finds something in the tests' phantoms, for checks of what an organ's outputs look like. It is marked
    not synthetic so that a default choice (the Slicer Logic's) takes it."""
    import json
    import shutil

    folder = shutil.copytree(demo_model_dir(), directory)
    meta = json.loads((folder / "model.json").read_text())
    meta["organ"] = default_metadata(meta["name"], organ, label_value=1)["organ"]
    meta["name"], meta["synthetic"] = f"relabelled-{organ}-test", False  # so that the Slicer Logic picks it
    (folder / "model.json").write_text(json.dumps(meta, indent=2))
    return folder
