"""Fixtures for the Logic tests on real MRML (Kitware's Qt-free slicer-core wheel).

This folder must not be named ``slicer``: the slicer-core package extends its ``__path__`` with every
``slicer`` folder on sys.path and would import these files as Slicer modules.

Install it with ``pip install slicer-core`` (CI does). Without it these tests are skipped, and a skip is
not a pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core) for real MRML")

import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

pytestmark = pytest.mark.slicer


@pytest.fixture
def ctx():
    from PancreasRSTNSlicerLib.scene import create_core_context

    context = create_core_context()
    yield context
    context.scene.Clear(True)


def _tiny_package(directory: Path, organ: str, seed: int, name: str | None = None) -> Path:
    from PancreasRSTNLib.io.model_package import default_metadata, save_model_package
    from PancreasRSTNLib.models.model import RSTN, RSTNConfig

    torch.manual_seed(seed)
    config = RSTNConfig(backbone="light", backbone_kwargs={"widths": (4, 8)})
    models = {v: RSTN(config) for v in ("X", "Y", "Z")}
    meta = default_metadata(name or f"tiny-{organ}", organ)
    meta["training"] = {"source": "random initialisation (tests)"}
    return save_model_package(directory, models, meta)


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    """A user models folder with tiny random light-backbone models for the pancreas and the spleen."""
    root = tmp_path_factory.mktemp("models")
    _tiny_package(root / "tiny-pancreas", "pancreas", 0)
    _tiny_package(root / "tiny-spleen", "spleen", 1)
    return root


@pytest.fixture(scope="session")
def phantom_image() -> sitk.Image:
    """A small synthetic abdominal CT (int16 HU), identity direction."""
    from PancreasRSTNLib.phantom import make_phantom

    image, _ = make_phantom(size=(40, 36, 20), seed=3)
    return image
