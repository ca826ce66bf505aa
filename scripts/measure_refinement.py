"""Refinement from a person's mask, measured: the truth corrupted six ways, then RSTN's fine rounds from it
(``segment --prior``), and for sparse contours Slicer's own "Fill between slices" on the same inputs.

Cases (none seen by the model that refines them):
  NIH PANCREAS_0001 / 0002 (native DICOM grids, expert labels) with the validation fold model that held each
  out (runs/validation/<recipe>/fold<k>/model, scripts/validate_real_model.py); the TotalSegmentator demo CT
  (3 mm, model-made label 7 = pancreas) with the final model of the recipe (no TotalSegmentator data in training).
Corruptions (in mm, on the CT's own grid): dilated 3 mm, eroded 3 mm, shifted 5 mm (to the patient's left), the
  organ's 3-D bounding box, the organ on every 5th / every 10th axial slice only (from its first slice).
Per corruption: the DSC of the corrupted mask, of round 0 (the prior the engine starts from: for sparse contours
  our shape-based fill), and of fine rounds 1-3 (thr 1.0, so no early stop); for sparse contours also ITK's
  morphological contour interpolation as Slicer's Fill between slices runs it (vtkITKMorphologicalContourInterpolator
  of slicer-core, default settings) and RSTN's rounds started from that fill.

    python scripts/measure_refinement.py [--recipe new_floor_prior] [--compare-recipe new_floor]
        [--json benchmarks/results/refinement.json] [--figure docs/figures/refinement.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "PancreasRSTN"))

from PancreasRSTNLib.devices import device_description  # noqa: E402
from PancreasRSTNLib.engine.config import InferenceConfig, RunSettings  # noqa: E402
from PancreasRSTNLib.engine.guidance import DrawnSlices, Guidance  # noqa: E402
from PancreasRSTNLib.engine.guidance_input import prior_from_image  # noqa: E402
from PancreasRSTNLib.engine.segmentation import prepare_ct, segment_image  # noqa: E402
from PancreasRSTNLib.io.geometry import to_canonical  # noqa: E402
from PancreasRSTNLib.io.model_package import load_model_package  # noqa: E402
from PancreasRSTNLib.io.volume_io import read_image  # noqa: E402
from PancreasRSTNLib.overlap import dice  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
NIH_CITATION = ("Roth HR, Farag A, Turkbey EB, Lu L, Liu J, Summers RM. Data From Pancreas-CT. The Cancer Imaging "
                "Archive, 2016 (CC BY 4.0)")
TOTALSEG = "TotalSegmentator test files (CT and TotalSegmentator v2 labels; ../shared/data/PROVENANCE.md)"
#: case -> (CT, label file, label value, the validation fold that held it out: None = the final model)
CASES = {
    "PANCREAS_0001": ("nih_pancreas_ct/images/PANCREAS_0001/*/*", "nih_pancreas_ct/labels/label0001.nii.gz", 1, 2),
    "PANCREAS_0002": ("nih_pancreas_ct/images/PANCREAS_0002/*/*", "nih_pancreas_ct/labels/label0002.nii.gz", 1, 1),
    "totalseg_3mm": ("totalseg_ct_abdomen_3mm.nii.gz", "totalseg_ct_abdomen_3mm_labels.nii.gz", 7, None),
}
CORRUPTIONS = ("dilated 3 mm", "eroded 3 mm", "shifted 5 mm", "3-D box", "every 5th slice", "every 10th slice")
ROUNDS = 3
PRIOR_WEIGHT = 0.0  # --prior-weight: the prior's weight in every fine round (scripts/validate_prior_weight.py)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------- corruptions
def corrupt(truth: sitk.Image, kind: str) -> sitk.Image:
    """The truth (UInt8 0/1 on the CT grid) corrupted as a person's rough input would be, in mm."""
    distance = sitk.SignedMaurerDistanceMap(truth, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    if kind == "dilated 3 mm":
        out = distance <= 3.0
    elif kind == "eroded 3 mm":
        out = distance <= -3.0
    elif kind == "shifted 5 mm":  # LPS +x is the patient's left: the mask moves 5 mm that way
        out = sitk.Resample(truth, truth, sitk.TranslationTransform(3, (-5.0, 0.0, 0.0)), sitk.sitkNearestNeighbor, 0)
    elif kind == "3-D box":
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(truth)
        x, y, z, sx, sy, sz = stats.GetBoundingBox(1)
        array = np.zeros(sitk.GetArrayViewFromImage(truth).shape, np.uint8)
        array[z:z + sz, y:y + sy, x:x + sx] = 1
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(truth)
    else:  # every N-th axial slice (image axis k), from the organ's first slice
        step = 5 if "5th" in kind else 10
        array = sitk.GetArrayFromImage(truth)
        present = np.flatnonzero(array.any(axis=(1, 2)))
        keep = np.zeros(array.shape[0], bool)
        keep[present[0]::step] = True
        array[~keep] = 0
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(truth)
    return sitk.Cast(out, sitk.sitkUInt8)


def slicer_fill_between_slices(sparse: sitk.Image) -> sitk.Image:
    """Slicer's "Fill between slices": ITK's morphological contour interpolation (vtkITK, default settings)."""
    import slicer  # slicer-core (the test extras)
    import vtk
    from vtk.util import numpy_support

    array = np.ascontiguousarray(sitk.GetArrayFromImage(sparse).astype(np.uint8))
    image = vtk.vtkImageData()
    image.SetDimensions(*sparse.GetSize())
    image.SetSpacing(*sparse.GetSpacing())
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True,
                                                               array_type=vtk.VTK_UNSIGNED_CHAR))
    interpolator = slicer.vtkITKMorphologicalContourInterpolator()
    interpolator.SetInputData(image)
    interpolator.Update()
    filled = numpy_support.vtk_to_numpy(interpolator.GetOutput().GetPointData().GetScalars())
    out = sitk.GetImageFromArray(filled.reshape(array.shape).astype(np.uint8))
    out.CopyInformation(sparse)
    return out


# ------------------------------------------------------------------------------------------------- runs
def rounds_from(ct, package, prior: np.ndarray, truth: np.ndarray, drawn: DrawnSlices | None = None
                ) -> tuple[list[float], float]:
    """DSC of round 0 (the prior) and fine rounds 1..ROUNDS against the truth; seconds of the run."""
    settings = RunSettings(config=InferenceConfig(views=tuple(package.views), max_iter=ROUNDS, thr=1.0,
                                                  prior_weight=PRIOR_WEIGHT), device="cpu")
    t0 = time.perf_counter()
    dscs = [dice(r.canonical_mask, truth) for r in segment_image(ct, package, settings,
                                                                    guidance=Guidance(prior, drawn=drawn))]
    return [round(d, 4) for d in dscs], round(time.perf_counter() - t0, 2)


def measure_case(name: str, package, label: str) -> dict:
    ct_path, label_path, value, _ = CASES[name]
    image = read_image(next(SHARED.glob(ct_path)) if "*" in ct_path else SHARED / ct_path)
    ct = prepare_ct(image)
    truth_image = sitk.Cast(read_image(SHARED / label_path) == value, sitk.sitkUInt8)
    truth_image.CopyInformation(image)
    truth = to_canonical(truth_image)[0].astype(bool)
    rows = {}
    for kind in CORRUPTIONS:
        corrupted = corrupt(truth_image, kind)
        given = to_canonical(corrupted)[0].astype(bool)
        prior, report, drawn = prior_from_image(corrupted, ct.geometry)
        dscs, seconds = rounds_from(ct, package, prior, truth, drawn)
        row = {"given": round(dice(given, truth), 4), "rstn_rounds": dscs, "seconds": seconds,
               "filled_slices": report.get("filled_slices", 0)}
        if "slice" in kind:
            slicer_fill = to_canonical(slicer_fill_between_slices(corrupted))[0].astype(bool)
            row["slicer_fill_between_slices"] = round(dice(slicer_fill, truth), 4)
            row["rstn_rounds_from_slicer_fill"], _ = rounds_from(ct, package, slicer_fill.astype(np.float32), truth)
        rows[kind] = row
        log(f"{label} {name} {kind}: {row}")
    return rows


def fold_model(recipe: str, fold: int | None) -> Path:
    return ROOT / "runs" / "validation" / recipe / ("final" if fold is None else f"fold{fold}") / "model"


def measure(recipe: str, cases: list[str]) -> dict:
    out = {}
    for name in cases:
        model = fold_model(recipe, CASES[name][3])
        if not (model / "model.json").is_file():
            log(f"{recipe}: no model at {model}; {name} skipped")
            continue
        out[name] = {"model": str(model.relative_to(ROOT)), "rows": measure_case(name, load_model_package(model),
                                                                                 recipe)}
    return out


def summary(results: dict) -> dict:
    """Mean over cases per corruption: given, round 0, each round, and Slicer's fill."""
    table = {}
    for kind in CORRUPTIONS:
        rows = [c["rows"][kind] for c in results.values() if kind in c["rows"]]
        if not rows:
            continue
        entry = {"cases": len(rows), "given": round(float(np.mean([r["given"] for r in rows])), 4),
                 "rounds": [round(float(np.mean([r["rstn_rounds"][i] for r in rows])), 4)
                            for i in range(min(len(r["rstn_rounds"]) for r in rows))]}
        if "slicer_fill_between_slices" in rows[0]:
            entry["slicer_fill_between_slices"] = round(float(np.mean([r["slicer_fill_between_slices"]
                                                                       for r in rows])), 4)
            entry["rounds_from_slicer_fill"] = [
                round(float(np.mean([r["rstn_rounds_from_slicer_fill"][i] for r in rows])), 4)
                for i in range(min(len(r["rstn_rounds_from_slicer_fill"]) for r in rows))]
        table[kind] = entry
    return table


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result["summary"]
    fig, axes = plt.subplots(1, len(table), figsize=(3.0 * len(table), 3.4), sharey=True)
    for ax, (kind, entry) in zip(np.atleast_1d(axes), table.items()):
        ax.plot(range(len(entry["rounds"])), entry["rounds"], "o-", label="RSTN from the prior (round 0)")
        ax.axhline(entry["given"], color="grey", ls=":", label="the corrupted mask")
        if "slicer_fill_between_slices" in entry:
            ax.axhline(entry["slicer_fill_between_slices"], color="tab:red", ls="--",
                       label="Slicer fill between slices")
            ax.plot(range(len(entry["rounds_from_slicer_fill"])), entry["rounds_from_slicer_fill"], "s-",
                    color="tab:green", label="RSTN from Slicer's fill")
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylim(0, 1)
        ax.grid(alpha=.3)
    np.atleast_1d(axes)[0].set_ylabel(f"DSC (mean of {max(e['cases'] for e in table.values())} CTs)")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Refinement from a corrupted truth: {result['recipe']} models, prior weight "
                 f"{result['prior_weight']:g}, held-out CTs", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="new_floor_prior")
    parser.add_argument("--compare-recipe", default=None, help="the same on this recipe's models (NIH cases)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prior-weight", type=float, default=0.0,
                        help="the prior's weight in every fine round (choose it with scripts/validate_prior_weight.py)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "refinement.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "refinement.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global PRIOR_WEIGHT
    PRIOR_WEIGHT = args.prior_weight
    cases = args.cases.split(",")
    result = {"recipe": args.recipe, "prior_weight": args.prior_weight, "date": time.strftime("%Y-%m-%d"),
              "device": device_description(torch.device("cpu")), "rounds": ROUNDS, "thr": 1.0,
              "citation": {"nih": NIH_CITATION, "totalseg": TOTALSEG}, "cases": measure(args.recipe, cases)}
    result["summary"] = summary(result["cases"])
    if args.compare_recipe:
        nih = [c for c in cases if c.startswith("PANCREAS")]
        compare = measure(args.compare_recipe, nih)
        result["compare"] = {"recipe": args.compare_recipe, "cases": compare, "summary": summary(compare),
                             "same_cases_summary": summary({k: v for k, v in result["cases"].items() if k in nih})}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    figure(result, args.figure)
    log(f"wrote {args.json} and {args.figure}")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
