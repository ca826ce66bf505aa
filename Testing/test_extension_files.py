"""The Slicer extension files: CMake metadata, .s4ext and the ExtensionsIndex .json agree; resources exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _s4ext() -> dict[str, str]:
    out = {}
    for line in (ROOT / "PancreasRSTN.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def _cmake_vars() -> dict[str, str]:
    text = (ROOT / "CMakeLists.txt").read_text()
    quoted = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    bare = dict(re.findall(r'set\((EXTENSION_\w+)\s+([^\s")]+)\)', text))
    return {**bare, **quoted}


def test_json_agrees_with_s4ext():
    entry = json.loads((ROOT / "PancreasRSTN.json").read_text())
    s4ext = _s4ext()
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert entry["scm_url"] == s4ext["scm_url"]
    assert entry["scm_revision"] == s4ext["scm_revision"]
    assert entry["category"] == s4ext["category"]
    assert entry["build_dependencies"] == s4ext["depends"].split()
    assert entry.get("build_subdirectory", ".") == s4ext["build_subdirectory"]
    assert entry["tier"] in (1, 3, 5)
    assert set(entry) <= {"$schema", "category", "scm_url", "scm_revision", "build_dependencies",
                          "build_subdirectory", "tier"}


def test_cmake_metadata_agrees_with_s4ext():
    cmake, s4ext = _cmake_vars(), _s4ext()
    assert cmake["EXTENSION_DEPENDS"] == "PyTorch" == s4ext["depends"]
    assert cmake["EXTENSION_CATEGORY"] == s4ext["category"] == "Segmentation"
    assert cmake["EXTENSION_HOMEPAGE"] == s4ext["homepage"]
    assert cmake["EXTENSION_ICONURL"] == s4ext["iconurl"]
    assert cmake["EXTENSION_DESCRIPTION"] == s4ext["description"]
    assert "add_subdirectory(PancreasRSTN)" in (ROOT / "CMakeLists.txt").read_text()


def test_module_cmake_lists_scripts_resources_and_tests():
    text = (ROOT / "PancreasRSTN" / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert "PancreasRSTNLib/*.py" in text and "PancreasRSTNSlicerLib/*.py" in text
    for resource in re.findall(r"^\s+(Resources/\S+)$", text, re.M):
        path = ROOT / "PancreasRSTN" / resource.replace("${MODULE_NAME}", "PancreasRSTN")
        assert path.is_file(), path


@pytest.mark.parametrize("icon", ["PancreasRSTN/Resources/Icons/PancreasRSTN.png", "Resources/Icons/PancreasRSTN.png"])
def test_icons_are_128px_png(icon):
    data = (ROOT / icon).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


def test_model_registry():
    registry = json.loads((ROOT / "Resources" / "model_registry.json").read_text())
    (ref,) = [m for m in registry["models"] if m["id"] == "reference-nih-pancreas-fold0"]
    assert ref["download"]["automatic"] is False and ref["download"]["url"] is None
    assert "manually" in ref["download"]["note"] and set(ref["files"]) == {"X", "Y", "Z"}
    assert all(f["sha256"] is None for f in ref["files"].values())
    assert ref["snomed_code"] == "15776009"


def test_the_extensions_index_description_checks_pass():
    """What Slicer/ExtensionsIndex's scripts/check_description_files.py checks, offline: the category is a known
    one, scm_url is git or https, the repository name holds 'slicer', CMakeLists.txt's project() is the extension
    name with http icon and screenshot URLs (pointing to files this repository has), and a licence file lies at
    the repository root."""
    from urllib.parse import urlsplit

    entry = json.loads((ROOT / "PancreasRSTN.json").read_text())
    assert entry["category"] == "Segmentation"  # in the index's ACCEPTED_EXTENSION_CATEGORIES
    assert urlsplit(entry["scm_url"]).scheme in ("git", "https")
    repo_name = Path(urlsplit(entry["scm_url"]).path).stem
    assert "slicer" in repo_name.lower()
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.findall(r"project\s*\(\s*([^\s)]+)", cmake, re.I)[0] == "PancreasRSTN"
    urls = [*re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"\s*\)', cmake),
            *re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', cmake)[0].split()]
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith("https://raw.githubusercontent.com/") and url.endswith((".png", ".jpg", ".gif"))
        assert (ROOT / url.split("/main/", 1)[1]).is_file(), url
    licence = ROOT / "LICENSE"
    assert licence.is_file() and licence.read_text().startswith("MIT License")


def test_the_wheel_metadata_names_the_licence_files():
    text = (ROOT / "pyproject.toml").read_text()  # (no tomllib on Python 3.10)
    assert re.search(r'^license = "MIT"$', text, re.M)
    files = re.findall(r'"([^"]+)"', re.search(r"^license-files = \[(.*)\]$", text, re.M).group(1))
    assert "LICENSE" in files
    for name in files:
        assert (ROOT / name).is_file(), name
