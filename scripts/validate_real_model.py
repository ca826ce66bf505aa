"""Patient-level 5-fold validation of real-CT recipes on all NIH data, a domain-shift panel, and the final model.

    python scripts/validate_real_model.py --recipe new --folds 0,1,2,3,4 [--work runs/validation]
    python scripts/validate_real_model.py --recipe new --final --final-steps 600,1400,3200,800 --ship
                                                                              # train on everything, ship it
    python scripts/validate_real_model.py --report                            # the tables of docs/models.md

Folds: ``benchmarks/splits/nih61_5fold.json`` (61 patients, seeded, committed). For fold k, training uses the two
NIH volumes unless held out and every JPEG slice of the other patients (both sets, crops at their true pixel size,
consecutive slices stacked); nothing of a held-out patient reaches training (checked here and in the tests).

Scores, for every held-out patient (per round, so drift shows):
- 2-D DSC pooled over its labelled slices: 2 sum|A and B| / sum(|A| + |B|), each slice segmented as a one-slice
  CT at its pixel size (its neighbours too when it has labelled neighbours, like a real CT);
- the held-out volumes (0001, 0002): 3-D DSC from the DICOM series, default options.
Domain-shift panel on the held-out slices: simulated unenhanced / arterial / late phases (the tissue-wise phase
model of the augmentation, with fixed draws), 0.57 mm pixels; on the held-out volumes: 5 mm slabs; and the
TotalSegmentator CT (3 mm, unenhanced, model-made label) for every fold's model.

Everything is resumable (finished trainings and scores are kept in --work). Data: Roth HR, Farag A, Turkbey EB,
Lu L, Liu J, Summers RM. Data From Pancreas-CT. The Cancer Imaging Archive, 2016 (CC BY 4.0).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "PancreasRSTN"))
sys.path.insert(0, str(ROOT / "scripts"))

from PancreasRSTNLib.devices import device_description  # noqa: E402
from PancreasRSTNLib.engine.inference import InferenceConfig  # noqa: E402
from PancreasRSTNLib.engine.resampling import Resampling  # noqa: E402
from PancreasRSTNLib.engine.segmentation import GridMapping, build_engine, run_on_grid  # noqa: E402
from PancreasRSTNLib.io.model_package import load_model_package  # noqa: E402
from PancreasRSTNLib.training.augmentation import REAL_CT_AUGMENT, AugmentConfig  # noqa: E402
from PancreasRSTNLib.training.data_cache import build_cache  # noqa: E402
from PancreasRSTNLib.training.datasets import open_dataset  # noqa: E402
from PancreasRSTNLib.training.jpeg_slices import fit_window_from_volumes, read_jpeg_slices  # noqa: E402
from PancreasRSTNLib.training.nih_slices import (  # noqa: E402
    FIRST_SET,
    read_all_slices,
    run_case,
    runs,
    scoring_slices,
    training_slices,
)
from PancreasRSTNLib.training.patient_folds import check_no_leak, load_folds  # noqa: E402
from PancreasRSTNLib.training.scanner_augmentation import PHASES, simulate_phase  # noqa: E402
from PancreasRSTNLib.training.trainer import TrainCase, TrainConfig, train  # noqa: E402
from PancreasRSTNLib.training.weight_soup import soup_packages  # noqa: E402

SPACING = (1.5, 1.5, 1.5)
VOLUMES = ("PANCREAS_0001", "PANCREAS_0002")
CITATION = ("Roth HR, Farag A, Turkbey EB, Lu L, Liu J, Summers RM. Data From Pancreas-CT. The Cancer Imaging "
            "Archive, 2016. https://doi.org/10.7937/K9/TCIA.2016.tNB1kqBU (CC BY 4.0)")
PRETRAINED = str(ROOT / "Resources" / "Pretrained" / "mobilenetv2_imagenet_encoder.safetensors")
LIGHT = {"backbone": "light", "backbone_kwargs": {"widths": [8, 16, 32, 64, 128], "norm": "instance"}}
MOBILE = {"backbone": "mobilenet_unet", "backbone_kwargs": {}, "pretrained_encoder": PRETRAINED}

#: recipe -> (data options, TrainConfig fields). "old" is the shipped pancreas-nih-light-1.5mm recipe.
RECIPES: dict[str, dict] = {
    "old": {"data": {"sets": "first", "floor_hu": -100.0, "hu_window": (-100.0, 240.0)},
            "train": {**LIGHT, "augment": AugmentConfig(unenhanced_probability=0.3, fatty_organ_probability=0.3)}},
    "new": {"data": {"sets": "all", "floor_hu": None, "hu_window": (0.0, 255.0)},
            "train": {**MOBILE, "augment": REAL_CT_AUGMENT, "noisy": True}},
}
RECIPES["new_scratch"] = {"data": RECIPES["new"]["data"],
                          "train": {**RECIPES["new"]["train"], "pretrained_encoder": None}}
RECIPES["new_light"] = {"data": RECIPES["new"]["data"], "train": {**RECIPES["new"]["train"], **LIGHT}}
#: the new recipe with the old recipe's unenhanced-phase augmentation (the TotalSegmentator CT is unenhanced)
RECIPES["new_unenh"] = {"data": RECIPES["new"]["data"],
                        "train": {**RECIPES["new"]["train"],
                                  "augment": replace(RECIPES["new"]["train"]["augment"], unenhanced_probability=0.3)}}
#: the new recipe with the old recipe's HU handling: the JPEG floor (0) mapped to -100 HU, window -100..240, so
#: that a fatty pancreas below 0 HU on a real CT stays visible
RECIPES["new_floor"] = {"data": {**RECIPES["old"]["data"], "sets": "all"}, "train": RECIPES["new"]["train"]}
#: new_floor whose noisy stage starts half its steps from a perturbed truth (training/prior_noise.py), so that the
#: model can refine a person's rough mask (segment --prior)
RECIPES["new_floor_prior"] = {"data": RECIPES["new_floor"]["data"],
                              "train": {**RECIPES["new_floor"]["train"], "prior_noise": 0.5}}
#: the shipped default's recipe with its folds trained on the final model's whole schedule (6000 steps, not the
#: 1000-step screening schedule), so that the validation measures the schedule that was shipped
RECIPES["new_floor_prior_6k"] = {**RECIPES["new_floor_prior"], "fold_steps": "600,1400,3200,800"}
#: new_floor_prior_6k trained on for another joint and noisy stage (J 3200, N 800) from each fold's (and the final)
#: 6000-step model at half the learning rate: a 10000-step schedule with a warm restart, that costs 4000 steps
RECIPES["new_floor_prior_10k"] = {"data": RECIPES["new_floor_prior"]["data"],
                                  "train": {**RECIPES["new_floor_prior"]["train"], "lr": 2.5e-4},
                                  "fold_steps": "0,0,3200,800", "final_steps": "0,0,3200,800",
                                  "init_from": "new_floor_prior_6k"}
#: new_floor_prior_10k trained on for a shorter cycle (J 1600, N 400) at the same learning rate: 12 000 steps with a
#: second warm restart
RECIPES["new_floor_prior_12k"] = {"data": RECIPES["new_floor_prior_10k"]["data"],
                                  "train": RECIPES["new_floor_prior_10k"]["train"],
                                  "fold_steps": "0,0,1600,400", "final_steps": "0,0,1600,400",
                                  "init_from": "new_floor_prior_10k"}
#: new_floor_prior_12k with the other hospitals' contrast phases drawn more often: the per-tissue phase simulation
#: on 80 % of the steps (50 %), a fatty organ on 30 % (20 %); the weakest part of the domain-shift panel is the
#: unenhanced phase, and the hidden CTs are of other phases
PHASE_HEAVY_AUGMENT = replace(REAL_CT_AUGMENT, fatty_organ_probability=0.3,
                              scanner=replace(REAL_CT_AUGMENT.scanner, phase_probability=0.8))
RECIPES["new_floor_prior_12k_phase"] = {**RECIPES["new_floor_prior_12k"],
                                        "train": {**RECIPES["new_floor_prior_12k"]["train"],
                                                  "augment": PHASE_HEAVY_AUGMENT}}
#: the uniform weight average ("model soup") of each fold's (and the final) new_floor_prior_12k and
#: new_floor_prior_12k_phase models, which trained on from one model: one network of the same size and speed, no
#: training (training/weight_soup.py). Choice rule fixed before its folds were scored: it replaces the shipped
#: new_floor_prior_12k_phase if, over all 5 folds with the paper's 3 rounds, its mean of NIH native and the four
#: shifted conditions (0.57 mm, unenhanced, arterial, late) is above both sources' (0.6656, 0.6664) and its NIH native
#: is not more than 0.01 below either's (0.7035, 0.6952); its shipped rounds (previous weight 0.7, thr 0.99, 5 rounds)
#: are then checked again on its folds for the 0.01 drift target
RECIPES["new_floor_prior_12k_soup"] = {"data": RECIPES["new_floor_prior_12k"]["data"],
                                       "train": RECIPES["new_floor_prior_12k"]["train"],
                                       "soup_of": ("new_floor_prior_12k", "new_floor_prior_12k_phase")}
#: new_floor_prior_12k again with another seed (its batches and augmentations drawn otherwise), as a third model to
#: average. Rule fixed before its folds were scored: the average of the three (new_floor_prior_12k_soup3) replaces
#: new_floor_prior_12k_soup if, over all 5 folds with the paper's 3 rounds, its mean of the five panel conditions is
#: above the two-model average's (0.6749) and its NIH native not more than 0.01 below (0.7073), and its shipped rounds
#: (previous weight 0.7, thr 0.99, 5 rounds) keep the drift to the best round within 0.01
RECIPES["new_floor_prior_12k_seed1"] = {**RECIPES["new_floor_prior_12k"], "seed": 1}
RECIPES["new_floor_prior_12k_soup3"] = {**RECIPES["new_floor_prior_12k_soup"],
                                        "soup_of": ("new_floor_prior_12k", "new_floor_prior_12k_phase",
                                                    "new_floor_prior_12k_seed1")}
RECIPES["old_alldata"] = {"data": {**RECIPES["old"]["data"], "sets": "all"}, "train": RECIPES["old"]["train"]}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------- data
class Data:
    """The NIH volumes (1.5 mm for training, native for testing), the JPEG slices and set 1's display window."""

    def __init__(self, root: Path, work: Path) -> None:
        dataset = open_dataset(root / "nih_pancreas_ct", organ="pancreas")
        self.root = root
        self.train_volumes = {c.name: c for c in build_cache(dataset, work / "cache_1.5mm", spacing=SPACING).cases()}
        self.native = {c.name: c for c in build_cache(dataset, work / "cache_native").cases()}
        first = read_jpeg_slices(root / FIRST_SET)
        self.window = fit_window_from_volumes(first, {n: np.asarray(c.image) for n, c in self.native.items()})["window"]
        self.slices = read_all_slices(root, self.window)
        log(f"{len(self.slices)} JPEG files, {len(scoring_slices(self.slices))} distinct slices of "
            f"{len({s.patient for s in self.slices})} patients; set 1 window "
            f"{self.window.low:.1f}..{self.window.high:.1f}")

    def training_cases(self, recipe: dict, held_out: set[str]) -> list[TrainCase]:
        options = recipe["data"]
        chosen = training_slices(self.slices, held_out, options["sets"])
        check_no_leak({s.patient for s in chosen} | set(self.train_volumes) - held_out, held_out)
        cases = [TrainCase(n, c.image, c.label) for n, c in self.train_volumes.items() if n not in held_out]
        return cases + [run_case(r, SPACING, options["floor_hu"]) for r in runs(chosen)]


def train_config(recipe: dict, steps: tuple[int, ...], seed: int, init: Path | None = None) -> TrainConfig:
    """The recipe's TrainConfig for S, I, J (and N) steps (a stage of 0 steps is left out), from ``init`` (a model
    package) when the recipe trains on from another recipe's models."""
    fields = dict(recipe["train"])
    noisy = fields.pop("noisy", False)
    lr = fields.pop("lr", 5e-4)
    schedule = [("S", steps[0]), ("I", steps[1]), ("J", steps[2])] + ([("N", steps[3])] if noisy else [])
    if init is not None:
        fields["init"] = str(init)
    return TrainConfig(views=("Z",), T=1, schedule=tuple((m, n) for m, n in schedule if n > 0),
                       j_decay_every=max(1, steps[2] // 2), optimizer="adamw", lr=lr, coarse_lr_ratio=1.0,
                       negative_fraction=0.5, seed=seed,
                       checkpoint_every=250, log_every=50, hu_window=recipe["data"]["hu_window"], spacing=SPACING,
                       bn_recalibration=False, **fields)


# ------------------------------------------------------------------------------------------------- scoring
def rounds_on(package, hu: np.ndarray, spacing: tuple, device: str) -> list[np.ndarray]:
    """Every round's mask on the input grid, default options (thr 0.99, up to 10 fine rounds)."""
    engine = build_engine(package, InferenceConfig(views=tuple(package.views)), device)
    mapping = GridMapping.for_input(hu.shape, spacing, package.spacing)
    return [r.canonical_mask for r in run_on_grid(engine, hu, mapping)]


def overlap(masks: list[np.ndarray], truth: np.ndarray) -> np.ndarray:
    """(rounds, 2): |A and B| and |A| + |B| per round, for pooled DSCs."""
    return np.array([[np.logical_and(m, truth).sum(), m.sum() + truth.sum()] for m in masks], dtype=np.float64)


def stop_rule_record(masks: list[np.ndarray], truth: np.ndarray) -> dict:
    """What a stop rule needs, without the truth at run time: |Ri and Rj| for every pair of rounds and the
    truth overlap of the majority vote of the fine rounds (voxels in at least half of them)."""
    flat = np.stack([m.ravel() for m in masks]).astype(np.float32)
    record = {"pairs": (flat @ flat.T).astype(np.int64).tolist()}
    if len(masks) > 1:
        vote = flat[1:].mean(axis=0) >= 0.5
        record["vote"] = [int(np.logical_and(vote, truth.ravel()).sum()), int(vote.sum() + truth.sum())]
    return record


def pooled(parts: list[np.ndarray]) -> list[float]:
    """Pooled DSC per round over slices whose rounds may stop at different counts (the last round carries on)."""
    n = max(len(p) for p in parts)
    total = sum(np.concatenate([p, np.repeat(p[-1:], n - len(p), axis=0)]) for p in parts)
    return [round(float(2 * a / b) if b else 1.0, 4) for a, b in total]


def slice_variants(hu: np.ndarray, truth: np.ndarray, spacing: float, seed: int) -> dict:
    """The held-out slice run as other scanners and phases would give it (fixed draws per slice)."""
    out = {"native": (hu, spacing)}
    label = torch.from_numpy(truth.transpose(2, 0, 1).astype(np.float32))
    image = torch.from_numpy(hu.transpose(2, 0, 1).astype(np.float32))
    for phase in ("unenhanced", "arterial", "late"):
        rng = np.random.default_rng([seed, len(phase)])
        moved = simulate_phase(image, label, PHASES[phase], rng).numpy().transpose(1, 2, 0)
        out[phase] = (np.rint(moved).astype(np.int16), spacing)
    resampling = Resampling.between(hu.shape, (spacing, spacing, SPACING[2]), (0.57, 0.57, SPACING[2]))
    out["0.57mm"] = (resampling.to_model(hu, dtype=np.int16), 0.57, resampling)
    return out


class HeldOutRun(NamedTuple):
    """One run of consecutive labelled slices of a held-out patient, as a thin CT on its own pixel size."""

    patient: str
    hu: np.ndarray  # (rows, cols, slices) int16
    truth: np.ndarray  # (rows, cols, slices) bool
    pixel_mm: float
    slice_index: int  # of its first slice: seeds its fixed draws

    @property
    def spacing(self) -> tuple[float, float, float]:
        return (self.pixel_mm, self.pixel_mm, SPACING[2])


def held_out_runs(data: Data, held_out: set[str], floor_hu: float | None) -> Iterator[HeldOutRun]:
    """Every run of labelled slices of the held-out patients, as all the scoring scripts segment them."""
    for run in runs([s for s in scoring_slices(data.slices) if s.patient in held_out]):
        first = run[0]
        yield HeldOutRun(first.patient, np.rint(np.stack([s.hu(floor_hu) for s in run], axis=2)).astype(np.int16),
                         np.stack([s.mask for s in run], axis=2), first.pixel_spacing_mm, first.slice_index)


def score_slices(package, data: Data, recipe: dict, held_out: set[str], device: str) -> dict:
    """Per held-out patient and variant: pooled 2-D DSC per round over its labelled slices."""
    chosen = [s for s in scoring_slices(data.slices) if s.patient in held_out]
    per_patient: dict[str, dict[str, list]] = {}
    records: dict[str, list] = {}
    for run in held_out_runs(data, held_out, recipe["data"]["floor_hu"]):
        truth = run.truth
        for variant, spec in slice_variants(run.hu, truth, run.pixel_mm, run.slice_index).items():
            v_hu, v_spacing = spec[0], spec[1]
            v_truth = truth if len(spec) == 2 else spec[2].mask_to_model(truth)
            masks = rounds_on(package, v_hu, (v_spacing, v_spacing, SPACING[2]), device)
            per_patient.setdefault(run.patient, {}).setdefault(variant, []).append(overlap(masks, v_truth))
            if variant == "native":
                records.setdefault(run.patient, []).append(
                    {"truth": overlap(masks, v_truth).astype(int).tolist(), **stop_rule_record(masks, v_truth)})
    out = {}
    for patient, variants in per_patient.items():
        out[patient] = {v: pooled(parts) for v, parts in variants.items()}
        out[patient]["slices"] = sum(len(r) for r in runs([s for s in chosen if s.patient == patient]))
        out[patient]["stop_rule_runs"] = records[patient]
    return out


def score_volume(package, data: Data, name: str, device: str) -> dict:
    """3-D DSC per round of a held-out volume, native and as 5 mm slabs."""
    case = data.native[name]
    hu, truth, spacing = np.asarray(case.image), np.asarray(case.label) > 0, tuple(case.spacing)
    masks = rounds_on(package, hu, spacing, device)
    out = {"native": pooled([overlap(masks, truth)]),
           "stop_rule_runs": [{"truth": overlap(masks, truth).astype(int).tolist(), **stop_rule_record(masks, truth)}]}
    n = hu.shape[2] // 5
    slab = np.rint(hu[:, :, :5 * n].reshape(*hu.shape[:2], n, 5).astype(np.float32).mean(axis=3)).astype(np.int16)
    slab_truth = truth[:, :, :5 * n].reshape(*truth.shape[:2], n, 5).mean(axis=3) >= 0.5
    out["5mm_slabs"] = pooled([overlap(rounds_on(package, slab, (spacing[0], spacing[1], spacing[2] * 5), device),
                                       slab_truth)])
    return out


def score_totalseg(package, root: Path, device: str) -> list[float]:
    import SimpleITK as sitk

    from PancreasRSTNLib.engine.segmentation import canonical_hu
    from PancreasRSTNLib.io.geometry import array_to_canonical

    image = sitk.ReadImage(str(root / "totalseg_ct_abdomen_3mm.nii.gz"))
    labels = sitk.ReadImage(str(root / "totalseg_ct_abdomen_3mm_labels.nii.gz"))
    hu, geometry = canonical_hu(image)
    truth = np.ascontiguousarray(array_to_canonical(sitk.GetArrayViewFromImage(labels), geometry)) == 7
    return pooled([overlap(rounds_on(package, hu, geometry.canonical_spacing, device), truth)])


def score_fold_models(args: argparse.Namespace, score, previous_matches) -> tuple[dict, list[int]]:
    """Per-patient scores of every fold model of ``args.recipe`` in ``args.work`` (``args.folds``), each by
    ``score(package, data, floor_hu, held_out)``, pooled with ``args.add`` (a previous result of other folds) when
    ``previous_matches(previous)`` says it was scored alike. Returns (per patient, the folds used)."""
    per_patient: dict = {}
    used: list[int] = []
    if args.add:
        previous = json.loads(args.add.read_text())
        if not previous_matches(previous):
            raise SystemExit(f"{args.add} was scored otherwise (recipe {previous['recipe']}): it cannot be pooled")
        per_patient.update(previous["per_patient"])
        used += previous["folds"]
    folds = load_folds()
    data = Data(args.data, args.work)
    floor_hu = RECIPES[args.recipe]["data"]["floor_hu"]
    for k in (int(v) for v in args.folds.split(",")):
        model = args.work / args.recipe / f"fold{k}" / "model"
        if not (model / "model.json").is_file():
            log(f"fold {k}: no model yet, skipped")
            continue
        t0 = time.perf_counter()
        per_patient.update(score(load_model_package(model), data, floor_hu, set(folds[k])))
        used.append(k)
        log(f"fold {k}: scored in {time.perf_counter() - t0:.0f} s")
    return per_patient, used


# ------------------------------------------------------------------------------------------------- runs
def run_fold(data: Data, recipe_name: str, fold: int | None, folds: list[list[str]], args: argparse.Namespace
             ) -> dict:
    recipe = RECIPES[recipe_name]
    held_out = set(folds[fold]) if fold is not None else set()
    name = f"fold{fold}" if fold is not None else "final"
    out = args.work / recipe_name / name
    results_path = out / "scores.json"
    if results_path.is_file() and not args.rescore:
        return json.loads(results_path.read_text())
    if "soup_of" in recipe:
        return score_fold(data, recipe_name, fold, held_out, average_models(args.work, recipe, name, out), 0.0,
                          (0,), args)
    cases = data.training_cases(recipe, held_out)
    fold_steps = recipe.get("fold_steps", args.steps)
    steps = tuple(int(v) for v in (recipe.get("final_steps", args.final_steps) if fold is None else fold_steps
                                   ).split(","))
    init = None
    if "init_from" in recipe:  # this fold's (or the final) model of the recipe it trains on from
        init = args.work / recipe["init_from"] / name / "model"
        if not (init / "model.json").is_file():
            raise SystemExit(f"{recipe_name} {name} trains on from {init}: run --recipe {recipe['init_from']} first")
    cfg = train_config(recipe, steps, recipe.get("seed", args.seed), init)
    log(f"{recipe_name} {name}: {len(cases)} training cases "
        f"({sum(c.image.shape[2] for c in cases if c.views == ('Z',))} JPEG slices), held out {len(held_out)}")
    t0 = time.perf_counter()
    package_dir = out / "model"
    if not (package_dir / "model.json").is_file():
        meta = {"name": f"pancreas-nih-{recipe_name}-{name}", "organ": "pancreas",
                "training": {"data": {"held_out_patients": sorted(held_out), "citation": CITATION,
                                      "jpeg_files": sum(c.image.shape[2] for c in cases if c.views == ("Z",)),
                                      "volumes": [n for n in VOLUMES if n not in held_out]}}}
        train(cases, replace(cfg), out, resume=True, device=args.device, progress=False, package_metadata=meta)
    return score_fold(data, recipe_name, fold, held_out, package_dir, round(time.perf_counter() - t0, 1), steps, args)


def average_models(work: Path, recipe: dict, name: str, out: Path) -> Path:
    """The weight average of the same fold's (or the final) models of the recipes in ``recipe["soup_of"]``."""
    package_dir = out / "model"
    if not (package_dir / "model.json").is_file():
        sources = [work / source / name / "model" for source in recipe["soup_of"]]
        missing = [str(s) for s in sources if not (s / "model.json").is_file()]
        if missing:
            raise SystemExit(f"the weight average of {name} needs {', '.join(missing)}: run those recipes first")
        soup_packages(sources, package_dir, {"name": f"pancreas-nih-{out.parent.name}-{name}"})
    return package_dir


def score_fold(data: Data, recipe_name: str, fold: int | None, held_out: set[str], package_dir: Path,
               train_seconds: float, steps: tuple[int, ...], args: argparse.Namespace) -> dict:
    """Score one fold's (or the final) model and write its scores.json."""
    recipe, name = RECIPES[recipe_name], f"fold{fold}" if fold is not None else "final"
    package = load_model_package(package_dir)
    t1 = time.perf_counter()
    result = {"recipe": recipe_name, "fold": fold, "held_out": sorted(held_out), "train_seconds": train_seconds,
              "device": device_description(torch.device(args.device)), "threads": torch.get_num_threads(),
              "steps": list(steps), "date": time.strftime("%Y-%m-%d")}
    if held_out:
        result["slices"] = score_slices(package, data, recipe, held_out, args.device)
        result["volumes"] = {v: score_volume(package, data, v, args.device) for v in VOLUMES if v in held_out}
    result["totalseg"] = score_totalseg(package, data.root, args.device)
    result["score_seconds"] = round(time.perf_counter() - t1, 1)
    results_path = args.work / recipe_name / name / "scores.json"
    results_path.write_text(json.dumps(result, indent=1) + "\n")
    log(f"{recipe_name} {name}: trained in {train_seconds} s, scored in {result['score_seconds']} s")
    return result


#: recipe -> (the bundled model's name, its model.json "inference" defaults: the fine rounds chosen on validation
#: folds with scripts/report_stop_rules.py and, for refinements, the rounds and the prior's weight chosen with
#: scripts/validate_prior_weight.py; and what its model card says of it)
SHIPPED = {
    "new": ("pancreas-nih-mobilenet-1.5mm", {"max_iter": 2},
            "RSTN for the pancreas in contrast-enhanced abdominal CT: a U-Net whose encoder starts from ImageNet's "
            "MobileNetV2, trained at 1.5 mm on all expert-labelled NIH Pancreas-CT data (the 2 volumes and 984 "
            "distinct JPEG slices of 61 patients) with scanner and contrast-phase augmentations. Weak on unenhanced "
            "CTs with a fatty pancreas (below 0 HU)."),
    "new_floor_prior": ("pancreas-nih-mobilenet-prior-1.5mm", {"max_iter": 2, "prior_max_iter": 1, "prior_weight": 0.4},
                        "RSTN for the pancreas in abdominal CT: a U-Net whose encoder starts from ImageNet's "
                        "MobileNetV2, trained at 1.5 mm on all expert-labelled NIH Pancreas-CT data (the 2 volumes "
                        "and 984 distinct JPEG slices of 61 patients; HU window -100..240) with scanner and "
                        "contrast-phase augmentations, and a noisy stage half of whose steps start from perturbed "
                        "truths, so that it can refine a person's rough mask (segment --prior). Weak on unenhanced "
                        "CTs with a fatty pancreas."),
    "new_floor_prior_10k": ("pancreas-nih-mobilenet-prior-10k-1.5mm", {"max_iter": 3, "prior_max_iter": 1,
                                                                       "prior_weight": 0.2},
                            "RSTN for the pancreas in abdominal CT: pancreas-nih-mobilenet-prior-1.5mm trained on for "
                            "another joint and noisy-prior stage (4000 steps at half the learning rate; 10000 steps "
                            "in all) on the same data: all expert-labelled NIH Pancreas-CT data (the 2 volumes and "
                            "984 distinct JPEG slices of 61 patients; HU window -100..240), ImageNet MobileNetV2 "
                            "encoder, scanner and contrast-phase augmentations, half the noisy stage's steps from "
                            "perturbed truths (segment --prior). Weak on unenhanced CTs with a fatty pancreas."),
}
for _recipe, _name, _what in (("new_floor_prior_12k", "pancreas-nih-mobilenet-prior-12k-1.5mm", ""),
                              ("new_floor_prior_12k_phase", "pancreas-nih-mobilenet-prior-12k-phase-1.5mm",
                               ", the contrast phases (80 % of the steps) and a fatty organ (30 %) drawn more often"),
                              ("new_floor_prior_12k_soup", "pancreas-nih-mobilenet-prior-12k-soup-1.5mm",
                               " twice, once with the contrast phases and a fatty organ drawn more often, and the two "
                               "weight-averaged into one network")):
    SHIPPED[_recipe] = (_name, {"max_iter": 5, "prior_max_iter": 1, "prior_weight": 0.2, "previous_weight": 0.7},
                        "RSTN for the pancreas in abdominal CT: pancreas-nih-mobilenet-prior-10k-1.5mm trained on for "
                        f"another 2000 steps (12000 in all){_what}, on the same data: all expert-labelled NIH "
                        "Pancreas-CT data (the 2 volumes and 984 distinct JPEG slices of 61 patients; HU window "
                        "-100..240), ImageNet MobileNetV2 encoder, scanner and contrast-phase augmentations, half the "
                        "noisy stage's steps from perturbed truths (segment --prior). Its 5 fine rounds each keep "
                        "0.7 of the previous round, so they settle. Weak on unenhanced CTs with a fatty pancreas.")
#: the paper's rounds' best cap on the 10 000- and 12 000-step folds (scripts/report_stop_rules.py): the rounds of
#: the domain-shift panel in the card of a model whose own rounds settle
PAPERS_ROUNDS_CAP = 3
MAX_SHIPPED_MB = 20.0
#: recipe -> the recipe whose folds validate its shipped final model: the same recipe on the final model's own
#: schedule (the 1000-step screening folds under-state a model trained for 6000 steps)
VALIDATED_BY = {"new_floor_prior": "new_floor_prior_6k"}
#: the folds' screening schedule (S, I, J and N steps) unless a recipe gives its own ``fold_steps``
FOLD_STEPS = "100,250,500,150"


def fold_schedule(recipe_name: str) -> str:
    """A recipe's fold steps, after those of every recipe whose fold models it trains on from."""
    sources = RECIPES[recipe_name].get("soup_of")
    if sources:
        return f"the weight average of each fold's {' and '.join(sources)} models ({fold_schedule(sources[0])})"
    steps = RECIPES[recipe_name].get("fold_steps", FOLD_STEPS)
    start = RECIPES[recipe_name].get("init_from")
    return steps if start is None else f"{fold_schedule(start)} ({start}), then {steps} from those models"


def previous_weight_validation(recipe_name: str, inference: dict) -> dict:
    """The model card's record of its previous-round weight: the folds' DSC at its rounds, weight and the engine's
    convergence threshold (scripts/validate_inference_levers.py --thr 0.99), and the drift to the best round against
    the paper's rounds (thr 1.0, every round)."""
    from validate_inference_levers import setting_name

    results = ROOT / "benchmarks" / "results"
    shipped = json.loads((results / f"inference_levers_{recipe_name}_previous_weight_thr.json").read_text())
    compared = json.loads((results / f"inference_levers_{recipe_name}_previous_weight.json").read_text())
    weight, rounds = inference["previous_weight"], inference["max_iter"]
    at = shipped["settings"][setting_name(0.0, 0.5, previous_weight=weight, thr=InferenceConfig().thr)]
    if shipped["patients"] != 61 or compared["patients"] != 61:
        raise SystemExit(f"{recipe_name}'s previous-weight runs cover {shipped['patients']} and "
                         f"{compared['patients']} patients: a shipped model's card needs all 61")
    return {"held_out_protocol": f"its {rounds} fine rounds, each keeping {weight} of the previous round, the "
                                 f"engine's thr {InferenceConfig().thr} (scripts/validate_inference_levers.py); the "
                                 "domain-shift panel below is of the paper's rounds",
            "previous_weight_validation": {
                "shipped_setting": {"mean": at["per_round_mean"][rounds], "std": at["per_round_std"][rounds],
                                    "patients": shipped["patients"]},
                "against_the_papers_rounds": {
                    name: {"per_round_mean": v["per_round_mean"], "best_round_mean": v["best_round_mean"],
                           "drift_of_cap": v["drift_of_cap"]} for name, v in compared["settings"].items()}}}


def ship(work: Path, recipe_name: str) -> Path:
    """Copy the final package into Resources/Models with its card fields: the recipe's validation (the final
    model saw every patient, so its accuracy is its recipe's, measured on held-out patients) and its round limit."""
    import shutil

    name, inference, description = SHIPPED[recipe_name]
    source = work / recipe_name / "final"
    validated_by = VALIDATED_BY.get(recipe_name, recipe_name)
    fold_steps = fold_schedule(validated_by)
    from report_validation import summarise

    # as the model runs by default; a model whose rounds settle (previous_weight) has its panel of the paper's rounds
    # at their best cap, and its own rounds' DSC from scripts/validate_inference_levers.py (below)
    panel_rounds = PAPERS_ROUNDS_CAP if inference.get("previous_weight") else inference["max_iter"]
    validation = summarise(work, validated_by, max_iter=panel_rounds)
    if validation["folds"] < 5:
        raise SystemExit(f"{validated_by} has {validation['folds']} scored folds in {work}: a shipped model's card "
                         "needs all 5 (gunzip benchmarks/results/validation_scores/ or run the folds)")
    stop_rules = json.loads((ROOT / "benchmarks" / "results" / "stop_rule_validation.json").read_text())[validated_by]
    final = json.loads((source / "scores.json").read_text())
    meta = json.loads((source / "model" / "model.json").read_text())
    meta.update({
        "name": name,
        "description": description,
        "intended_use": "Research only. Not a medical device; not for diagnosis or treatment decisions. Review "
                        "and correct every result.",
        "synthetic": False,
        "inference": inference,
        "evaluation": {
            "held_out_dsc": validation["final_round"]["native"]["mean"],
            "protocol": f"its recipe's patient-level {validation['folds']}-fold cross-validation over "
                        f"{validation['patients']} NIH patients (benchmarks/splits/nih61_5fold.json; "
                        + (fold_steps if "soup_of" in RECIPES[validated_by] else f"S,I,J,N steps {fold_steps} per fold")
                        + f", {validated_by}; the model's own {inference['max_iter']} fine "
                        "rounds); pooled 2-D DSC over each held-out patient's labelled slices, mean over patients"
                        + (f"; held_out_patient_level: the paper's rounds, {panel_rounds} of them"
                           if panel_rounds != inference["max_iter"] else ""),
            "held_out_patient_level": validation,
            "stop_rule_validation": {"max_iter": inference["max_iter"], **stop_rules},
            "totalseg_3mm_dsc_vs_model_made_labels_per_round": final["totalseg"],
        },
    })
    if inference.get("previous_weight"):  # its rounds as it runs them, from the folds' run of that setting
        meta["evaluation"].update(previous_weight_validation(validated_by, inference))
        meta["evaluation"]["held_out_dsc"] = meta["evaluation"]["previous_weight_validation"]["shipped_setting"][
            "mean"]
    prior_validation = ROOT / "benchmarks" / "results" / f"prior_weight_validation_{recipe_name}.json"
    if not prior_validation.is_file():  # the first recipe's, from before results were named by recipe
        prior_validation = prior_validation.with_name("prior_weight_validation.json")
    if "prior_weight" in inference and prior_validation.is_file():
        chosen = json.loads(prior_validation.read_text())
        if chosen["recipe"] == recipe_name:
            meta["evaluation"]["refinement_validation"] = {
                k: chosen[k] for k in ("folds", "patients", "left_out_test_cases", "chosen", "mean_over_corruptions")}
    from PancreasRSTNLib.models.pretrained import file_sha256

    config = meta["training"]["config"]
    if config.get("pretrained_encoder"):  # a file name and its hash, not this machine's path
        config["pretrained_encoder"] = {"file": Path(config["pretrained_encoder"]).name,
                                        "sha256": file_sha256(Path(config["pretrained_encoder"])),
                                        "made_by": "scripts/convert_mobilenetv2.py"}
    sources = RECIPES[recipe_name].get("soup_of", ())
    init_from = RECIPES[recipe_name].get("init_from") or (RECIPES[sources[0]].get("init_from") if sources else None)
    if init_from:  # the model it (or its averaged models) trained on from, by name and hash, not a path
        init = work / init_from / "final" / "model"
        weights = {f.name: file_sha256(f) for f in sorted(init.glob("*.safetensors"))}
        bundled = [d.name for d in sorted((ROOT / "Resources" / "Models").iterdir())
                   if {f.name: file_sha256(f) for f in sorted(d.glob("*.safetensors"))} == weights]
        config["init"] = {"model": json.loads((init / "model.json").read_text())["name"], "weights_sha256": weights,
                          "same_weights_as_bundled": bundled,
                          "trained_by": f"scripts/validate_real_model.py --recipe {init_from} --final"}
    if sources:  # its training is that of the models it averages: their time, and each one's augmentation
        averaged = [json.loads((work / r / "final" / "scores.json").read_text()) for r in sources]
        final = {**final, "train_seconds": round(sum(a["train_seconds"] for a in averaged), 1)}
        for record, recipe in zip(meta["soup"]["of"], sources):
            record.update({"recipe": recipe, "augment": json.loads(
                (work / recipe / "final" / "model" / "model.json").read_text())["training"]["config"]["augment"]})
    meta["training"]["data"].update({"citation": CITATION, "wall_seconds": final["train_seconds"],
                                     "device": final["device"], "date": final["date"]})
    target = ROOT / "Resources" / "Models" / name
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source / "model", staging)
    (staging / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    size_mb = sum(f.stat().st_size for f in staging.iterdir()) / 1e6
    if size_mb > MAX_SHIPPED_MB:
        shutil.rmtree(staging)
        raise SystemExit(f"{size_mb:.1f} MB is over the {MAX_SHIPPED_MB} MB a bundled model may take")
    load_model_package(staging)  # verified (sha256, schema) before it replaces anything
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log(f"shipped {target} ({size_mb:.1f} MB)")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "validation")
    parser.add_argument("--recipe", default="new", choices=sorted(RECIPES))
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--final", action="store_true", help="train on every patient (no held-out fold)")
    parser.add_argument("--steps", default=FOLD_STEPS, help="steps of stages S, I, J (and N) in the folds (a "
                        "recipe's fold_steps win)")
    parser.add_argument("--final-steps", default="300,700,1600,400", help="the same for --final")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ship", action="store_true", help="with --final: copy the model to Resources/Models/<its "
                        "name in SHIPPED> with its model card fields")
    parser.add_argument("--rescore", action="store_true", help="score again even if scores.json exists")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folds = load_folds()
    started = time.perf_counter()
    data = Data(args.data, args.work)
    if args.final:
        run_fold(data, args.recipe, None, folds, args)
        if args.ship:
            ship(args.work, args.recipe)
    else:
        for k in (int(v) for v in args.folds.split(",")):
            run_fold(data, args.recipe, k, folds, args)
    log(f"done in {time.perf_counter() - started:.0f} s on {platform.node()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
