"""Every file a run writes: checked before any work, written under temporary names, published all together.

Why: a run can take an hour (FCN-8s on a CPU). An output problem found after inference wastes it, and a run that
fails half-way must not leave half its outputs behind, nor remove anything the user had. So each output is
checked first (a format SimpleITK writes, a folder that exists or can be made, write permission, no existing
file unless ``overwrite``); results are written under hidden temporary names in their own folder; ``commit``
renames them into place once everything succeeded, and ``abort`` (any error, Ctrl-C) removes exactly what this
run made.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from types import TracebackType

from ..errors import OutputExistsError, OutputPathError

#: Single-file volume formats SimpleITK writes (two-file formats would not be published atomically).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
FORMATS_HINT = "use .nii.gz, .nii, .nrrd or .mha"


def volume_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)


class OutputPlan:
    """The outputs of one run. Use as a context manager: committed on success, aborted on any exception."""

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._files: dict[Path, Path] = {}  # final path -> staged path
        self._folders: dict[Path, Path] = {}  # final folder -> staging folder
        self._made: list[Path] = []  # folders this run created (removed on abort if still empty)
        self.committed = False

    # ------------------------------------------------------------------ checks (before any work)
    def file(self, path: str | Path, what: str) -> Path:
        """Check a volume output and reserve its staged name; returns the final path."""
        path = Path(path).expanduser()
        suffix = volume_suffix(path)
        if suffix is None:
            found = "".join(path.suffixes) or "no extension"
            raise OutputPathError(f"{what} {path}: cannot write a volume with {found}; {FORMATS_HINT}.")
        if path.is_dir():
            raise OutputPathError(f"{what} {path} is a folder; give a file name ending in {suffix}.")
        if path.exists() and not self.overwrite:
            raise OutputExistsError(f"{what} {path} already exists. Choose another name or pass --overwrite to "
                                    "replace it.")
        self.writable_folder(path.parent, what)
        self._files[path] = path.parent / f".{path.name}.partial-{self._token}{suffix}"
        return path

    def folder(self, path: str | Path, what: str) -> Path:
        """Check an output folder (round files); its staging folder is made next to it when needed."""
        path = Path(path).expanduser()
        if path.exists() and not path.is_dir():
            raise OutputPathError(f"{what} {path} is a file, not a folder. Give a folder for {what}.")
        if path.is_dir() and any(path.iterdir()) and not self.overwrite:
            raise OutputExistsError(f"{what} {path} is not empty. Choose an empty or new folder, or pass "
                                    "--overwrite (files of the same names are replaced).")
        self.writable_folder(path, what)
        self._folders[path] = path.parent / f".{path.name}.partial-{self._token}"
        return path

    def writable_folder(self, folder: Path, what: str) -> None:
        missing = []
        probe = folder
        while not probe.exists():
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        if not probe.is_dir():
            raise OutputPathError(f"{what}: {probe} is not a folder, so {folder} cannot be made.")
        try:
            for made in reversed(missing):
                made.mkdir()
                self._made.append(made)
            test = folder / f".pancreas-rstn-write-test-{self._token}"
            test.write_bytes(b"")
            test.unlink()
        except OSError as exc:
            raise OutputPathError(f"{what}: cannot write into {folder} ({exc.strerror or exc}). Choose a folder you "
                                  "can write to.") from exc

    # ------------------------------------------------------------------ writing
    def staged(self, path: Path) -> Path:
        """Where to write the output ``path`` (a file of this plan) during the run."""
        return self._files[Path(path).expanduser()]

    def staged_folder(self, path: Path) -> Path:
        """The staging folder of the output folder ``path`` (made on first use)."""
        staging = self._folders[Path(path).expanduser()]
        staging.mkdir(exist_ok=True)
        return staging

    def commit(self) -> None:
        """Publish every output: staged files renamed onto their final names, staged folders' files moved in."""
        for final, staged in self._files.items():
            if staged.exists():
                os.replace(staged, final)
        for final, staging in self._folders.items():
            if not staging.exists():
                continue
            final.mkdir(parents=True, exist_ok=True)
            for item in sorted(staging.iterdir()):
                os.replace(item, final / item.name)
            staging.rmdir()
        self.committed = True

    def abort(self) -> None:
        """Remove what this run made, and nothing else."""
        for staged in self._files.values():
            staged.unlink(missing_ok=True)
        for staging in self._folders.values():
            shutil.rmtree(staging, ignore_errors=True)
        for made in reversed(self._made):
            try:
                made.rmdir()  # only if still empty: never a folder with anything of the user's
            except OSError:
                pass

    def __enter__(self) -> OutputPlan:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
