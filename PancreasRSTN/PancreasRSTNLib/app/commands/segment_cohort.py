"""``pancreas-rstn segment COHORT -o DIR``: the cohort mode of ``segment`` (a folder, a glob, a CSV or a
dataset in; one output per case, a table, resumable; split over the ranks under torchrun). The rules are in
``cohort.py``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ...errors import OutputPathError
from ...io.outputs import VOLUME_SUFFIXES, OutputPlan, json_text, volume_suffix
from ...io.paths import Place
from ...progress import CohortProgress, progress_mode

#: The exit code says how many cases failed; shells keep codes above 125 for themselves.
MAX_EXIT_CODE = 125
#: What an interrupted cohort says: finished cases stay (that is what makes it resumable).
KEPT_NOTE = ("every case finished before it is kept (its output and its row in -o/.rows), the case that was running "
             "was not written; run the same command again to do the rest")


def check_cohort_args(args: argparse.Namespace) -> Path:
    """Refuse what a cohort cannot do, before any work; returns the output folder."""
    out = Path(args.output).expanduser()
    if volume_suffix(out) is not None:
        raise OutputPathError(f"{args.input} holds many CTs, so -o must be a folder (one <case>{args.output_format} "
                              f"per case), not the file name {out.name}.")
    for flag, value in (("--probability", args.probability), ("--save-iterations", args.save_iterations)):
        if value:
            raise OutputPathError(f"{flag} writes one case's files; it is not available for a cohort. Segment that "
                                  "case alone to get them.")
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"-o {out} is a file; give a folder for the cohort's outputs.")
    return out


def run_cohort_command(args: argparse.Namespace) -> int:
    from ...distributed import finish_distributed, init_distributed
    from ..cohort import CohortRunOptions, collect_inputs, run_cohort
    from .options import load_model_from_args

    args.interrupt_note = KEPT_NOTE
    out = check_cohort_args(args)
    cases = collect_inputs(args.input)  # every input checked, names unique, before the model is read
    plan = OutputPlan(inputs=[Place(f"Case {c.name}'s input", c.input, folder=c.input.is_dir()) for c in cases])
    plan.claim(Place("The cohort output folder (-o)", out, folder=True))  # it may not be, or hold, an input
    plan.writable_folder(out, "The cohort output folder (-o)")
    dist_info = init_distributed()
    try:
        _, package, settings = load_model_from_args(args)
        quiet = args.quiet or args.json
        if package.warning and dist_info.main and not args.json:
            print(f"WARNING: model '{package.metadata['name']}': {package.warning}", file=sys.stderr)
        prefix = "" if dist_info.world == 1 else f"[rank {dist_info.rank}] "
        with CohortProgress(progress_mode(quiet), len(cases[dist_info.rank::dist_info.world]),
                            dist_info.rank) as bar:
            result = run_cohort(
                cases, out, CohortRunOptions(
                    package, settings, overwrite=args.overwrite, suffix=args.output_format,
                    prefetch=not args.no_prefetch, allow_missing_slices=args.allow_missing_slices),
                dist_info=dist_info, progress=bar, echo=lambda line: bar.line(prefix + line))
    except BaseException:
        plan.abort()  # removes -o only if this run made it and it is still empty
        raise
    finally:
        finish_distributed(dist_info)
    if not dist_info.main:
        return 0  # rank 0 reports for everyone
    summary = json.loads((out / "cohort.json").read_text())
    if args.json:
        sys.stdout.write(json_text(summary))
    elif not args.quiet:
        info = summary["info"]
        print(f"{info['cases']} case(s): {info['cases'] - info['failed']} done ({info['skipped_done_earlier']} "
              f"done earlier), {info['failed']} failed; {info['seconds']:.1f} s; model {info['model']}")
        print(f"table: {out / 'cohort.csv'} and {out / 'cohort.json'}")
        for row in result.rows:
            if row.status == "failed":
                print(f"FAILED {row.case}: {row.error}", file=sys.stderr)
    return min(result.failed, MAX_EXIT_CODE)


def add_cohort_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-format", default=".nii.gz", choices=VOLUME_SUFFIXES,
                   help="cohort mode: the format of each case's output")
    p.add_argument("--no-prefetch", action="store_true",
                   help="cohort mode: do not read the next case while the current one runs")
