"""Train and compare RSTN, RSTN + BiCLSTM, the C2F baseline and Cai et al.'s system on the real NIH data, with the
leave-one-patient-out cross-validation of the real-CT model (``train_real_model.py``).

    python scripts/compare_methods.py --data ../shared/data --work runs/compare [--rstn-work runs/ship_r4]

Per fold (test PANCREAS_0001, then PANCREAS_0002), every method trains on the other NIH volume plus the JPEG
slices of the other patients, at 1.5 mm, with the shipped model's augmentations:
- RSTN: the fold models of the shipped recipe (``--rstn-work``/cv_test<id>_jpeg/model: issue 9's CV), not retrained;
- RSTN + BiCLSTM: a bidirectional CLSTM refiner trained on that frozen RSTN's final probabilities;
- C2F: the stage-wise baseline, same light U-Net and recipe, ``--c2f-steps`` steps;
- Cai: PNet-MSA (64 channels) with progressive units, then PNet-MSA + BiCLSTM end to end.
Then ``evaluate`` runs the four packages on the held-out volume (native DICOM geometry) and writes one comparison
table and plot per fold, and the pooled table to ``--results``. Resumable: finished trainings are kept.
Data: Roth HR, Farag A, Turkbey EB, Lu L, Liu J, Summers RM. Data From Pancreas-CT. The Cancer Imaging Archive,
2016 (CC BY 4.0).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "PancreasRSTN"))
sys.path.insert(0, str(ROOT / "scripts"))

from train_real_model import CITATION, VOLUMES, load_data, train_config, training_cases  # noqa: E402

from PancreasRSTNLib.devices import resolve_device  # noqa: E402
from PancreasRSTNLib.training.trainer import train  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def method_configs(args: argparse.Namespace) -> dict:
    """The TrainConfig of each trained method: the shipped RSTN recipe's data, window, spacing and augmentations."""
    base = train_config(args)
    return {
        "c2f": replace(base, method="c2f", schedule=(("C2F", args.c2f_steps),), j_decay_every=0),
        "cai": replace(base, method="cai", backbone="pnet_msa", backbone_kwargs={}, loss="jaccard", views=("Z",),
                       schedule=(("CNN", args.cai_steps[0]), ("SEQ", args.cai_steps[1])), j_decay_every=0,
                       lr=1e-3, crop_size=128, batch_size=2, sequence_length=5, checkpoint_every=250),
        "rstn+biclstm": replace(base, method="rstn+biclstm", loss="jaccard", schedule=(("REF", args.ref_steps),),
                                j_decay_every=0, lr=1e-3, crop_size=128, sequence_length=5),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "compare")
    parser.add_argument("--rstn-work", type=Path, default=ROOT / "runs" / "ship_r4",
                        help="the train_real_model.py work folder whose CV fold models are the RSTN entries")
    parser.add_argument("--c2f-steps", type=int, default=3000)
    parser.add_argument("--cai-steps", type=lambda t: tuple(int(v) for v in t.split(",")), default=(1500, 150),
                        help="CNN,SEQ steps of Cai et al.'s system")
    parser.add_argument("--ref-steps", type=int, default=300)
    parser.add_argument("--only", default="c2f,cai,rstn+biclstm")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "method_comparison.json")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    # the recipe of train_real_model.py's shipped model (its train_config reads these)
    parser.add_argument("--steps", default="400,1200,3400")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--views", default="Z")
    parser.add_argument("--widths", default="8,16,32,64,128")
    parser.add_argument("--hu-window", type=lambda t: tuple(float(v) for v in t.split(",")), default=(-100.0, 240.0))
    parser.add_argument("--jpeg-floor-hu", type=float, default=-100.0)
    parser.add_argument("--unenhanced", type=float, default=0.3)
    parser.add_argument("--fatty-organ", type=float, default=0.3)
    parser.add_argument("--T", type=int, default=1)
    parser.add_argument("--negative-fraction", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    args.work.mkdir(parents=True, exist_ok=True)
    data = load_data(args.data, args.work, args)
    configs = method_configs(args)
    timings_path = args.work / "train_seconds.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    for test in VOLUMES:
        spec = {"train": [v for v in VOLUMES if v != test], "test": test, "jpeg": True}
        cases = training_cases(data, spec)
        fold = f"test{test[-4:]}"
        rstn = args.rstn_work / f"cv_{fold}_jpeg" / "model"
        for method in args.only.split(","):
            out = args.work / fold / method
            if (out / "model" / "model.json").is_file():
                continue
            cfg = configs[method]
            if method == "rstn+biclstm":
                cfg = replace(cfg, init=str(rstn))
            log(f"{fold}: training {method} on {spec['train']} + JPEG slices ({len(cases)} cases)")
            t0 = time.perf_counter()
            meta = {"name": f"{method}-nih-{fold}", "organ": "pancreas",
                    "training": {"data": {"volumes": spec["train"], "citation": CITATION}}}
            train(cases, cfg, out, resume=True, device=device, progress=False, package_metadata=meta)
            timings[f"{fold}/{method}"] = round(time.perf_counter() - t0, 1)
            timings_path.write_text(json.dumps(timings, indent=2) + "\n")
            log(f"{fold}: {method} done in {timings[f'{fold}/{method}']:.0f} s")
    if not args.train_only:
        compare_folds(args, timings)
    return 0


def compare_folds(args: argparse.Namespace, timings: dict) -> None:
    """``pancreas-rstn evaluate`` with the four packages on each held-out volume, then one pooled table."""
    from PancreasRSTNLib.app.cli import main as cli
    from PancreasRSTNLib.devices import device_description
    from PancreasRSTNLib.evaluation.comparison import COLUMNS

    pooled: dict[str, dict] = {}
    for k, test in enumerate(VOLUMES):
        fold = f"test{test[-4:]}"
        packages = [args.rstn_work / f"cv_{fold}_jpeg" / "model"] + [args.work / fold / m / "model"
                                                                       for m in ("rstn+biclstm", "c2f", "cai")]
        out = args.work / f"eval_{fold}"
        log(f"{fold}: evaluate {len(packages)} packages on {test}")
        rc = cli(["evaluate", "--model", *map(str, packages), "--data", str(args.data / "nih_pancreas_ct"),
                  "--fold", str(k), "--folds", str(len(VOLUMES)), "--cache", str(args.work / "cache_eval"),
                  "--device", args.device, "-o", str(out), "--overwrite", "--quiet"])
        if rc != 0:
            raise SystemExit(rc)
        result = json.loads((out / "comparison.json").read_text())
        for row in result["rows"]:
            entry = pooled.setdefault(row["method"], {"per_fold": {}})
            entry["per_fold"][test] = {key: row[key]["mean"] for _, key, *_ in COLUMNS}
            entry["per_fold"][test]["package"] = row["label"]
    for entry in pooled.values():
        folds = list(entry["per_fold"].values())
        entry["mean"] = {key: sum(f[key] for f in folds) / len(folds) for _, key, *_ in COLUMNS}
    results = {"what": "RSTN vs RSTN + BiCLSTM vs C2F vs Cai et al. (PNet-MSA + BiCLSTM), leave-one-patient-out on "
                       "the two NIH volumes (each also trained on the other patients' JPEG slices)",
               "data_citation": CITATION, "methods": pooled, "train_seconds": timings,
               "device": device_description(torch.device(str(resolve_device(args.device)))),
               "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
               "settings": {"c2f_steps": args.c2f_steps, "cai_steps": list(args.cai_steps), "ref_steps": args.ref_steps,
                            "evaluate": "defaults (thr 0.99, max 10 fine rounds), held-out volume at its DICOM "
                                        "geometry, resampled to 1.5 mm and back"}}
    (args.results).parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    log(f"pooled results in {args.results}")


if __name__ == "__main__":
    raise SystemExit(main())
