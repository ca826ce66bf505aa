"""Reproduce the shipped real-CT pancreas model from ../shared/data in one command, with its evidence.

    python scripts/train_real_model.py --data ../shared/data --work runs/real_ct [--ship]

1. Reads the two NIH Pancreas-CT volumes (DICOM series + expert labels, TCIA layout) and the 264 expert-labelled
   JPEG slices of 61 NIH patients.
2. Recovers the JPEGs' display window from the slices of cases 0001 and 0002 (their DICOM is here) and reports
   it with its residual; turns the JPEG slices into HU samples of the axial view (a slice has no neighbours: its
   3-slice input repeats it).
3. Cross-validation across patients: trains on one NIH volume (plus the JPEG slices of the *other* patients) and
   measures the 3-D DSC per round on the other volume, read from its DICOM series; then the reverse; both again
   without the JPEG slices. Each held-out volume is also re-sampled as other scanners would give it (5 mm
   slices; 0.57 mm pixels at 768x768) and segmented with no options.
4. Trains the shipped model on everything, and (``--ship``) writes it to Resources/Models/<name> with its
   provenance, spacing, measured held-out DSC and intended use, and the results to
   benchmarks/results/real_ct_model.json.

Everything is resumable: finished trainings are kept, an interrupted one resumes bit-exactly (--work).
Data: Roth HR, Farag A, Turkbey EB, Lu L, Liu J, Summers RM. Data From Pancreas-CT. The Cancer Imaging Archive,
2016 (CC BY 4.0).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "PancreasRSTN"))

from PancreasRSTNLib.app.demo import save_round_figure  # noqa: E402
from PancreasRSTNLib.devices import device_description, resolve_device  # noqa: E402
from PancreasRSTNLib.engine.inference import InferenceConfig, RSTNEngine  # noqa: E402
from PancreasRSTNLib.engine.resampling import Resampling  # noqa: E402
from PancreasRSTNLib.engine.segmentation import GridMapping, run_on_grid  # noqa: E402
from PancreasRSTNLib.evaluation.metrics import dice  # noqa: E402
from PancreasRSTNLib.io.model_package import load_model_package  # noqa: E402
from PancreasRSTNLib.training.augmentation import AugmentConfig  # noqa: E402
from PancreasRSTNLib.training.data_cache import build_cache  # noqa: E402
from PancreasRSTNLib.training.datasets import open_dataset  # noqa: E402
from PancreasRSTNLib.training.jpeg_slices import (  # noqa: E402
    ASSUMED_PIXEL_SPACING_MM,
    check_window_inside,
    fit_window_from_volumes,
    read_jpeg_slices,
    slice_sample,
)
from PancreasRSTNLib.training.trainer import TrainCase, TrainConfig, train  # noqa: E402

MODEL_NAME = "pancreas-nih-light-1.5mm"
SPACING = (1.5, 1.5, 1.5)  # canonical rows, cols, slices (mm)
HU_WINDOW = (-100.0, 240.0)  # the reference's; the JPEGs' clipped floor is mapped to fat (--jpeg-floor-hu)
WIDTHS = (8, 16, 32, 64, 128)  # default; --widths
CITATION = ("Roth HR, Farag A, Turkbey EB, Lu L, Liu J, Summers RM. Data From Pancreas-CT. The Cancer Imaging "
            "Archive, 2016. https://doi.org/10.7937/K9/TCIA.2016.tNB1kqBU (CC BY 4.0)")
VOLUMES = ("PANCREAS_0001", "PANCREAS_0002")
SCANNERS = {  # how other scanners would give the held-out volume (canonical spacing, mm)
    "native": None,
    "5mm_slices": "slab",
    "0.57mm_768px": (0.57, 0.57, 1.0),
}


def experiments(include_jpeg_ablation: bool) -> dict[str, dict]:
    """The JPEG slices feed view Z only: without them, views X and Y train on exactly the same samples with the
    same seeds, so the ablation retrains Z alone and borrows X and Y from the run with the slices."""
    out = {}
    for test in VOLUMES:
        train_on = [v for v in VOLUMES if v != test]
        with_jpeg = f"cv_test{test[-4:]}_jpeg"
        out[with_jpeg] = {"train": train_on, "test": test, "jpeg": True}
        if include_jpeg_ablation:
            out[f"cv_test{test[-4:]}_nojpeg"] = {"train": train_on, "test": test, "jpeg": False, "views": "Z",
                                                 "borrow_views_from": with_jpeg}
    out["final"] = {"train": list(VOLUMES), "test": None, "jpeg": True}
    return out


def borrowed_package(work: Path, name: str, spec: dict) -> Path:
    """The ablation's Z network with the X and Y networks of ``spec['borrow_views_from']`` (trained on the same
    samples), as one package to test."""
    from PancreasRSTNLib.io.model_package import save_model_package

    combined = work / name / "model_xyz"
    if (combined / "model.json").is_file():
        return combined
    own = load_model_package(work / name / "model")
    other = load_model_package(work / spec["borrow_views_from"] / "model")
    models = {v: other.models[v] for v in other.models if v not in own.models} | dict(own.models)
    meta = {k: v for k, v in own.metadata.items() if k not in ("files", "views", "rstn")}
    meta["training"] = dict(meta.get("training", {}), views_borrowed_from=spec["borrow_views_from"])
    return save_model_package(combined, models, meta)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------- data
def load_data(data: Path, work: Path, args: argparse.Namespace) -> dict:
    """NIH volumes at the model spacing (training) and native (testing), the JPEG slices and their window."""
    dataset = open_dataset(data / "nih_pancreas_ct", organ="pancreas")
    train_cache = build_cache(dataset, work / "cache_1.5mm", spacing=SPACING)
    native_cache = build_cache(dataset, work / "cache_native")
    native = {c.name: c for c in native_cache.cases()}
    slices = read_jpeg_slices(data / "nih_pancreas_jpg")
    fit = fit_window_from_volumes(slices, {n: np.asarray(c.image) for n, c in native.items()})
    window = fit["window"]
    check_window_inside(window, *args.hu_window, floor_hu=args.jpeg_floor_hu)
    log(f"JPEG display window {window.low:.1f} .. {window.high:.1f} HU, residual {window.rms_grey:.2f} grey levels "
        f"(min correlation {window.correlation:.4f}) from {len(fit['slices'])} slices of cases 0001/0002")
    jpeg_cases = []
    for s in slices:
        image, label = slice_sample(s, window, SPACING, floor_hu=args.jpeg_floor_hu)
        jpeg_cases.append((s.case, TrainCase(f"jpeg_{s.name}", image, label, views=("Z",))))
    log(f"{len(jpeg_cases)} JPEG slices of {len({c for c, _ in jpeg_cases})} patients; NIH volumes "
        + ", ".join(f"{c.name} {c.image.shape} at {tuple(round(v, 3) for v in c.spacing)} mm"
                    for c in train_cache.cases()))
    return {"train": {c.name: c for c in train_cache.cases()}, "native": native, "jpeg": jpeg_cases,
            "window": fit}


def training_cases(data: dict, spec: dict) -> list[TrainCase]:
    cases = [TrainCase(n, data["train"][n].image, data["train"][n].label) for n in spec["train"]]
    if spec["jpeg"]:
        cases += [case for patient, case in data["jpeg"] if patient != spec["test"]]
    return cases


def train_config(args: argparse.Namespace) -> TrainConfig:
    steps = [int(v) for v in args.steps.split(",")]
    return TrainConfig(
        views=tuple(args.views), backbone="light", T=args.T,
        backbone_kwargs={"widths": tuple(int(w) for w in args.widths.split(",")), "norm": "instance"},
        schedule=(("S", steps[0]), ("I", steps[1]), ("J", steps[2])), j_decay_every=max(1, steps[2] // 2),
        optimizer="adamw", lr=args.lr, coarse_lr_ratio=1.0, negative_fraction=args.negative_fraction, seed=args.seed,
        checkpoint_every=500, log_every=50, hu_window=tuple(args.hu_window),
        augment=AugmentConfig(unenhanced_probability=args.unenhanced, fatty_organ_probability=args.fatty_organ),
        spacing=SPACING, bn_recalibration=False,
    )


# ------------------------------------------------------------------------------------------------- testing
def scanner_variant(hu: np.ndarray, truth: np.ndarray, spacing: tuple, how) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The held-out volume as another scanner would give it: thick slices (mean of 5 one-mm slices) or smaller
    pixels (linear resampling); the truth follows (fraction >= 0.5)."""
    if how is None:
        return hu, truth, spacing
    if how == "slab":
        n = hu.shape[2] // 5
        slab = hu[:, :, :5 * n].reshape(*hu.shape[:2], n, 5).astype(np.float32).mean(axis=3)
        mask = truth[:, :, :5 * n].reshape(*truth.shape[:2], n, 5).mean(axis=3) >= 0.5
        return np.rint(slab).astype(np.int16), mask, (spacing[0], spacing[1], spacing[2] * 5)
    resampling = Resampling.between(hu.shape, spacing, how)
    return resampling.to_model(hu, dtype=np.int16), resampling.mask_to_model(truth), resampling.model_spacing


def test_volume(package, hu: np.ndarray, truth: np.ndarray, spacing: tuple, views: str, device: str,
                figure: Path | None = None) -> dict:
    """A default run (thr 0.99, up to 10 rounds) through the spacing-aware path; DSC per round on the input grid."""
    config = InferenceConfig(views=tuple(views))
    t0 = time.perf_counter()
    rounds = []
    engine = RSTNEngine(package.models, config, device=device, window=package.window)
    for r in run_on_grid(engine, hu, GridMapping.for_input(hu.shape, spacing, package.spacing)):
        rounds.append(r)
        r.canonical_mask  # noqa: B018 - computed now, so that it is timed with its round
    seconds = time.perf_counter() - t0
    dsc = [round(dice(r.canonical_mask, truth, empty=0.0), 4) for r in rounds]
    out = {"dsc_per_round": dsc, "final_dsc": dsc[-1], "coarse_dsc": dsc[0],
           "inter_round_dsc": [round(float(r.dsc_to_previous), 4) for r in rounds[1:]],
           "fine_rounds": len(rounds) - 1, "stop_reason": rounds[-1].stop_reason, "seconds": round(seconds, 1),
           "input_shape": list(hu.shape), "input_spacing": [round(float(s), 3) for s in spacing],
           "model_grid": list(rounds[0].result.probability.shape),
           "volume_ml": round(rounds[-1].volume_ml, 1),
           "truth_ml": round(float(truth.sum()) * float(np.prod(spacing)) / 1000, 1)}
    if figure is not None:
        save_round_figure(hu, truth, rounds, dsc, figure)
        out["figure"] = str(figure)
    return out



def test_experiment(package_dir: Path, data: dict, spec: dict, work: Path, device: str) -> dict:
    package = load_model_package(package_dir)
    native = data["native"][spec["test"]]
    hu, truth, spacing = np.asarray(native.image), np.asarray(native.label) > 0, tuple(native.spacing)
    results = {}
    for scanner, how in SCANNERS.items():
        v_hu, v_truth, v_spacing = scanner_variant(hu, truth, spacing, how)
        for views in ("XYZ", "Z"):
            if not set(views) <= set(package.views):
                continue
            figure = work / f"figure_{spec['test']}_{scanner}_{views}.png" if scanner == "native" else None
            r = test_volume(package, v_hu, v_truth, v_spacing, views, device, figure)
            results[f"{scanner}/{views}"] = r
            log(f"  {spec['test']} {scanner:13s} views {views:3s}: DSC per round {r['dsc_per_round']} "
                f"({r['fine_rounds']} fine rounds, {r['stop_reason']}), {r['seconds']} s")
    return results


def test_totalseg(package_dir: Path, data_root: Path, device: str) -> dict:
    """The TotalSegmentator example CT (3 mm, model-made labels: label 7 = pancreas), read as a user would."""
    import SimpleITK as sitk

    from PancreasRSTNLib.engine.segmentation import canonical_hu

    package = load_model_package(package_dir)
    image = sitk.ReadImage(str(data_root / "totalseg_ct_abdomen_3mm.nii.gz"))
    labels = sitk.ReadImage(str(data_root / "totalseg_ct_abdomen_3mm_labels.nii.gz"))
    hu, geometry = canonical_hu(image)
    from PancreasRSTNLib.io.geometry import array_to_canonical

    truth = np.ascontiguousarray(array_to_canonical(sitk.GetArrayViewFromImage(labels), geometry)) == 7
    return {views: test_volume(package, hu, truth, geometry.canonical_spacing, views, device)
            for views in ("XYZ", "Z") if set(views) <= set(package.views)}


# ------------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data folder")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "real_ct", help="working folder (resumable)")
    parser.add_argument("--steps", default="300,900,1800", help="steps per view of stages S, I, J")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--views", default="Z", help="views to train (XYZ: the X and Y networks, trained on one or "
                        "two volumes, did not transfer to a new patient in the cross-validation)")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="light U-Net widths")
    parser.add_argument("--hu-window", type=lambda t: tuple(float(v) for v in t.split(",")), default=HU_WINDOW,
                        help="HU window low,high (write --hu-window=-100,240)")
    parser.add_argument("--jpeg-floor-hu", type=lambda t: None if t.lower() == "none" else float(t), default=-100.0,
                        help="HU given to the JPEG slices' clipped floor (grey <= 8); 'none' keeps the window's low")
    parser.add_argument("--unenhanced", type=float, default=0.3,
                        help="probability of the unenhanced-scan augmentation (a -27 to -80 HU shift)")
    parser.add_argument("--fatty-organ", type=float, default=0.0,
                        help="probability of the fatty-organ augmentation (the pancreas lowered by 0 to 120 HU)")
    parser.add_argument("--T", type=int, default=3, help="unrolled fine iterations in the joint loss (paper: 1..5)")
    parser.add_argument("--negative-fraction", type=float, default=1.0,
                        help="organ-free slices of the volumes per organ slice of the volumes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="comma-separated experiment names (default: all)")
    parser.add_argument("--no-ablation", action="store_true", help="skip the runs without the JPEG slices")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ship", action="store_true", help=f"copy the final model to Resources/Models/{MODEL_NAME}")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    started = time.perf_counter()
    data = load_data(args.data, args.work, args)
    window = data["window"]
    results["jpeg_window"] = {"pooled": window["window"].to_dict(),
                              "per_slice": {k: v.to_dict() for k, v in window["slices"].items()},
                              "assumed_pixel_spacing_mm": ASSUMED_PIXEL_SPACING_MM}
    cfg = train_config(args)
    results["recipe"] = {"spacing": SPACING, "hu_window": list(args.hu_window), "jpeg_floor_hu": args.jpeg_floor_hu,
                         "train_config": cfg.to_dict()}
    wanted = set(args.only.split(",")) if args.only else None
    for name, spec in experiments(not args.no_ablation).items():
        if wanted is not None and name not in wanted:
            continue
        out = args.work / name
        cases = training_cases(data, spec)
        n_jpeg = sum(1 for c in cases if c.views == ("Z",))
        log(f"{name}: train on {spec['train']} + {n_jpeg} JPEG slices; test {spec['test']}")
        t0 = time.perf_counter()
        package_dir = out / "model"
        if not (package_dir / "model.json").is_file():
            meta = {"name": MODEL_NAME if name == "final" else f"{MODEL_NAME}-{name}", "organ": "pancreas",
                    "training": {"data": {"volumes": spec["train"], "jpeg_slices": n_jpeg, "citation": CITATION}}}
            run_cfg = replace(cfg, views=tuple(spec.get("views", cfg.views)))
            train(cases, run_cfg, out, resume=True, device=device, progress=False, package_metadata=meta)
        if spec.get("borrow_views_from"):
            package_dir = borrowed_package(args.work, name, spec)
        entry = results.setdefault("experiments", {}).setdefault(name, {})
        entry.update({"train": spec["train"], "test": spec["test"], "jpeg_slices": n_jpeg,
                      "train_seconds": entry.get("train_seconds") or round(time.perf_counter() - t0, 1),
                      "device": device_description(torch.device(device))})
        if spec["test"]:
            entry["held_out"] = test_experiment(package_dir, data, spec, out, device)
        else:
            entry["totalseg_3mm"] = test_totalseg(package_dir, args.data, device)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    results["wall_seconds_this_run"] = round(time.perf_counter() - started, 1)
    results["machine"] = {"device": device_description(torch.device(device)), "platform": platform.platform(),
                          "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    if args.ship:
        ship(args.work, results)
    log(f"done in {time.perf_counter() - started:.0f} s; results in {results_path}")
    return 0


def held_out_summary(results: dict, views: str) -> dict:
    """Mean held-out DSC of the cross-validation with the JPEG slices, per scanner geometry."""
    summary = {}
    for scanner in SCANNERS:
        values = [e["held_out"][f"{scanner}/{views}"]["final_dsc"] for n, e in results.get("experiments", {}).items()
                  if n.endswith("_jpeg") and "held_out" in e and f"{scanner}/{views}" in e["held_out"]]
        if values:
            summary[scanner] = {"mean": round(float(np.mean(values)), 4), "per_fold": values}
    return summary


def ship(work: Path, results: dict) -> None:
    """Copy the final package into Resources/Models with its card fields, and the results into benchmarks/."""
    source = work / "final" / "model"
    target = ROOT / "Resources" / "Models" / MODEL_NAME
    meta = json.loads((source / "model.json").read_text())
    views = "".join(meta["views"])
    summary = held_out_summary(results, views)
    native = summary.get("native", {})
    meta.update({
        "description": "Light-backbone RSTN for the pancreas in abdominal CT, trained on expert-labelled NIH "
                       "Pancreas-CT data (2 volumes and 264 single slices of 61 patients) at 1.5 mm isotropic "
                       "spacing. Few training patients: expect failures on unusual anatomy, pathology or scanners.",
        "intended_use": "Research only. Not a medical device; not for diagnosis or treatment decisions. Review "
                        "and correct every result.",
        "synthetic": False,
        "evaluation": {
            "held_out_dsc": native.get("mean"),
            "protocol": "leave-one-patient-out over the two NIH volumes (the held-out patient's JPEG slices "
                        "excluded too), same recipe as this model; 3-D DSC on the held-out volume read from "
                        "its DICOM series, default options",
            "held_out_by_scanner_geometry": summary,
            "totalseg_3mm_dsc_vs_model_made_labels": (results["experiments"]["final"].get("totalseg_3mm", {})
                                                      .get(views, {}).get("final_dsc")),
        },
    })
    meta["training"]["data"].update({
        "provenance": "TCIA Pancreas-CT (NIH Clinical Center): volumes PANCREAS_0001 and PANCREAS_0002 (DICOM + "
                      "expert labels, via giussepi/gutils_test_datasets TINY-CT-82) and 264 display-windowed JPEG "
                      "slices of 61 patients (Kaggle conversion via atlan-antillia/Tensorflow-Image-Segmentation-"
                      "Pancreas); see ../shared/data/PROVENANCE.md",
        "jpeg_window_hu": results["jpeg_window"]["pooled"],
        "jpeg_assumed_pixel_spacing_mm": ASSUMED_PIXEL_SPACING_MM,
    })
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    (target / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    bench = ROOT / "benchmarks" / "results" / "real_ct_model.json"
    bench.parent.mkdir(parents=True, exist_ok=True)
    bench.write_text(json.dumps(results, indent=2) + "\n")
    log(f"shipped {target} ({sum(f.stat().st_size for f in target.iterdir()) / 1e6:.1f} MB); results in {bench}")


if __name__ == "__main__":
    sys.exit(main())
