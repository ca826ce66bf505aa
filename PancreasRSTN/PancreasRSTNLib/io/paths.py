"""Where inputs and outputs meet: the one check that no output is, holds or lies inside an input, and that no two
outputs are one file.

Why: ``segment a.nii.gz -o a.nii.gz --overwrite`` replaced the CT with its mask, and a cohort written into its
own input folder replaced every CT. ``--overwrite`` means "replace my earlier results", never "replace my data".
Paths are compared after resolving ``~``, ``..`` and symbolic links; existing files are compared by identity
(``os.path.samefile``: hard links, and names that differ only in case on a case-insensitive file system); two
names not yet on disk are one file when they differ only in case on a file system that ignores case.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputPathError


@dataclass(frozen=True)
class Place:
    """An input or an output of a run, as messages name it."""

    what: str  # e.g. "The input", "The output (-o)", "Case a's input"
    path: Path
    folder: bool = False  # a folder (an input DICOM series, an output folder) rather than a file
    claims: str | None = None  # an output folder: the glob of the names it writes (None: any name)


def resolved(path: str | Path) -> Path:
    """The absolute path with ``~``, ``..`` and symbolic links resolved (the parts that exist)."""
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _ignores_case(folder: Path) -> bool:
    """Whether the file system holding ``folder`` treats names that differ only in case as one (macOS, Windows)."""
    for p in (folder, *folder.parents):
        twin = p.with_name(p.name.swapcase()) if p.name else p
        if p.name and twin != p and p.exists():
            try:
                return twin.exists() and os.path.samefile(p, twin)
            except OSError:
                return False
    return False


def same_file(a: str | Path, b: str | Path) -> bool:
    """``a`` and ``b`` name one file or folder (or would, once made)."""
    ra, rb = resolved(a), resolved(b)
    if ra == rb:
        return True
    if ra.exists() and rb.exists():
        try:
            return os.path.samefile(ra, rb)
        except OSError:
            return False
    if ra.name.casefold() != rb.name.casefold() or ra.parent == ra:
        return False
    return same_file(ra.parent, rb.parent) and _ignores_case(ra.parent)


def inside(path: str | Path, folder: str | Path) -> bool:
    """``path`` is ``folder`` or lies below it."""
    p, f = resolved(path), resolved(folder)
    if p == f or f in p.parents:
        return True
    return any(same_file(q, f) for q in (p, *p.parents) if q.name.casefold() == f.name.casefold())


def refuse_overlap(new: Place, inputs: Iterable[Place], outputs: Iterable[Place] = ()) -> None:
    """Raise ``OutputPathError`` when the output ``new`` would write over an input or another output: it is an
    input, it lies inside an input folder, it is a folder that holds an input, or it is another output (an output
    file inside an output folder collides only when its name is one that folder's writer uses)."""
    for place in inputs:
        if same_file(new.path, place.path):
            _refuse(f"{_cap(new.what)} {new.path} is {_mid(place.what)} ({place.path}): writing it would replace "
                    "the input.", "Choose an output name or folder that is not an input.")
        if place.folder and inside(new.path, place.path):
            _refuse(f"{_cap(new.what)} {new.path} lies inside {_mid(place.what)} {place.path}: the input folder "
                    "would be changed.", "Write the output outside the input folder.")
        if new.folder and inside(place.path, new.path):
            _refuse(f"{_cap(new.what)} {new.path} holds {_mid(place.what)} ({place.path}): an output folder may not "
                    "be or contain an input, whose files the outputs could replace.",
                    "Choose an output folder outside the inputs' folders, e.g. a new one next to them.")
    for place in outputs:
        if same_file(new.path, place.path):
            _refuse(f"{_cap(new.what)} and {_mid(place.what)} are the same file, {new.path}: one would overwrite the "
                    "other.", "Give each output its own name.")
        for file, folder in ((new, place), (place, new)):
            if folder.folder and not file.folder and inside(file.path, folder.path) and (
                    folder.claims is None or fnmatch.fnmatch(Path(file.path).name, folder.claims)):
                _refuse(f"{_cap(file.what)} {file.path} lies in {_mid(folder.what)} {folder.path} and has the name "
                        "of one of its files: one would overwrite the other.", "Give the output another name or "
                        "folder.")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _mid(text: str) -> str:
    """``text`` inside a sentence: 'The input' -> 'the input' (an acronym such as 'DICOM' stays)."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _refuse(message: str, fix: str) -> None:
    raise OutputPathError(f"{message} {fix}", fix=fix)
