"""Shared fixtures. Tests that read ../shared skip with a reason when it is absent (a user's checkout)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "PancreasRSTN"))  # the core, also when it is not pip-installed
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "reference").is_dir():
        pytest.skip(f"the shared reference data folder {SHARED} is absent (only in the developers' checkout)")
    return SHARED


@pytest.fixture(scope="session")
def demo():
    """The bundled synthetic demo model package, loaded (its phantoms are the engine tests' cases)."""
    from helpers import demo_model_dir
    from PancreasRSTNLib.io.model_package import load_model_package

    return load_model_package(demo_model_dir())


@pytest.fixture(scope="session")
def phantom():
    """An unseen phantom at the demo model's native scale (128x128x64): canonical HU and the organ's mask."""
    from PancreasRSTNLib.phantom import make_phantom_canonical

    hu, labels = make_phantom_canonical(size=(128, 128, 64), seed=1234)
    return hu, labels == 1
