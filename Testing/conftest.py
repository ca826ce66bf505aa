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
