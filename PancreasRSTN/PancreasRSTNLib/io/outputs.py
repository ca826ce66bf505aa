"""Every file a run writes: checked before any work, written under temporary names, verified, published all
together.

Why: a run can take an hour (FCN-8s on a CPU). An output problem found after inference wastes it, and a run that
fails half-way must not leave half its outputs behind, nor remove anything the user had. So each output is
checked first (a format SimpleITK writes, a folder that exists or can be made, write permission, no existing
file unless ``overwrite``, and never an input nor another output: ``paths.refuse_overlap``); results are
written under hidden temporary names in their own folder; ``commit`` renames them into place once everything
succeeded, and ``abort`` (any error, Ctrl-C, SIGTERM) removes exactly what this run made.

Every volume file is written by ``write_volume``: under a temporary name, then checked (``check_volume_file``:
not empty, its header read back, its data complete), then renamed into place. A write that fails, even one that
SimpleITK only reports on stderr (a full disk), raises ``OutputPathError`` and leaves nothing behind. Text files
(tables, reports) go through ``write_text``, whole or not at all.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import shutil
import struct
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import SimpleITK as sitk

from ..errors import OutputExistsError, OutputPathError
from .itk_messages import itk_output
from .paths import Place, refuse_overlap

log = logging.getLogger(__name__)

#: Single-file volume formats SimpleITK writes (two-file formats would not be published atomically).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
FORMATS_HINT = "use .nii.gz, .nii, .nrrd or .mha"


def volume_suffix(path: Path, suffixes: tuple[str, ...] = VOLUME_SUFFIXES) -> str | None:
    """The longest of ``suffixes`` that ``path``'s name ends with (case ignored), or None."""
    name = path.name.lower()
    return next((s for s in sorted(suffixes, key=len, reverse=True) if name.endswith(s) and len(name) > len(s)),
                None)


class OutputPlan:
    """The outputs of one run. Use as a context manager: committed on success, aborted on any exception."""

    def __init__(self, overwrite: bool = False, inputs: Iterable[Place] = ()) -> None:
        self.overwrite = overwrite
        self._token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._inputs: list[Place] = list(inputs)  # never written: every output is checked against them
        self._outputs: list[Place] = []
        self._files: dict[Path, Path] = {}  # final path -> staged path
        self._folders: dict[Path, Path] = {}  # final folder -> staging folder
        self._made: list[Path] = []  # folders this run created (removed on abort if still empty)
        self.committed = False

    # ------------------------------------------------------------------ checks (before any work)
    def protect(self, path: str | Path, what: str) -> None:
        """Declare an input of the run (a file, or a folder such as a DICOM series): no output may touch it."""
        path = Path(path).expanduser()
        self._inputs.append(Place(what, path, folder=path.is_dir()))

    def file(self, path: str | Path, what: str, suffixes: tuple[str, ...] = VOLUME_SUFFIXES) -> Path:
        """Check a volume output (``suffixes``: the formats it may have) and reserve its staged name; returns the
        final path."""
        path = Path(path).expanduser()
        suffix = volume_suffix(path, suffixes)
        if suffix is None:
            found = "".join(path.suffixes) or "no extension"
            hint = FORMATS_HINT if suffixes == VOLUME_SUFFIXES else f"use {', '.join(suffixes)}"
            raise OutputPathError(f"{what} {path}: cannot write a volume with {found}; {hint}.")
        if path.is_dir():
            raise OutputPathError(f"{what} {path} is a folder; give a file name ending in {suffix}.")
        self.claim(Place(what, path))
        if path.exists() and not self.overwrite:
            raise OutputExistsError(f"{what} {path} already exists. Choose another name or pass --overwrite to "
                                    "replace it.")
        self.writable_folder(path.parent, what)
        self._files[path] = path.parent / f".{path.name}.partial-{self._token}{suffix}"
        return path

    def folder(self, path: str | Path, what: str, claims: str | None = None) -> Path:
        """Check an output folder (``claims``: the glob of the names written into it; None: any); its staging
        folder is made next to it when needed."""
        path = Path(path).expanduser()
        if path.exists() and not path.is_dir():
            raise OutputPathError(f"{what} {path} is a file, not a folder. Give the name of a folder (new or empty).")
        self.claim(Place(what, path, folder=True, claims=claims))
        if path.is_dir() and any(path.iterdir()) and not self.overwrite:
            raise OutputExistsError(f"{what} {path} is not empty. Choose an empty or new folder, or pass "
                                    "--overwrite (files of the same names are replaced).")
        self.writable_folder(path, what)
        self._folders[path] = path.parent / f".{path.name}.partial-{self._token}"
        return path

    def claim(self, place: Place) -> None:
        """Check an output against the inputs and the other outputs (``paths.refuse_overlap``) and record it."""
        refuse_overlap(place, self._inputs, self._outputs)
        self._outputs.append(place)

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

    def write(self, path: Path, image: sitk.Image) -> Path:
        """Write the output ``path`` (a file of this plan) to its staged name, checked (``write_volume``)."""
        return write_volume(image, self.staged(path), shown=Path(path).expanduser())

    def staged_folder(self, path: Path) -> Path:
        """The staging folder of the output folder ``path`` (made on first use)."""
        staging = self._folders[Path(path).expanduser()]
        try:
            staging.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputPathError(f"Cannot write into {path}: {exc.strerror or exc} ({staging.parent}). Was the folder "
                                  "removed during the run? Run again with an output folder that stays in place.") \
                from exc
        return staging

    def commit(self) -> None:
        """Publish every output: staged files renamed onto their final names, staged folders' files moved in.
        A folder removed during the run is an ``OutputPathError`` (what is still staged is removed)."""
        final = None
        try:
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
        except OSError as exc:
            self.abort()
            raise OutputPathError(f"Could not publish {final}: {exc.strerror or exc}. Was its folder removed or "
                                  "made read-only during the run? Run again with an output folder that stays in "
                                  "place.") from exc
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


# ---------------------------------------------------------------------------------------------- whole files only
def write_volume(image: sitk.Image, path: str | Path, shown: str | Path | None = None) -> Path:
    """Write ``image`` to ``path`` whole or not at all: under a temporary name beside it, checked
    (``check_volume_file``), then renamed onto ``path``. Any failure is an ``OutputPathError`` naming the file
    (``shown``: the name the user gave, when ``path`` is its staged copy) and the problem, and nothing is left at
    ``path`` or beside it."""
    path = Path(path)
    shown = shown or path
    suffix = volume_suffix(path) or "".join(path.suffixes[-1:])
    with published(path, shown, "writing", suffix) as tmp, itk_output() as itk:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
            problem = None
        except RuntimeError as exc:
            problem = _last_line(exc)
        problem = problem or "; ".join(itk.errors) or check_volume_file(tmp, image)
        if problem:
            raise OutputPathError(f"Could not write {shown}: {problem}. Nothing was written there. Check the "
                                  "folder's free space and permissions; volumes are written as .nii.gz, .nii, .nrrd "
                                  "or .mha.")
    for message in itk.messages:
        log.warning("writing %s: %s", path.name, message)
    return path


def check_volume_file(path: Path, image: sitk.Image | None = None) -> str | None:
    """What is wrong with a volume file just written (None: nothing found): empty, a header that cannot be read
    back or that differs from ``image``'s size, spacing or voxel type, or data cut short (checked without reading
    the voxels: the file's size, or the length a gzip or zlib stream records)."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with itk_output():
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            return f"its header cannot be read back ({_last_line(exc)})"
    if image is not None:
        if (tuple(reader.GetSize()) != tuple(image.GetSize()) or reader.GetPixelID() != image.GetPixelID()
                or not all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(reader.GetSpacing(), image.GetSpacing()))):
            return (f"the header read back says {reader.GetSize()} voxels of {reader.GetPixelIDTypeAsString()} at "
                    f"{reader.GetSpacing()} mm, not what was written")
    unit = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
    data = math.prod(reader.GetSize()) * reader.GetNumberOfComponents() * unit.GetSizeOfPixelComponent()
    return _payload_problem(path, size, data)


def _payload_problem(path: Path, size: int, data: int) -> str | None:
    """Whether the file holds all ``data`` bytes of voxels, by its format's bookkeeping."""
    name = path.name.lower()
    short = "the data is cut short ({} of {} bytes)"
    if name.endswith((".nii.gz", ".nii")):
        gz = name.endswith(".gz")
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            offset = _nifti_vox_offset(f.read(540))
        if offset is None:
            return "its NIfTI header cannot be parsed"
        if gz:
            return None if _gzip_length(path) == (offset + data) % 2**32 else "the compressed data is cut short"
        return None if size >= offset + data else short.format(size - offset, data)
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if name.endswith(".nrrd"):
        fields, header_bytes = _text_header(head, nrrd=True)
        encoding = "detached" if "data file" in fields or "datafile" in fields else fields.get("encoding", "raw")
    elif name.endswith(".mha"):
        fields, header_bytes = _text_header(head, nrrd=False)
        compressed = fields.get("compresseddata", "false").lower() == "true"
        encoding = "detached" if fields.get("elementdatafile", "LOCAL") != "LOCAL" else "zlib" if compressed else "raw"
        if compressed:
            data = int(fields.get("compresseddatasize") or 0)  # the zlib stream's own length
    else:
        return None
    if encoding in ("gzip", "gz"):
        return None if _gzip_length(path) == data % 2**32 else "the compressed data is cut short"
    if encoding in ("raw", "zlib"):
        return None if size >= header_bytes + data else short.format(size - header_bytes, data)
    return None


def _nifti_vox_offset(header: bytes) -> int | None:
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            return int(struct.unpack(order + "f", header[108:112])[0])
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            return int(struct.unpack(order + "q", header[168:176])[0])
    return None


def _gzip_length(path: Path) -> int:
    """The uncompressed length (mod 2**32) a gzip stream records in its last 4 bytes."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def _text_header(head: bytes, nrrd: bool) -> tuple[dict[str, str], int]:
    """The fields of a NRRD or MetaImage header (lower-case keys) and its length in bytes."""
    fields: dict[str, str] = {}
    end = head.find(b"\n\n") + 2 if nrrd else head.find(b"ElementDataFile")
    if not nrrd and end >= 0:
        end = head.find(b"\n", end) + 1
    text = head[: max(end, 0)].decode("latin-1")
    for line in text.splitlines():
        key, sep, value = line.partition(":" if nrrd else "=")
        if sep and not line.startswith("#"):
            fields[key.strip().lower()] = value.strip()
    return fields, max(end, 0)


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file (a table, a report) whole or not at all: a temporary file renamed into place."""
    path = Path(path)
    with published(path, path, "partial") as tmp:
        tmp.write_text(text)
    return path


@contextmanager
def published(path: Path, shown: str | Path, tag: str, suffix: str = "") -> Iterator[Path]:
    """A temporary name beside ``path`` to write; renamed onto ``path`` when the block succeeds, removed in every
    case, and an ``OSError`` turned into an ``OutputPathError`` that says nothing was written."""
    tmp = path.parent / f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputPathError(f"Could not write {shown}: {exc.strerror or exc}. Nothing was written there. Check "
                              "that the folder exists and has free space.") from exc
    finally:
        tmp.unlink(missing_ok=True)


def json_text(data: object) -> str:
    """``data`` as strict JSON (indented, one final newline): NaN and infinities become null, since strict readers
    refuse Python's bare ``NaN`` tokens."""
    return json.dumps(_finite(data), indent=2, allow_nan=False) + "\n"


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        return _finite(value.tolist())
    return value


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
