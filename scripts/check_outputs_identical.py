"""Hash the default model's outputs on the shared real CTs and the demo's, to prove a refactor changed nothing.

Run it before a change with ``--record before.json`` and after it with ``--compare before.json``. Volumes are
hashed decoded (voxels, pixel type, size, spacing, origin, direction), because a ``.nii.gz`` file's bytes may
carry a timestamp. Only integer volumes (masks, label maps, the demo's input copy) are compared: the float outputs
(probability, saliency) differ in their last bits between two runs of the same code on this CPU (threaded
reductions), while every mask is identical. The real CTs are read from ``../shared/data`` (or
``$PANCREAS_RSTN_SHARED_DATA``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PANCREAS_RSTN_SHARED_DATA", ROOT.parent / "shared" / "data"))
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def volume_hash(path: Path) -> str:
    """sha256 of a volume's voxels and geometry, not of its file bytes."""
    image = sitk.ReadImage(str(path))
    digest = hashlib.sha256(sitk.GetArrayViewFromImage(image).tobytes())
    header = (image.GetPixelIDTypeAsString(), image.GetSize(), image.GetSpacing(), image.GetOrigin(),
              image.GetDirection())
    digest.update(repr(header).encode())
    return digest.hexdigest()


def is_float(path: Path) -> bool:
    """True for a float volume (probability, saliency), whose last bits are not reproducible."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64)


def folder_hashes(folder: Path) -> dict[str, str]:
    """Hash every integer volume under a folder, keyed by its relative path."""
    return {str(p.relative_to(folder)): volume_hash(p) for p in sorted(folder.rglob("*"))
            if p.name.endswith(VOLUME_SUFFIXES) and not is_float(p)}


def cli(*args: str) -> None:
    """Run ``pancreas-rstn`` in this interpreter; fail loudly."""
    subprocess.run([sys.executable, "-m", "PancreasRSTNLib", *args], check=True, cwd=ROOT)


def real_inputs() -> dict[str, Path]:
    """The shared real CTs: the TotalSegmentator volume and each NIH DICOM series folder."""
    inputs = {"totalseg": DATA / "totalseg_ct_abdomen_3mm.nii.gz"}
    for case in sorted((DATA / "nih_pancreas_ct" / "images").glob("PANCREAS_*")):
        series = next(p.parent for p in case.rglob("*.dcm"))
        inputs[case.name] = series
    return inputs


def collect() -> dict[str, dict[str, str]]:
    """Run the demo and ``segment`` (default model) and hash what they wrote."""
    hashes: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cli("demo", "-o", str(out / "demo"))
        hashes["demo"] = folder_hashes(out / "demo")
        for name, path in real_inputs().items():
            case = out / name
            cli("segment", str(path), "-o", str(case / "mask.nii.gz"), "--probability",
                str(case / "probability.nii.gz"), "--quiet")
            hashes[name] = folder_hashes(case)
    return hashes


def main() -> int:
    """Record or compare the hashes."""
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", type=Path)
    group.add_argument("--compare", type=Path)
    args = parser.parse_args()
    hashes = collect()
    if args.record:
        args.record.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
        print(f"recorded {sum(map(len, hashes.values()))} volumes in {args.record}")
        return 0
    before = json.loads(args.compare.read_text())
    differ = [f"{run}/{name}" for run in sorted(set(before) | set(hashes))
              for name in sorted(set(before.get(run, {})) | set(hashes.get(run, {})))
              if before.get(run, {}).get(name) != hashes.get(run, {}).get(name)]
    for name in differ:
        print(f"DIFFERS: {name}")
    print(f"{sum(map(len, hashes.values()))} volumes, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
