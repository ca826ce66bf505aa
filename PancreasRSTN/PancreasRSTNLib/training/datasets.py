"""Training / evaluation datasets in four layouts, with the organ chosen by label value or by name.

Layouts (detected in this order):
  * ``nnunet``: nnU-Net v2 raw: ``dataset.json`` with ``channel_names``, ``labels`` (name -> value) and
    ``file_ending``, ``imagesTr/<case>_0000<ending>``, ``labelsTr/<case><ending>``, and ``imagesTs/`` (no labels:
    inference only). One CT channel only;
  * ``msd``: Medical Segmentation Decathlon: ``dataset.json`` + ``imagesTr/`` + ``labelsTr/``;
  * ``nih``: NIH Pancreas-CT: DICOM series folders (``PANCREAS_0001/...``) plus label NIfTI files
    (``label0001.nii.gz``), matched by their 4-digit case number;
  * ``pairs``: ``images/`` and ``labels/`` folders whose files share names (NIfTI, NRRD or MHA).

Every problem with one case raises a ``DatasetError`` that names the case, the problem and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import DatasetError, InputImageError, RSTNError
from ..io.geometry import grid_differences

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: The value that marks the organ in a binary (single-organ) label map, as NIH and most MSD tasks have it.
BINARY_LABEL = 1


def _strip_suffix(name: str) -> str:
    for s in IMAGE_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def _is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


@dataclass(frozen=True)
class CaseRef:
    name: str
    image: Path  # file or DICOM folder
    label: Path


@dataclass
class Dataset:
    root: Path
    layout: str
    cases: list[CaseRef]
    label_values: tuple[int, ...]
    organ: str
    test_images: list[tuple[str, Path]] = field(default_factory=list)  # (case, image) without labels (imagesTs/)

    @property
    def label_value(self) -> int:
        return self.label_values[0]

    def case_names(self) -> list[str]:
        return [c.name for c in self.cases]

    def case(self, name: str) -> CaseRef:
        for c in self.cases:
            if c.name == name:
                return c
        raise DatasetError(f"Case {name} is not in the dataset {self.root}.")

    def load(self, case: CaseRef) -> tuple[sitk.Image, np.ndarray]:
        """(CT image, organ mask as a bool array in SimpleITK (k, j, i) order), checked."""
        from ..io.volume_io import read_image

        try:
            image = read_image(case.image)
        except (RSTNError, RuntimeError, OSError) as exc:
            raise DatasetError(f"Case {case.name}: the image {case.image} cannot be read ({exc}). Fix or remove "
                               "the file, or use --on-bad-case skip.") from exc
        try:
            label = sitk.ReadImage(str(case.label))
        except (RuntimeError, OSError) as exc:
            raise DatasetError(f"Case {case.name}: the label {case.label} cannot be read ({exc}). Fix or remove "
                               "the file, or use --on-bad-case skip.") from exc
        check_same_grid(case.name, image, label)
        arr = sitk.GetArrayViewFromImage(label)
        mask = np.isin(arr, self.label_values)
        if not mask.any():
            present = np.unique(arr)[:12].tolist()
            raise DatasetError(
                f"Case {case.name}: the label {case.label.name} has no voxel of value {list(self.label_values)} "
                f"({self.organ}); values present: {present}. Pick the right --label-value / --organ, or remove the "
                "case."
            )
        return image, mask


def check_same_grid(name: str, image: sitk.Image, label: sitk.Image) -> None:
    """The label must lie on the image's voxel grid (size, spacing, origin, direction)."""
    problems = grid_differences(label, image, "the image's")
    if problems:
        raise DatasetError(f"Case {name}: the label grid differs from the image grid ({'; '.join(problems)}). "
                           "Resample the label onto the image (nearest neighbour) or fix its header, or remove the "
                           "case.")


def _label_values_by_name(labels: dict, organ: str) -> tuple[int, ...]:
    """The label values named like the organ, from an MSD ``{"1": "pancreas"}`` or an nnU-Net v2
    ``{"pancreas": 1}`` (or ``{"pancreas": [1, 2]}``) mapping."""
    key = organ.strip().lower().replace(" ", "_")

    def norm(name: object) -> str:
        return str(name).strip().lower().replace(" ", "_")

    if labels and all(str(k).isdigit() for k in labels):  # MSD: value -> name
        found = tuple(int(v) for v, name in labels.items() if norm(name) == key)
    else:  # nnU-Net v2: name -> value(s)
        found = tuple(int(v) for name, hit in labels.items() if norm(name) == key
                      for v in (hit if isinstance(hit, list) else [hit]))
    if not found:
        raise DatasetError(f"dataset.json names no label '{organ}' (labels: {labels}). Pass --organ with one of "
                           "those names, or --label-value.")
    return found


def _msd(root: Path, meta: dict, organ: str, label_values: tuple[int, ...] | None) -> Dataset:
    cases = []
    for entry in meta.get("training", []):
        image = (root / entry["image"]).resolve()
        label = (root / entry["label"]).resolve()
        name = _strip_suffix(Path(entry["image"]).name)
        if not image.exists() and (root / "imagesTr" / f"{name}_0000.nii.gz").exists():  # nnU-Net v1 naming
            image = root / "imagesTr" / f"{name}_0000.nii.gz"
        cases.append(CaseRef(name, image, label))
    if label_values is None:
        labels = meta.get("labels", {})
        label_values = _label_values_by_name(labels, organ) if isinstance(labels, dict) and labels else \
            (BINARY_LABEL,)
    return Dataset(root, "msd", cases, label_values, organ)


def _nnunet(root: Path, meta: dict, organ: str, label_values: tuple[int, ...] | None) -> Dataset:
    """nnU-Net v2 raw dataset: one CT channel (``_0000``), labels by name, ``imagesTs/`` for inference."""
    channels = meta.get("channel_names") or meta.get("modality") or {}
    if len(channels) != 1:
        raise DatasetError(
            f"{root} is an nnU-Net dataset with {len(channels)} channels ({', '.join(map(str, channels.values()))}); "
            "RSTN reads one CT channel. Use a dataset whose channel_names is {\"0\": \"CT\"}, or make one from the CT "
            "channel's files (<case>_0000)."
        )
    ending = str(meta.get("file_ending", ".nii.gz"))
    if label_values is None:
        label_values = _label_values_by_name(meta.get("labels") or {}, organ)
    cases = []
    images, labels_dir = root / "imagesTr", root / "labelsTr"
    for label in sorted(labels_dir.glob(f"*{ending}")) if labels_dir.is_dir() else []:
        case = label.name[: -len(ending)]
        image = images / f"{case}_0000{ending}"
        if not image.is_file():
            raise DatasetError(f"Case {case}: {label.name} has no image {image.name} in {images}. Add it or remove "
                               "the label.")
        cases.append(CaseRef(case, image, label))
    test = []
    for image in sorted((root / "imagesTs").glob(f"*_0000{ending}")) if (root / "imagesTs").is_dir() else []:
        test.append((image.name[: -len(f"_0000{ending}")], image))
    return Dataset(root, "nnunet", cases, label_values, organ, test_images=test)


def _nih(root: Path, organ: str, label_values: tuple[int, ...] | None) -> Dataset:
    labels = {}
    for p in root.rglob("label*.nii*"):
        m = re.search(r"(\d{4})", p.name)
        if m:
            labels[m.group(1)] = p
    series = {}
    for d in sorted(p for p in root.rglob("*") if p.is_dir()):
        if any(f.suffix.lower() == ".dcm" for f in d.iterdir() if f.is_file()):
            m = re.search(r"PANCREAS_(\d{4})", str(d), re.IGNORECASE) or re.search(r"(\d{4})", str(d.relative_to(root)))
            if m and m.group(1) not in series:
                series[m.group(1)] = d
    cases = [CaseRef(f"PANCREAS_{k}", series[k], labels[k]) for k in sorted(series) if k in labels]
    missing = sorted(set(series) ^ set(labels))
    if missing:
        import logging

        logging.getLogger(__name__).warning("NIH dataset: cases without both a DICOM series and a label: %s",
                                            ", ".join(missing[:20]))
    return Dataset(root, "nih", cases, label_values or (1,), organ)


def _pairs(root: Path, organ: str, label_values: tuple[int, ...] | None) -> Dataset:
    img_dir = next((root / d for d in ("images", "imagesTr") if (root / d).is_dir()), None)
    lab_dir = next((root / d for d in ("labels", "labelsTr") if (root / d).is_dir()), None)
    if img_dir is None or lab_dir is None:
        raise DatasetError(f"{root} is not a dataset folder this tool knows. {LAYOUTS_HELP}")
    labels = {_strip_suffix(p.name): p for p in lab_dir.iterdir() if _is_image(p)}
    cases = []
    for p in sorted(img_dir.iterdir()):
        if not _is_image(p):
            continue
        stem = _strip_suffix(p.name)
        key = stem if stem in labels else re.sub(r"_0000$", "", stem)
        if key not in labels:
            raise DatasetError(f"Case {stem}: no label file named like {p.name} in {lab_dir}. Add it, or move the "
                               "image out of the dataset.")
        cases.append(CaseRef(key, p, labels[key]))
    return Dataset(root, "pairs", cases, label_values or (BINARY_LABEL,), organ)


LAYOUTS_HELP = (
    "The layouts read: nnU-Net v2 (dataset.json with channel_names, labels and file_ending; imagesTr/<case>_0000"
    "<ending>, labelsTr/<case><ending>, imagesTs/); Medical Segmentation Decathlon (dataset.json with a 'training' "
    "list; imagesTr/, labelsTr/); NIH Pancreas-CT (DICOM series folders PANCREAS_<nnnn> and label<nnnn>.nii.gz); "
    "image/label pairs (images/ and labels/ with matching file names, .nii.gz, .nii, .nrrd or .mha)."
)


def _read_dataset_json(root: Path) -> dict:
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{root / 'dataset.json'} cannot be read as JSON ({exc}).") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{root / 'dataset.json'} is not a JSON object. {LAYOUTS_HELP}")
    return meta


def open_dataset(path: str | Path, organ: str = "pancreas", label_value: int | tuple[int, ...] | None = None
                 ) -> Dataset:
    """Detect the layout of ``path`` and list its cases (nothing is read yet)."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"Dataset folder not found: {root}.")
    values = None if label_value is None else tuple(np.atleast_1d(label_value).astype(int).tolist())
    meta = _read_dataset_json(root) if (root / "dataset.json").is_file() else None
    if meta is not None and "file_ending" in meta and ("channel_names" in meta or "modality" in meta) \
            and "training" not in meta:
        ds = _nnunet(root, meta, organ, values)
    elif meta is not None:
        ds = _msd(root, meta, organ, values)
    elif any(True for _ in root.rglob("label*.nii*")) and any(True for _ in root.rglob("*.dcm")):
        ds = _nih(root, organ, values)
    else:
        ds = _pairs(root, organ, values)
    if not ds.cases and not ds.test_images:
        raise DatasetError(f"No cases found in {root} (read as the {ds.layout} layout). {LAYOUTS_HELP}")
    return ds


__all__ = ["CaseRef", "Dataset", "DatasetError", "InputImageError", "check_same_grid", "open_dataset"]
