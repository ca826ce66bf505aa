"""Side-by-side benchmark: our batched engine against the reference-style loop (batch 1, fp32, per triplet),
in one process, on the same weights and the same volume, warmed up the same way; medians over repeats.

Without ``--model`` the weights are random and the fine stage crops by the phantom's ground truth (the
reference's oracle testing), so the crop sizes are realistic and exactly ``max_iter`` fine rounds run whatever
the weights predict: an upper bound of the real cost. With ``--model`` the run is the real one, as ``segment``
runs it: resampled to the model's spacing when the CT's differs (timed as its own stages, in and out).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..devices import device_description, resolve_device
from ..engine.inference import InferenceConfig, RoundResult, RSTNEngine
from ..engine.reference_loop import reference_segment
from ..engine.segmentation import GridMapping, GridRound, canonical_hu
from ..engine.triplets import triplet_indices
from ..errors import RSTNError
from ..io.geometry import CanonicalGeometry, from_canonical
from ..io.model_package import ModelPackage, load_model_package
from ..io.volume_io import read_image, write_image
from ..models.intensity import DEFAULT_WINDOW, HUWindow
from ..models.model import RSTN, RSTNConfig
from ..views import VIEW_AXES, VIEWS
from .metrics import dice
from .timing import coarse_gflop, host_peak_gb, median, peak_tflops, sync
from .training_throughput import training_throughput

Log = Callable[[str], None]
#: The engine's timed runs: (rounds, seconds) each.
Runs = list[tuple[list[RoundResult], float]]

@dataclass
class BenchmarkSettings:
    device: str = "auto"
    backbone: str = "fcn8s"
    backbone_kwargs: dict = field(default_factory=dict)
    shape: tuple[int, int, int] = (512, 512, 240)  # canonical rows, cols, slices
    input: str | None = None
    model: str | None = None
    repeats: int = 3
    thr: float = 0.99
    max_iter: int = 10
    precision: str = "auto"
    coarse_downsample: int = 1
    reference: str = "auto"  # full | sample | off | auto (full when it is cheap, else sample)
    reference_sample: int = 3  # triplets timed per view and stage in "sample" mode
    scaling: tuple[int, ...] | None = None  # None: L/4, L/2, L and 2L of the volume's L slices
    scaling_inplane: int | None = None
    training: bool = True
    training_size: int | None = None  # None: the volume's in-plane size (at most 512)
    training_steps: int = 5
    seed: int = 0
    resample: bool = True  # with --model: to the model's spacing, as segment does


@dataclass
class _Workload:
    """What every timed run works on: the volume on the model grid, the phantom's truth (None for a real CT),
    the weights and their HU window, the way back to the input grid, and the input stages' timings."""

    hu: np.ndarray
    truth: np.ndarray | None
    models: dict[str, RSTN]
    window: HUWindow
    mapping: GridMapping
    geometry: CanonicalGeometry
    io_timings: dict[str, float]
    oracle: np.ndarray | None  # random weights crop by the phantom's truth (see the module's docstring)
    package: ModelPackage | None  # its model.json settings run as ``segment`` runs them (None: random weights)


def _volume(settings: BenchmarkSettings, log: Log) -> tuple[np.ndarray, np.ndarray | None, dict, CanonicalGeometry]:
    """The benchmark volume, read the way a user's file is read (timed), plus its ground truth if a phantom."""
    from ..io.geometry import to_canonical
    from ..phantom import make_phantom

    timings: dict[str, float] = {}
    truth = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(settings.input) if settings.input else None
        if path is None:
            rows, cols, slices = settings.shape
            image, labels = make_phantom(size=(cols, rows, slices), seed=settings.seed + 777)
            truth = to_canonical(labels)[0] == 1
            path = write_image(image, Path(tmp) / "phantom.nii.gz")
        t0 = time.perf_counter()
        image = read_image(path)
        timings["read"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        hu, geometry = canonical_hu(image)
        timings["canonicalise"] = time.perf_counter() - t0
    log(f"volume {hu.shape} ({'phantom' if truth is not None else settings.input}), read {timings['read']:.2f} s")
    return hu, truth, timings, geometry


def _models(settings: BenchmarkSettings) -> tuple[dict[str, RSTN], str, tuple | None, HUWindow, ModelPackage | None]:
    """(models, description, the model's spacing, its HU window, the package they come from)."""
    if settings.model:
        pkg = load_model_package(settings.model)
        if pkg.method != "rstn":
            from ..errors import ModelPackageError

            raise ModelPackageError(f"`benchmark` times RSTN's engine against the reference loop; "
                                    f"{pkg.metadata['name']} is a {pkg.method.upper()} package. Time it with "
                                    "`pancreas-rstn evaluate --model ...` (its report has seconds per case).")
        return pkg.models, f"package {pkg.metadata['name']}", pkg.spacing, pkg.window, pkg
    torch.manual_seed(settings.seed)
    config = RSTNConfig(backbone=settings.backbone, backbone_kwargs=settings.backbone_kwargs)
    models = {v: RSTN(config).eval() for v in VIEWS}
    for model in models.values():
        # From-scratch FCN-8s zeroes its score layers: every logit would be exactly 0 (p = 0.5, on the threshold)
        # and the masks would be decided by rounding. Small random score weights give real, comparable masks.
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Conv2d) and "score" in name:
                torch.nn.init.normal_(module.weight, std=0.01)
    return models, f"random {settings.backbone} weights (seed {settings.seed})", None, DEFAULT_WINDOW, None


def _run_engine(models: dict[str, RSTN], hu: np.ndarray, config: InferenceConfig, device: torch.device,
                window: HUWindow = DEFAULT_WINDOW, oracle: np.ndarray | None = None
                ) -> tuple[list[RoundResult], float, torch.dtype]:
    """One timed run, engine set-up (weights to the device, BatchNorm folding) included."""
    sync(device)
    t0 = time.perf_counter()
    engine = RSTNEngine(models, config, device=device, window=window)
    rounds = list(engine.run(hu, oracle_mask=oracle))
    sync(device)
    return rounds, time.perf_counter() - t0, engine.dtype


def _workload(settings: BenchmarkSettings, report: dict, log: Log) -> _Workload:
    """The volume read as a user's file is read, the weights, and the resampling ``segment`` would do."""
    hu, truth, io_timings, geometry = _volume(settings, log)
    models, weights, model_spacing, window, package = _models(settings)
    report["weights"] = weights
    if package is not None:  # the round weights its runs take from model.json
        used = InferenceConfig().with_package_defaults(package)
        report["settings"].update(coarse_weight=used.coarse_weight, previous_weight=used.previous_weight)
    if settings.input:  # the report's volume is the file's, not the phantom default of --shape
        report["settings"]["shape"] = list(hu.shape)
    mapping = GridMapping.for_input(hu.shape, geometry.canonical_spacing, model_spacing, resample=settings.resample)
    if mapping.resampling is not None:
        t0 = time.perf_counter()
        input_shape = hu.shape
        hu = mapping.to_model(hu)
        truth = None if truth is None else mapping.truth_to_model(truth)
        io_timings["resample in"] = time.perf_counter() - t0
        report["resampled"] = {"input_shape": list(input_shape), "input_spacing": list(mapping.input_spacing),
                               "model_shape": list(hu.shape), "model_spacing": list(mapping.model_spacing)}
        log(f"resampled {input_shape} at {tuple(round(s, 3) for s in mapping.input_spacing)} mm to {hu.shape} at "
            f"{tuple(round(s, 3) for s in mapping.model_spacing)} mm in {io_timings['resample in']:.2f} s")
    oracle = truth if not settings.model else None
    return _Workload(hu=hu, truth=truth, models=models, window=window, mapping=mapping, geometry=geometry,
                     io_timings=io_timings, oracle=oracle, package=package)


def _time_engine(settings: BenchmarkSettings, work: _Workload, device: torch.device, log: Log
                 ) -> tuple[Runs, torch.dtype]:
    """Warm-up on a short slab, then ``repeats`` timed runs."""
    warm = InferenceConfig(thr=settings.thr, max_iter=1, precision=settings.precision, views=tuple(work.models))
    _run_engine(work.models, work.hu[:, :, :8], warm, device, work.window,
                oracle=None if work.oracle is None else work.oracle[:, :, :8])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    config = InferenceConfig(thr=settings.thr, max_iter=settings.max_iter, precision=settings.precision,
                             coarse_downsample=settings.coarse_downsample, views=tuple(work.models))
    if work.package is not None:
        config = config.with_package_defaults(work.package)
    runs: Runs = []
    dtype = torch.float32
    for i in range(settings.repeats):
        rounds, seconds, dtype = _run_engine(work.models, work.hu, config, device, work.window, oracle=work.oracle)
        runs.append((rounds, seconds))
        log(f"engine run {i + 1}/{settings.repeats}: {seconds:.2f} s, {len(rounds) - 1} fine rounds")
    return runs, dtype


def _engine_report(settings: BenchmarkSettings, work: _Workload, runs: Runs, dtype: torch.dtype,
                   device: torch.device, log: Log) -> dict:
    """End-to-end and per-stage times (medians over the runs), the coarse stage's TFLOP/s, peak memory."""
    rounds = runs[-1][0]
    t0 = time.perf_counter()
    back = GridRound(rounds[-1], work.mapping).canonical_mask  # the thresholded resampled probability, or the mask
    from_canonical(back.astype(np.uint8), work.geometry)
    write_back = time.perf_counter() - t0
    engine_seconds = median([s for _, s in runs])
    stages: dict[str, list[float]] = {}
    for rr, _ in runs:
        for r in rr:
            for k, v in r.seconds.items():
                stages.setdefault(f"round {r.index} {k}" if r.index else k, []).append(v)
    coarse_seconds = median([sum(r[0].seconds[f"coarse {v}"] for v in work.models) for r, _ in runs])
    coarse_tflop = coarse_gflop(work.models, work.hu.shape) / 1000 / settings.coarse_downsample**2
    peak = peak_tflops(device, dtype)
    engine = {
        "end_to_end_s": sum(work.io_timings.values()) + engine_seconds + write_back,
        "engine_s": engine_seconds,
        "stages_s": {**work.io_timings, **{k: median(v) for k, v in stages.items()},
                     ("resample out + write back" if work.mapping.resampling else "write back"): write_back},
        "fine_rounds": len(rounds) - 1,
        "stop_reason": rounds[-1].stop_reason,
        "dsc_history": [r.dsc_to_previous for r in rounds[1:]],
        "precision": str(dtype).replace("torch.", ""),
        "coarse_tflop": coarse_tflop,
        "coarse_tflops_per_s": coarse_tflop / coarse_seconds,
        "device_peak_tflops": peak,
        "coarse_fraction_of_peak": None if peak is None else coarse_tflop / coarse_seconds / peak,
        "peak_gpu_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "peak_host_gb_so_far": host_peak_gb(),
    }
    if work.truth is not None and settings.model:
        engine["dsc_to_truth"] = dice(rounds[-1].mask, work.truth)
    log(f"engine: median {engine_seconds:.2f} s; coarse {coarse_tflop / coarse_seconds:.2f} TFLOP/s")
    return engine


def _speedup(reference: dict, engine_runs: list[float], engine_seconds: float, log: Log) -> dict:
    """The reference loop's time over the engine's, and (sampled reference) its spread."""
    if not reference.get("seconds"):
        return {}
    out: dict = {"speedup": reference["seconds"] / engine_seconds}
    log(f"reference-style loop: {reference['seconds']:.2f} s ({reference['mode']}); speed-up x{out['speedup']:.1f}")
    if "seconds_min" in reference:
        spread = {"min": reference["seconds_min"] / max(engine_runs), "median": out["speedup"],
                  "max": reference["seconds_max"] / min(engine_runs)}
        out["speedup_spread"] = spread
        out["speedup_noisy"] = spread["max"] > 1.5 * spread["min"]
        if out["speedup_noisy"]:
            log(f"WARNING: the speed-up estimate is noisy (x{spread['min']:.2f} to x{spread['max']:.2f}): the "
                "machine is busy or the sample is small. Re-run on a quiet machine with --reference-sample 10, or "
                "--reference full.")
    return out


def run_benchmark(settings: BenchmarkSettings, log: Log = print) -> dict:
    """Every measurement of the benchmark, as one report (see ``format_markdown``)."""
    device = resolve_device(settings.device)
    report: dict = {"settings": asdict(settings), "device": device_description(device),
                    "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    if settings.input and not settings.model:
        raise RSTNError("Benchmarking a real CT needs its model (--model DIR): oracle crops need a phantom's labels.")
    work = _workload(settings, report, log)
    report["settings"]["backbone"] = next(iter(work.models.values())).config.backbone  # a package's own, if given
    runs, dtype = _time_engine(settings, work, device, log)
    report["engine"] = _engine_report(settings, work, runs, dtype, device, log)
    report["reference"] = _reference(settings, work, runs[-1][0], device, log)
    report.update(_speedup(report["reference"], [sec for _, sec in runs], report["engine"]["engine_s"], log))
    report["scaling"] = _scaling(settings, work.models, device, log)  # with volume length: coarse + 1 fine round
    if settings.training:
        size = settings.training_size or min(512, *settings.shape[:2])
        report["training"] = training_throughput(size, settings.training_steps, device, log)
    return report


def _reference(settings: BenchmarkSettings, work: _Workload, rounds: list[RoundResult], device: torch.device,
               log: Log) -> dict:
    """The reference-style loop's time on the same work: run in full when that is cheap (or asked), else
    sampled and extrapolated to the engine's triplets and crops."""
    mode = settings.reference
    if mode == "auto":
        # a full reference run costs about as many batch-1 passes as triplets + crops
        n_triplets = sum(work.hu.shape[VIEW_AXES[v]] for v in work.models)
        n_crops = sum(len(b) for r in rounds[1:] for b in r.crop_boxes.values())
        est = (n_triplets + n_crops) * coarse_gflop(work.models, (*work.hu.shape[:2], 1)) / 3 / 1000
        mode = "full" if (device.type == "cuda" or est < 2.0) else "sample"
    if mode == "off":
        return {"mode": "off"}
    if mode == "full":
        sync(device)
        t0 = time.perf_counter()
        masks = reference_segment(work.models, work.hu, thr=settings.thr, max_iter=settings.max_iter,
                                  device=str(device), oracle_mask=work.oracle, window=work.window)
        sync(device)
        seconds = time.perf_counter() - t0
        return {"mode": "full", "seconds": seconds, "fine_rounds": len(masks) - 1,
                "mask_dsc_vs_engine": dice(masks[-1], rounds[-1].mask), "peak_host_gb_so_far": host_peak_gb()}
    return _reference_sampled(settings.reference_sample, work, rounds, device, log)


def _sample_triplets(k: int, work: _Workload, rounds: list[RoundResult], device: torch.device
                     ) -> tuple[list[tuple[str, float]], list[float]]:
    """Batch-1 fp32 timings of ``k`` triplets per view and stage: (view, seconds) per coarse triplet, and
    seconds per pixel of each fine crop (sampled from the first fine round's boxes)."""
    image = torch.from_numpy(work.window.apply(work.hu))
    coarse_per, fine_per_pixel = [], []
    with torch.inference_mode():
        for view, model in work.models.items():
            img_v = image.movedim(VIEW_AXES[view], 0)
            model.to(device)
            for j in range(1, 1 + k):
                x = img_v[triplet_indices(torch.tensor([j]), img_v.shape[0])].to(device)
                sync(device)
                t0 = time.perf_counter()
                torch.sigmoid(model.coarse(x)).cpu()
                coarse_per.append((view, time.perf_counter() - t0))
            boxes = rounds[1].crop_boxes.get(view) if len(rounds) > 1 else None
            for row in [] if boxes is None else boxes[:: max(1, len(boxes) // k)][:k]:
                _, a0, a1, b0, b1 = (int(v) for v in row)
                x = img_v[triplet_indices(torch.tensor([1]), img_v.shape[0])][:, :, a0:a1, b0:b1].to(device)
                sync(device)
                t0 = time.perf_counter()
                torch.sigmoid(model.fine(x)).cpu()
                fine_per_pixel.append((time.perf_counter() - t0) / ((a1 - a0) * (b1 - b0)))
    return coarse_per, fine_per_pixel


def _reference_sampled(k: int, work: _Workload, rounds: list[RoundResult], device: torch.device, log: Log) -> dict:
    """Sampled triplet timings extrapolated to the engine's work (the spread from the fastest and slowest)."""
    coarse_per, fine_per_pixel = _sample_triplets(k, work, rounds, device)
    crop_pixels = sum(int(((b[:, 2] - b[:, 1]) * (b[:, 4] - b[:, 3])).sum())
                      for r in rounds[1:] for b in r.crop_boxes.values())

    def total(pick: Callable[[list[float]], float]) -> tuple[float, float]:
        """The loop's extrapolated (coarse, fine) seconds with each stage's samples summarised by ``pick``."""
        coarse = sum(pick([t for v, t in coarse_per if v == view]) * work.hu.shape[VIEW_AXES[view]]
                     for view in work.models)
        return coarse, (pick(fine_per_pixel) * crop_pixels if fine_per_pixel else 0.0)

    coarse_total, fine_total = total(median)
    low, high = sum(total(min)), sum(total(max))
    log(f"reference-style loop sampled: {k} triplets per view and stage, extrapolated "
        f"(min {low:.1f} s, median {coarse_total + fine_total:.1f} s, max {high:.1f} s)")
    return {"mode": f"sampled ({k} batch-1 triplets per view and stage, extrapolated to the engine's work)",
            "seconds": coarse_total + fine_total, "coarse_s": coarse_total, "fine_s": fine_total,
            "seconds_min": low, "seconds_max": high}


def _scaling(settings: BenchmarkSettings, models: dict[str, RSTN], device: torch.device, log: Log) -> list[dict]:
    """Engine time (coarse + one fine round) against the volume's length."""
    from ..phantom import make_phantom_canonical

    inplane = settings.scaling_inplane or settings.shape[0]
    out = []
    lengths = settings.scaling
    if lengths is None:
        slices = settings.shape[2]
        lengths = tuple(sorted({max(4, slices // 4), max(4, slices // 2), slices, 2 * slices}))
    for length in lengths:
        hu, labels = make_phantom_canonical(size=(inplane, inplane, length), seed=settings.seed + length)
        hu = np.ascontiguousarray(hu)
        config = InferenceConfig(max_iter=1, thr=settings.thr, precision=settings.precision,
                                 coarse_downsample=settings.coarse_downsample)
        _, seconds, _ = _run_engine(models, hu, config, device, oracle=None if settings.model else labels == 1)
        out.append({"length": length, "inplane": inplane, "seconds": seconds, "ms_per_slice": 1000 * seconds / length})
        log(f"scaling L={length}: {seconds:.2f} s ({1000 * seconds / length:.1f} ms per slice)")
    return out


def format_markdown(report: dict) -> str:
    """The rows docs/benchmarks.md records."""
    e = report["engine"]
    lines = [
        f"- device: {report['device']}; torch {report['torch']}; date {report['date']}; weights: {report['weights']}",
        f"- volume {tuple(report['settings']['shape'])}, backbone {report['settings']['backbone']}, "
        f"precision {e['precision']}, "
        f"coarse downsample x{report['settings']['coarse_downsample']}, "
        f"{e['fine_rounds']} fine rounds ({e['stop_reason']})",
        f"- **engine end to end: {e['end_to_end_s']:.2f} s** (engine {e['engine_s']:.2f} s, median of "
        f"{report['settings']['repeats']})",
        "- stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in e["stages_s"].items()),
        f"- coarse stage: {e['coarse_tflop']:.1f} TFLOP at {e['coarse_tflops_per_s']:.2f} TFLOP/s"
        + (f" ({100 * e['coarse_fraction_of_peak']:.0f} % of peak)" if e["coarse_fraction_of_peak"] else ""),
        f"- peak memory: host {e['peak_host_gb_so_far']:.2f} GB (process peak after the engine runs)"
        + (f", GPU {e['peak_gpu_gb']:.2f} GB" if e["peak_gpu_gb"] is not None else ""),
    ]
    res = report.get("resampled")
    if res:
        lines.insert(2, f"- resampled as segment does: {tuple(res['input_shape'])} at "
                        f"{'x'.join(f'{v:.3g}' for v in res['input_spacing'])} mm -> {tuple(res['model_shape'])} at "
                        f"{'x'.join(f'{v:.3g}' for v in res['model_spacing'])} mm (the model's spacing)")
    ref = report.get("reference", {})
    if ref.get("seconds"):
        agree = f", mask DSC vs engine {ref['mask_dsc_vs_engine']:.4f}" if "mask_dsc_vs_engine" in ref else ""
        lines.append(f"- reference-style loop: {ref['seconds']:.2f} s [{ref['mode']}]{agree}; "
                     f"**speed-up x{report['speedup']:.2f}**")
        spread = report.get("speedup_spread")
        if spread:
            lines.append(f"- speed-up spread (min / median / max): x{spread['min']:.2f} / x{spread['median']:.2f} / "
                         f"x{spread['max']:.2f}" + (" **(noisy)**" if report.get("speedup_noisy") else ""))
    if report.get("scaling"):
        lines.append("- scaling (coarse + 1 fine round): " + ", ".join(
            f"L={s['length']}: {s['seconds']:.2f} s ({s['ms_per_slice']:.1f} ms/slice)" for s in report["scaling"]))
    for t in report.get("training", []):
        lines.append(f"- training {t['backbone']} {t['size']}x{t['size']}: {t['samples_per_s']:.3f} samples/s")
    return "\n".join(lines)
