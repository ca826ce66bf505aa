"""One preprocessing pass over a dataset into memory-mappable ``.npy`` arrays, so training and evaluation
never re-read DICOM.

Per case the cache holds ``image.npy`` (canonical layout, HU as int16: the window is applied on the fly, which
costs nothing and keeps the HU for evaluation), ``label.npy`` (canonical organ mask, uint8) and ``meta.json``
(canonical spacing, source files and their sizes/mtimes, so a changed file is re-cached). With a ``spacing``,
each case is resampled to it first (image linear; label as a fraction, thresholded at 0.5), as inference will
resample the user's CT: the model learns at one spacing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..io.geometry import to_canonical
from ..io.outputs import published, write_text
from .datasets import CaseRef, Dataset

log = logging.getLogger(__name__)
CACHE_VERSION = 2


@dataclass
class CachedCase:
    name: str
    image: np.ndarray  # canonical HU, int16 memmap
    label: np.ndarray  # canonical organ mask, uint8 memmap
    spacing: tuple[float, float, float]  # canonical axis order, mm


@dataclass
class Cache:
    root: Path
    names: list[str]
    skipped: list[dict] = field(default_factory=list)

    def case(self, name: str) -> CachedCase:
        d = self.root / name
        meta = json.loads((d / "meta.json").read_text())
        return CachedCase(name, np.load(d / "image.npy", mmap_mode="r"), np.load(d / "label.npy", mmap_mode="r"),
                          tuple(meta["spacing"]))

    def cases(self) -> list[CachedCase]:
        return [self.case(n) for n in self.names]


def _fingerprint(case: CaseRef, label_values: Sequence[int], spacing: Sequence[float] | None = None) -> dict:
    def stat(p: Path) -> list:
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file())
            newest = max((f.stat().st_mtime for f in files), default=0)
            return [len(files), sum(f.stat().st_size for f in files), newest]
        s = p.stat()
        return [1, s.st_size, s.st_mtime]

    return {"version": CACHE_VERSION, "image": str(case.image), "label": str(case.label),
            "image_stat": stat(case.image), "label_stat": stat(case.label), "label_values": list(label_values),
            "spacing": None if spacing is None else [float(s) for s in spacing]}


def _cache_one(dataset: Dataset, case: CaseRef, d: Path, spacing: Sequence[float] | None = None) -> None:
    image, mask_kji = dataset.load(case)
    hu, geometry = to_canonical(image)
    from ..io.geometry import array_to_canonical

    label = np.ascontiguousarray(array_to_canonical(mask_kji, geometry)).astype(np.uint8)
    if np.issubdtype(hu.dtype, np.floating):
        hu = np.rint(hu)
    hu = np.clip(hu, -32768, 32767).astype(np.int16)
    case_spacing = list(geometry.canonical_spacing)
    if spacing is not None:
        from ..engine.resampling import Resampling

        resampling = Resampling.between(hu.shape, case_spacing, spacing)
        hu = resampling.to_model(hu, dtype=np.int16)
        label = resampling.mask_to_model(label).astype(np.uint8)
        case_spacing = list(resampling.model_spacing)
    d.mkdir(parents=True, exist_ok=True)
    meta = {"fingerprint": _fingerprint(case, dataset.label_values, spacing), "spacing": case_spacing,
            "source_spacing": list(geometry.canonical_spacing),
            "shape": list(hu.shape), "organ_voxels": int(label.sum())}
    # each file through a temporary name of this process's own, renamed into place: two trainings that cache
    # the same dataset at once (folds run side by side) each write whole files and never rename each other's
    for name, arr in (("image", hu), ("label", label)):
        with published(d / f"{name}.npy", d / f"{name}.npy", "caching", ".npy") as tmp:
            np.save(tmp, arr)
    write_text(d / "meta.json", json.dumps(meta, indent=2))


def build_cache(dataset: Dataset, cache_dir: str | Path, names: Sequence[str] | None = None,
                on_bad_case: str = "fail", progress: bool = False, spacing: Sequence[float] | None = None) -> Cache:
    """Cache every case once (re-using up-to-date entries), resampled to ``spacing`` if given. A bad case fails
    the run (``on_bad_case="fail"``) or is skipped with a warning (``"skip"``); skipped cases are listed in
    ``Cache.skipped``."""
    if on_bad_case not in ("fail", "skip"):
        raise DatasetError(f"on_bad_case must be 'fail' or 'skip', not {on_bad_case!r}.")
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    wanted = list(names) if names is not None else dataset.case_names()
    cache = Cache(root, [])
    from tqdm import tqdm

    for name in tqdm(wanted, desc="cache", disable=not progress):
        case = dataset.case(name)
        d = root / name
        meta_path = d / "meta.json"
        try:
            fresh = (meta_path.is_file() and json.loads(meta_path.read_text()).get("fingerprint")
                     == _fingerprint(case, dataset.label_values, spacing))
            if not fresh:
                _cache_one(dataset, case, d, spacing)
        except DatasetError as exc:
            if on_bad_case == "fail":
                raise
            log.warning("skipping a bad case: %s", exc)
            cache.skipped.append({"case": name, "reason": str(exc)})
            continue
        cache.names.append(name)
    if not cache.names:
        raise DatasetError(f"No usable case in {dataset.root}: every case was skipped ({len(cache.skipped)} bad).")
    return cache
