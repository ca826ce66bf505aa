"""The module's Python dependencies inside Slicer: torch through the PyTorch extension (PyTorchUtils, with a
minimum version), the rest with ``slicer.util.pip_install`` only when missing. Slicer's own numpy, SimpleITK
and vtk are never replaced. No Qt."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import sys

MIN_TORCH_VERSION = "2.5"
PIP_REQUIREMENTS = {"safetensors": "safetensors>=0.4", "tqdm": "tqdm>=4.60"}  # never numpy / SimpleITK / vtk


def torch_version() -> str:
    """Installed torch version, read from its metadata without importing torch."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def missing_packages() -> list[str]:
    """Python packages the core needs that are not importable in Slicer's Python."""
    missing = [name for name in ("torch", *PIP_REQUIREMENTS) if importlib.util.find_spec(name) is None]
    if "torch" not in missing:
        version = torch_version()
        try:
            found = tuple(int(x) for x in version.split("+")[0].split(".")[:2])
        except ValueError:  # unknown or unusual version string: let the import decide later
            found = None
        if found is not None and found < tuple(int(x) for x in MIN_TORCH_VERSION.split(".")[:2]):
            missing.insert(0, f"torch>={MIN_TORCH_VERSION} (found {version})")
    return missing


def status_text(missing: list[str]) -> str:
    if missing:
        return "Missing: " + ", ".join(missing) + ". Click Install (needs network)."
    return f"All dependencies present (torch {torch_version()})."


def install_dependencies() -> None:
    """torch through the PyTorch extension, the rest with pip only when missing. Never touches numpy,
    SimpleITK or vtk (Slicer's own)."""
    import slicer

    try:
        import PyTorchUtils
    except ImportError as exc:
        raise RuntimeError("The PyTorch extension is not installed. Install 'PyTorch' from the Extensions Manager, "
                           "restart Slicer, then try again.") from exc
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled() or any(m.startswith("torch>=") for m in missing_packages()):
        torch = torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=f">={MIN_TORCH_VERSION}")
        if torch is None:
            raise RuntimeError("torch could not be installed. If this computer is offline, install torch with the "
                               "PyTorch extension on a connected machine, or pip-install wheels from a local folder.")
    for module, requirement in PIP_REQUIREMENTS.items():
        if importlib.util.find_spec(module) is None:
            try:
                slicer.util.pip_install(requirement)
            except Exception as exc:  # noqa: BLE001
                raise RuntimeError(f"Could not install {requirement} ({exc}). Without network access, run "
                                   f"slicer.util.pip_install('--no-index --find-links=<folder> {module}') with "
                                   "downloaded wheels.") from exc


def slicer_python() -> str:
    """Slicer's Python for child processes (PythonSlicer), else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable
