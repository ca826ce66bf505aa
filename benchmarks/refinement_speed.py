"""How long a refinement from a person's mask takes: ``segment --prior`` on a real 512x512x240 CT.

Times the whole path a user waits for, in-process: the prior read and checked (grid, labels, the fill between
sparse slices), the CT resampled to the model's spacing, the model's default fine rounds, and the final mask back
on the CT's grid; the CT's own DICOM read is timed apart. Median and spread of ``--repeats`` runs (the first one
warm-up), on ``--threads`` CPU threads. Target (issue 23): at most 10 s on 2 CPU cores.

    python benchmarks/refinement_speed.py [--model DIR] [--repeats 5] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "PancreasRSTN"))

from PancreasRSTNLib.devices import device_description  # noqa: E402
from PancreasRSTNLib.engine.config import InferenceConfig, RunSettings  # noqa: E402
from PancreasRSTNLib.engine.guidance_input import guidance_from_images  # noqa: E402
from PancreasRSTNLib.engine.segmentation import prepare_ct, segment_image  # noqa: E402
from PancreasRSTNLib.io.model_package import load_model_package  # noqa: E402
from PancreasRSTNLib.io.user_models import resolve_model  # noqa: E402
from PancreasRSTNLib.io.volume_io import read_image  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CITATION = ("Roth HR, Farag A, Turkbey EB, Lu L, Liu J, Summers RM. Data From Pancreas-CT. The Cancer Imaging "
            "Archive, 2016 (CC BY 4.0)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="default: the default pancreas model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--every", type=int, default=5, help="the prior: the expert label on every N-th axial slice")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ct_folder = next((SHARED / "nih_pancreas_ct" / "images" / "PANCREAS_0001").glob("*/*"))
    model = args.model or resolve_model(None, "pancreas").path
    package = load_model_package(model)
    t0 = time.perf_counter()
    image = read_image(ct_folder)
    read_seconds = time.perf_counter() - t0
    label = read_image(SHARED / "nih_pancreas_ct" / "labels" / "label0001.nii.gz")
    array = sitk.GetArrayFromImage(label)
    keep = array.any(axis=(1, 2)).nonzero()[0]
    array[[k for k in range(array.shape[0]) if k not in set(keep[::args.every])]] = 0
    sparse = sitk.GetImageFromArray(array)
    sparse.CopyInformation(label)
    settings = RunSettings(config=InferenceConfig(views=tuple(package.views)), device="cpu")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        prior_file = Path(tmp) / "prior.nii.gz"
        sitk.WriteImage(sparse, str(prior_file))
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            ct = prepare_ct(image)
            guidance = guidance_from_images(ct.geometry, read_image(prior_file))
            rounds = list(segment_image(ct, package, settings, guidance=guidance))
            rounds[-1].mask_image()
            times.append(time.perf_counter() - t0)
    runs = times[1:]
    report = {
        "what": "segment --prior on NIH PANCREAS_0001 (512x512x240 DICOM, 0.86x0.86x1 mm): prior read and checked, "
                f"filled between every {args.every}th slice, resampled, the model's default fine rounds, the mask "
                "back on the CT grid (the CT's DICOM read apart)",
        "model": package.metadata["name"], "fine_rounds": rounds[-1].index, "device": device_description(
            torch.device("cpu")), "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
        "dicom_read_seconds": round(read_seconds, 2), "seconds": [round(t, 2) for t in runs],
        "median_seconds": round(statistics.median(runs), 2), "min_seconds": round(min(runs), 2),
        "max_seconds": round(max(runs), 2), "target_seconds": 10.0, "citation": CITATION,
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
