"""``pancreas-rstn segment INPUT -o OUTPUT [--model NAME|DIR]``: segment one CT, round by round; or a cohort
(INPUT a folder of CTs, a glob, a CSV or a dataset; -o a folder), see ``segment_cohort.py``.

Without ``--model`` the best installed model for ``--organ`` is used (the user's own before the bundled ones,
never a synthetic one); the run resamples the CT to the model's spacing when they differ (``--no-resample``
keeps the reference's behaviour) and writes every result on the exact input grid."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ...devices import resolve_device
from ...engine.batching import precision_name
from ...engine.guidance import Guidance, change_from_prior
from ...engine.guidance_input import guidance_from_images, roi_from_argument
from ...engine.segmentation import GridRound, prepare_ct, segment_image
from ...errors import InputImageError, OptionsError
from ...io.geometry import CanonicalGeometry
from ...io.outputs import OutputPlan, json_text
from ...io.volume_io import read_image, read_input
from ...organs import get_organ
from ...progress import Progress, progress_mode
from ..cohort import is_cohort_input
from ..final_round import fine_rounds, refuse_empty
from ..round_files import ROUND_FILES, save_round
from .options import (
    add_inference_arguments,
    add_run_options,
    config_from_args,
    load_model_from_args,
    torch_threads,
)
from .segment_cohort import add_cohort_arguments, run_cohort_command


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment", help="segment an organ in a CT (file or DICOM folder) or in a whole cohort",
        description="Segment an organ in a CT with a model package; every round is reported.\n\n"
        "Cohort mode: INPUT is a folder of CTs (files and DICOM series folders), a quoted glob, a CSV with an "
        "'input' column (and optionally 'name') or an nnU-Net/MSD dataset; -o is a folder that gets "
        "<case>.nii.gz per case and cohort.csv/cohort.json. Finished cases are skipped when re-run; the exit code "
        "is the number of failed cases. Under torchrun the cases are split over the processes, one GPU each.")
    p.add_argument("input", help="CT volume (NIfTI, NRRD, MHA file or a DICOM series folder), or a cohort")
    p.add_argument("-o", "--output", required=True,
                   help="output label map: .nii.gz, .nii, .nrrd or .mha (on the exact input grid); for a cohort, a "
                   "folder")
    p.add_argument("--model", default=None,
                   help="a model folder (holds model.json) or the name of an installed model (`models list`); "
                   "default: the best installed real-CT model for --organ")
    p.add_argument("--organ", default="pancreas", help="organ whose default model is used when --model is not given")
    add_inference_arguments(p)
    p.add_argument("--save-iterations", metavar="DIR", help="write every round's mask and saliency channels here")
    p.add_argument("--probability", metavar="FILE", help="also write the final fused probability map (float32)")
    p.add_argument("--json", action="store_true",
                   help="print the run summary as JSON on stdout (on failure: a JSON error object, exit code 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--allow-non-ct", action="store_true", help="skip the check that intensities look like HU")
    p.add_argument("--allow-missing-slices", action="store_true",
                   help="segment a DICOM series with missing or unreadable slices anyway (with a warning: its slice "
                   "spacing is averaged over the gap, so the mask may not line up with the CT there)")
    guide = p.add_argument_group("refine a person's mask (one CT; docs/refinement.md)")
    guide.add_argument("--prior", metavar="MASK",
                       help="start the fine rounds from this mask instead of the coarse round (round 0 becomes "
                       "'prior'): a label map or a probability map in [0, 1] on the CT's own grid; a mask contoured "
                       "on some axial slices only is filled between them first")
    guide.add_argument("--prior-label", type=int, default=None, metavar="N",
                       help="the label value of the organ in --prior (default: its one non-zero value)")
    guide.add_argument("--prior-weight", type=float, default=None, metavar="W",
                       help="weight of the prior in every fine round's probability, in [0, 1) (default: the model's "
                       "validated weight, model.json inference.prior_weight, else 0)")
    guide.add_argument("--roi", metavar="BOX|FILE",
                       help="limit the result to a region: x0,x1,y0,y1,z0,z1 in LPS mm (write --roi=-50,... when "
                       "it starts with a minus), a Slicer markups ROI (.mrk.json) or a mask on the CT's grid; the "
                       "fine crops stay inside it")
    add_cohort_arguments(p)
    add_run_options(p)
    p.set_defaults(func=run, interrupt_note=REMOVED_NOTE)


#: What an interrupted single-case run says (commands/segment_cohort.py says what a cohort keeps).
REMOVED_NOTE = "what this run had written was removed, and nothing else"


def round_summary(r: GridRound, prior_mask: np.ndarray | None = None) -> dict:
    """One round as the summary reports it: voxels and volume on the input grid; with a prior, also the DSC to
    the person's mask and the volume change from it."""
    summary = {
        "round": r.index,
        "stage": r.stage,
        "voxels": r.voxel_count,
        "volume_ml": round(r.volume_ml, 3),
        "dsc_to_previous": None if r.dsc_to_previous is None else round(r.dsc_to_previous, 5),
        "seconds": {k: round(v, 3) for k, v in r.seconds.items()},
    }
    if prior_mask is not None:
        dsc, change = change_from_prior(prior_mask, r.canonical_mask, r.mapping.voxel_ml)
        summary.update({"dsc_to_prior": round(dsc, 5), "volume_change_ml": round(change, 3)})
    return summary


def check_guidance_arguments(args: argparse.Namespace) -> None:
    """Refuse, before anything is read, guidance options that cannot apply."""
    if args.prior_label is not None and not args.prior:
        raise OptionsError("--prior-label names a label of --prior: give --prior MASK too.")
    if args.prior_weight is not None and not args.prior:
        raise OptionsError("--prior-weight weighs --prior in the fine rounds: give --prior MASK too.")
    if (args.prior or args.roi) and is_cohort_input(args.input):
        raise OptionsError("--prior and --roi steer one CT: give a CT file or DICOM folder, not a cohort.")
    if args.prior and not Path(args.prior).exists():
        raise OptionsError(f"--prior {args.prior}: no such file. Give a mask file on the CT's grid.")


def read_guidance(args: argparse.Namespace, ct: CanonicalGeometry) -> Guidance | None:
    """The --prior and --roi of this run on the CT's canonical grid, checked (``guidance_input.py``)."""
    if not (args.prior or args.roi):
        return None
    roi, roi_report = roi_from_argument(args.roi, ct) if args.roi else (None, None)
    prior = read_image(args.prior) if args.prior else None
    guidance = guidance_from_images(ct, prior, args.prior_label, roi, roi_report)
    if args.prior:
        guidance.report["prior"]["file"] = str(args.prior)
    return guidance


def run(args: argparse.Namespace) -> int:
    config_from_args(args).validate()  # refused options first: before any file is touched
    check_guidance_arguments(args)
    if is_cohort_input(args.input):
        return run_cohort_command(args)
    started = time.perf_counter()
    plan = OutputPlan(overwrite=args.overwrite)  # every output checked before the model or the image is read
    try:
        plan.protect(args.input, "The input")  # ... and none may be the input or lie in its folder
        for path, what in ((args.prior, "The --prior mask"), (args.roi, "The --roi file")):
            if path and Path(path).exists():
                plan.protect(path, what)
        output = plan.file(args.output, "The output (-o)")
        probability = plan.file(args.probability, "The --probability output") if args.probability else None
        save_dir = (plan.folder(args.save_iterations, "The --save-iterations folder", claims=ROUND_FILES)
                    if args.save_iterations else None)
        with plan:  # published together on success; on any error or Ctrl-C only what this run made is removed
            summary = _segment_one_ct(args, plan, output, probability, save_dir, started)
    except BaseException:
        plan.abort()  # also when a check above made a folder and a later one refused the run
        raise
    if args.json:
        sys.stdout.write(json_text(summary))
    elif not args.quiet:
        print_summary(summary)
    return 0


def _segment_one_ct(args: argparse.Namespace, plan: OutputPlan, output: Path, probability: Path | None,
             save_dir: Path | None, started: float) -> dict:
    model, package, settings = load_model_from_args(args)
    warning = package.warning
    if warning and not args.json:
        print(f"WARNING: model '{package.metadata['name']}': {warning}", file=sys.stderr)
    t0 = time.perf_counter()
    image, input_warnings = read_input(args.input, args.allow_missing_slices)
    read_seconds = time.perf_counter() - t0
    if not args.json:
        for line in input_warnings:
            print(f"WARNING: {args.input}: {line}", file=sys.stderr)
    try:
        ct = prepare_ct(image, settings.allow_non_ct)  # the one check of the input, before any work
    except InputImageError as exc:  # a folder of several series: say which one was refused, and the others
        raise InputImageError(f"{exc} ({'; '.join(input_warnings)})" if input_warnings else str(exc),
                              fix=exc.fix) from exc
    del image  # the run needs only the canonical copy
    t0 = time.perf_counter()
    guidance = read_guidance(args, ct.geometry)  # refused here, before the model runs
    guidance_seconds = time.perf_counter() - t0
    prior_mask = None if guidance is None else guidance.prior_mask()
    label_value = get_organ(package.organ).label_value  # the one rule (organs.py)
    rounds: list[dict] = []
    last: GridRound | None = None
    with Progress(progress_mode(args.quiet or args.json)) as bar:
        for r in segment_image(ct, package, settings, progress=bar.update, guidance=guidance):
            rounds.append(round_summary(r, prior_mask))
            bar.line(format_round(rounds[-1]))
            if save_dir:
                save_round(r, plan.staged_folder(save_dir), label_value, overwrite=True)
            last = r
    assert last is not None
    refuse_empty(last, package, str(args.input))
    t0 = time.perf_counter()
    plan.write(output, last.mask_image(label_value))
    if probability:
        plan.write(probability, last.probability_image())
    write_seconds = time.perf_counter() - t0
    mapping = last.mapping
    return {
        "input": str(args.input),
        "output": str(output),
        "probability": None if probability is None else str(probability),
        "rounds_folder": None if save_dir is None else str(save_dir),
        "model": package.metadata["name"],
        "model_path": str(model.path),
        "model_source": "--model" if args.model else f"default for {args.organ} ({model.source})",
        "warning": warning,
        "organ": package.organ,
        "input_spacing": [round(s, 4) for s in mapping.input_spacing],
        "model_spacing": None if package.spacing is None else [round(s, 4) for s in package.spacing],
        "resampled_to": None if mapping.resampling is None else [round(s, 4) for s in mapping.model_spacing],
        "device": last.device,
        "precision": precision_name(settings.config.precision, resolve_device(settings.device)),
        "threads": torch_threads(),
        "input_warnings": input_warnings,
        "prior": None if guidance is None else guidance.report.get("prior"),
        "roi": None if guidance is None else guidance.report.get("roi"),
        "rounds": rounds,
        "fine_rounds": fine_rounds(last),
        "refined": last.stage == "refine",
        "stop_reason": last.stop_reason,
        "dsc_history": [r["dsc_to_previous"] for r in rounds[1:]],
        "volume_ml": rounds[-1]["volume_ml"],
        "seconds": {"read": round(read_seconds, 3), "prior_and_region": round(guidance_seconds, 3),
                    "write": round(write_seconds, 3),
                    "total": round(time.perf_counter() - started, 3)},
    }


def format_round(s: dict) -> str:
    dsc = "" if s["dsc_to_previous"] is None else f", DSC to previous {s['dsc_to_previous']:.4f}"
    if s.get("dsc_to_prior") is not None and s["stage"] != "prior":
        dsc += f", DSC to prior {s['dsc_to_prior']:.4f} ({s['volume_change_ml']:+.2f} ml)"
    return (f"round {s['round']} ({s['stage']}): {s['voxels']} voxels, {s['volume_ml']:.2f} ml{dsc}, "
            f"{sum(s['seconds'].values()):.2f} s")


def print_summary(summary: dict) -> None:
    reason = {"converged": "converged", "empty": "empty mask",
              "max_iter": "reached the round limit: --max-iter, or the model's validated count"}.get(
        summary["stop_reason"], summary["stop_reason"])
    print(f"model: {summary['model']} [{summary['model_source']}] {summary['model_path']}")
    if summary["model_spacing"] is None:
        print("not resampled: the model records no training spacing, so the CT is used at its own")
    elif summary["resampled_to"]:
        print("resampled from " + "x".join(f"{s:g}" for s in summary["input_spacing"]) + " mm to "
              + "x".join(f"{s:g}" for s in summary["resampled_to"]) + " mm (the model's spacing) and back")
    refined = ", then the refiner's round" if summary.get("refined") else ""
    print(f"{summary['organ']}: {summary['volume_ml']:.2f} ml after {summary['fine_rounds']} fine round(s){refined} "
          f"({reason})")
    history = ", ".join(f"{d:.4f}" for d in summary["dsc_history"]) or "none"
    print(f"inter-round DSC: {history}")
    stages: dict[str, float] = {"read": summary["seconds"]["read"]}
    if summary["prior"] or summary["roi"]:
        stages["prior and region"] = summary["seconds"]["prior_and_region"]
    for r in summary["rounds"]:
        for k, v in r["seconds"].items():
            key = k if r["stage"] == "coarse" else f"round {r['round']} {k}"
            stages[key] = v
    stages["write"] = summary["seconds"]["write"]
    print("time: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
          + f"; total {summary['seconds']['total']:.2f} s")
    print(f"device: {summary['device']}, precision {summary['precision']}")
    if summary["warning"]:
        print(f"WARNING: {summary['warning']}")
    print(f"wrote {summary['output']}")
