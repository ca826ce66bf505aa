"""Where models live and how users add them: a per-user models folder plus the models shipped with the code.

Pure Python (no Slicer): the Slicer model manager and the CLI share it. A model is a folder with
``model.json`` and one safetensors file per view (see ``model_package``). Installing copies into the user
folder and never overwrites an installed model unless asked. When no model is named, the best installed one
for the organ is used: the user's own before the bundled ones, never a synthetic one.
"""

from __future__ import annotations

import os
import shutil
import site
import stat
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelPackageError, OutputExistsError
from .model_package import SYNTHETIC_WARNING as SYNTHETIC_WARNING  # re-exported: the model manager shows it
from .model_package import is_synthetic, model_spacing, model_warning, network_record, read_metadata

MODELS_ENV = "PANCREAS_RSTN_MODELS"
DATA_PREFIX = ("share", "pancreas-rstn")
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # PancreasRSTNLib/
_REPO_ROOT = _PACKAGE_ROOT.parents[1]


def user_models_dir(create: bool = True) -> Path:
    """The per-user models folder: $PANCREAS_RSTN_MODELS, else the platform's per-user data folder."""
    env = os.environ.get(MODELS_ENV)
    if env:
        root = Path(env).expanduser()
    elif sys.platform.startswith("win"):
        root = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "PancreasRSTN" / "models"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support" / "PancreasRSTN" / "models"
    else:
        root = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "PancreasRSTN" / "models"
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root


def _pip_data_dirs(name: str) -> list[Path]:
    """<prefix>/share/pancreas-rstn/<name> of the installed distribution, read from its file list (so a venv,
    the system, ``--user`` and ``--prefix`` installs are all found)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("pancreas-rstn")
    except PackageNotFoundError:
        return []
    marker = (*DATA_PREFIX, name)
    found: list[Path] = []
    for entry in dist.files or []:
        parts = Path(str(entry)).parts
        for i in range(len(parts) - len(marker) + 1):
            if parts[i:i + len(marker)] == marker:
                found.append(Path(str(dist.locate_file(Path(*parts[:i + len(marker)])))))
                break
    return found


def installed_data_dirs(name: str) -> list[Path]:
    """Folders named ``name`` (Models, SampleData) shipped with the code, wherever this install put them: the
    repository's Resources/ (development, editable installs), the module's Resources/ (built Slicer extension),
    and <prefix>/share/pancreas-rstn/ of a pip install."""
    candidates = [_REPO_ROOT / "Resources" / name, _PACKAGE_ROOT.parent / "Resources" / name,
                  *_pip_data_dirs(name), Path(sys.prefix).joinpath(*DATA_PREFIX, name),
                  Path(site.getuserbase()).joinpath(*DATA_PREFIX, name)]
    seen: list[Path] = []
    for c in candidates:
        c = c.resolve()
        if c.is_dir() and c not in seen:
            seen.append(c)
    return seen


def bundled_models_dirs() -> list[Path]:
    """Folders holding the models shipped with the code (see ``installed_data_dirs``)."""
    return installed_data_dirs("Models")


@dataclass
class ModelInfo:
    """What the model manager lists about one installed model (read from model.json, weights not loaded)."""

    path: Path
    name: str
    organ: str
    backbone: str
    views: list[str]
    provenance: str
    source: str  # "user" | "bundled"
    synthetic: bool = False
    metadata: dict = field(default_factory=dict, repr=False)

    @property
    def warning(self) -> str:
        return model_warning(self.metadata) or ""

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        return model_spacing(self.metadata)

    @property
    def held_out_dsc(self) -> float | None:
        """Mean DSC on patients the model never saw, as measured by whoever trained it (model.json)."""
        evaluation = self.metadata.get("evaluation")
        value = evaluation.get("held_out_dsc") if isinstance(evaluation, dict) else None
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def label(self) -> str:
        """One line for combo boxes."""
        extra = " [synthetic demo, not for clinical use]" if self.synthetic else ""
        return f"{self.name} ({self.backbone}, {'/'.join(self.views)}){extra}"


def read_model_info(folder: str | Path, source: str = "user") -> ModelInfo:
    """Describe a model folder from its model.json; raises ModelPackageError when it is not one."""
    folder = Path(folder)
    meta = read_metadata(folder)  # the one reading of model.json: JSON, migration, the schema
    organ_name = meta["organ"]["name"]
    rstn = network_record(meta)  # RSTN's ``rstn``, Cai et al.'s ``network``
    training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    provenance = meta.get("provenance") or training.get("source") or training.get("dataset") or ""
    return ModelInfo(
        path=folder,
        name=str(meta.get("name") or folder.name),
        organ=str(organ_name or "unknown"),
        backbone=str(rstn.get("backbone", "fcn8s")),
        views=[str(v) for v in meta.get("views", [])],
        provenance=str(provenance),
        source=source,
        synthetic=is_synthetic(meta),
        metadata=meta,
    )


def list_models(user_root: str | Path | None = None, include_bundled: bool = True) -> list[ModelInfo]:
    """Every model in the user folder, then the bundled ones; unreadable folders are skipped."""
    roots: list[tuple[Path, str]] = [(Path(user_root) if user_root else user_models_dir(), "user")]
    if include_bundled:
        roots += [(r, "bundled") for r in bundled_models_dirs()]
    found: list[ModelInfo] = []
    for root, source in roots:
        if not root.is_dir():
            continue
        candidates = [root] if (root / "model.json").is_file() else sorted(p for p in root.iterdir() if p.is_dir())
        for folder in candidates:
            try:
                found.append(read_model_info(folder, source))
            except ModelPackageError:
                continue
    return found


def preference(m: ModelInfo) -> tuple:
    """Sort key of the default choice: real before synthetic, the user's own before the bundled ones, then the
    best measured held-out DSC, then the name."""
    dsc = m.held_out_dsc
    return (m.synthetic, m.source != "user", -(dsc if dsc is not None else -1.0), m.name)


def models_by_organ(models: list[ModelInfo]) -> dict[str, list[ModelInfo]]:
    """Group models by organ, each group in order of preference."""
    groups: dict[str, list[ModelInfo]] = {}
    for m in sorted(models, key=preference):
        groups.setdefault(m.organ, []).append(m)
    return groups


def find_model(organ: str, models: list[ModelInfo]) -> ModelInfo:
    """The default model for an organ: the preferred real (non-synthetic) one. A synthetic model is never
    chosen by default (it would be run on a real CT); a ModelPackageError says what is installed and what to do."""
    groups = models_by_organ(models)
    real = [m for m in groups.get(organ, []) if not m.synthetic]
    if real:
        return real[0]
    if organ in groups:
        names = ", ".join(m.name for m in groups[organ])
        raise ModelPackageError(
            f"Only synthetic demo models are installed for organ '{organ}' ({names}): they were trained on phantoms "
            "and find nothing in a real CT, so none is used by default. Install a model trained on real CT (model "
            "manager, or `pancreas-rstn models install`), or name the synthetic one explicitly (--model NAME) to "
            "try it on a phantom."
        )
    installed = ", ".join(sorted(groups)) or "none"
    raise ModelPackageError(
        f"No model is installed for organ '{organ}' (models installed for: {installed}). Install one in the "
        f"model manager (Install folder/zip, or Import reference .pkl), or train one."
    )


def resolve_model(spec: str | Path | None, organ: str = "pancreas", user_root: str | Path | None = None) -> ModelInfo:
    """What ``--model`` names: a model folder, the name of an installed or bundled model (as ``models list``
    shows it), or nothing (the default model for ``organ``)."""
    models = list_models(user_root)
    if spec is None or str(spec) == "":
        return find_model(organ, models)
    path = Path(spec).expanduser()
    if path.is_dir():
        return read_model_info(path, "folder")
    matches = [m for m in sorted(models, key=preference) if str(spec) in (m.name, m.path.name)]
    if matches:
        return matches[0]
    if path.suffix or os.sep in str(spec) or "/" in str(spec):
        raise ModelPackageError(f"Model folder not found: {path}. Give a folder holding model.json, or the name of "
                                "a model that `pancreas-rstn models list` shows.")
    names = ", ".join(sorted({m.name for m in models})) or "none"
    raise ModelPackageError(f"No model named '{spec}' is installed (installed and bundled: {names}). Give one of "
                            "these names or a model folder; `pancreas-rstn models list` shows them.")


def _find_model_root(folder: Path) -> Path:
    if (folder / "model.json").is_file():
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", "."))]
    if len(subdirs) == 1 and (subdirs[0] / "model.json").is_file():
        return subdirs[0]
    raise ModelPackageError(f"No model.json found in {folder} (nor in a single sub-folder). "
                            "Is this a PancreasRSTN model?")


def _safe_extract(archive: zipfile.ZipFile, target: Path) -> None:
    """Extract, refusing members that would land outside ``target`` (zip-slip) and symbolic links (a package
    holds its files itself)."""
    target = target.resolve()
    for member in archive.infolist():
        dest = (target / member.filename).resolve()
        if target != dest and target not in dest.parents:
            raise ModelPackageError(f"The zip holds an unsafe path '{member.filename}'; refusing to extract it.")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise ModelPackageError(f"The zip holds a symbolic link, '{member.filename}'; a model package holds its "
                                    "files themselves. Zip the package folder again without links.")
    archive.extractall(target)


def _folder_name(info: ModelInfo) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in info.name).strip("._")
    return keep or "model"


def install_model(source: str | Path, user_root: str | Path | None = None, overwrite: bool = False,
                  verify: bool = True) -> ModelInfo:
    """Install a model folder or a .zip of one into the user folder; returns the installed model.

    The copy is verified (sha256 of every weight file) before it replaces anything; an existing model of the
    same name is kept unless ``overwrite``."""
    source = Path(source)
    root = Path(user_root) if user_root else user_models_dir()
    root.mkdir(parents=True, exist_ok=True)
    if not source.exists():
        raise ModelPackageError(f"Model source not found: {source}.")
    with tempfile.TemporaryDirectory(dir=root, prefix=".installing-") as tmp:
        tmp_path = Path(tmp)
        if source.is_file():
            if not zipfile.is_zipfile(source):
                raise ModelPackageError(f"{source} is neither a model folder nor a .zip file.")
            with zipfile.ZipFile(source) as archive:
                _safe_extract(archive, tmp_path / "unzipped")
            model_root = _find_model_root(tmp_path / "unzipped")
        else:
            model_root = _find_model_root(source)
        info = read_model_info(model_root)
        staged = tmp_path / "staged"
        shutil.copytree(model_root, staged, symlinks=True)  # links stay links: verify refuses any leading outside
        if verify:
            verify_model(staged)
        dest = root / _folder_name(info)
        if dest.exists():
            if not overwrite:
                raise OutputExistsError(
                    f"A model named '{info.name}' is already installed at {dest}. "
                    "Remove it first or choose to overwrite."
                )
            shutil.rmtree(dest)
        shutil.move(str(staged), dest)
    return read_model_info(dest, "user")


def verify_model(folder: str | Path) -> None:
    """Check the weight files' sha256 against model.json (raises ModelPackageError on a mismatch)."""
    from .model_package import verify_model_package

    verify_model_package(Path(folder))


def verify_all(models: list[ModelInfo]) -> dict[Path, str]:
    """Verify every model; maps its folder to "OK" or the error message (for the model manager)."""
    report: dict[Path, str] = {}
    for m in models:
        try:
            verify_model(m.path)
            report[m.path] = "OK"
        except ModelPackageError as exc:
            report[m.path] = str(exc)
    return report


def import_reference(checkpoints: dict[str, str | Path], organ: str = "pancreas",
                     user_root: str | Path | None = None, name: str | None = None,
                     overwrite: bool = False) -> ModelInfo:
    """Convert the reference per-view .pkl checkpoints ({"X": path, ...}) into a model in the user folder."""
    from .reference_import import import_reference_checkpoints

    root = Path(user_root) if user_root else user_models_dir()
    name = name or f"rstn-reference-{organ}"
    dest = root / name
    if dest.exists() and not overwrite:
        raise OutputExistsError(f"{dest} exists already. Remove it first or choose to overwrite.")
    checkpoints = {view: Path(path) for view, path in checkpoints.items() if path}
    import_reference_checkpoints(checkpoints, dest, organ, name=name, overwrite=overwrite)
    return read_model_info(dest, "user")
