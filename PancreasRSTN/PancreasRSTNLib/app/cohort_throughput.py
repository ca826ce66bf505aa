"""Cohort throughput: cases per hour over a folder of phantoms, with and without reading the next case on a
worker thread while the current one runs (``cohort.run_cohort``'s prefetch).

Why a phantom folder: every case has the same size, so the two modes differ only in the overlap of reading and
computing. The phantoms are written as ``.nii.gz`` (gzip decoding is the expensive part of reading a CT)."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..devices import device_description, resolve_device
from ..engine.config import RunSettings
from ..engine.inference import InferenceConfig
from ..errors import RSTNError
from ..io.model_package import load_model_package
from ..io.user_models import list_models
from ..io.volume_io import read_image, write_image
from ..phantom import make_phantom
from .cohort import CohortRunOptions, collect_inputs, run_cohort


def _phantom_model() -> Path:
    """The bundled synthetic model: phantoms are what it was trained on."""
    found = [m.path for m in list_models(include_bundled=True) if m.synthetic and m.source != "user"]
    if not found:
        raise RSTNError("The bundled phantom model is missing from this install; pass --model.")
    return found[0]


def cohort_throughput(cases: int, shape_xyz: tuple[int, int, int], model: str | None = None, device: str = "auto",
                      max_iter: int = 10, repeats: int = 1, log: Callable[[str], None] = print) -> dict:
    """Segment ``cases`` phantoms with prefetch off and on (alternating, ``repeats`` times each); cases/hour."""
    package = load_model_package(model or _phantom_model())
    dev = resolve_device(device)
    config = InferenceConfig(max_iter=max_iter, views=package.views)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cts"
        folder.mkdir()
        for i in range(cases):
            write_image(make_phantom(size=shape_xyz, seed=9000 + i)[0], folder / f"phantom{i:03d}.nii.gz")
        t0 = time.perf_counter()
        read_image(folder / "phantom000.nii.gz")
        read_seconds = time.perf_counter() - t0
        inputs = collect_inputs(folder)
        seconds: dict[str, list[float]] = {"off": [], "on": []}
        for k in range(repeats):
            for mode in ("off", "on") if k % 2 == 0 else ("on", "off"):
                out = Path(tmp) / f"out-{mode}-{k}"
                options = CohortRunOptions(package, RunSettings(config, device=str(dev)), prefetch=mode == "on")
                result = run_cohort(inputs, out, options)
                if result.failed:
                    raise RuntimeError(f"{result.failed} phantom case(s) failed: {result.rows[0].error}")
                seconds[mode].append(result.seconds)
                log(f"prefetch {mode}: {cases} cases in {result.seconds:.1f} s "
                    f"({3600 * cases / result.seconds:.0f} cases/hour)")
    median = {mode: statistics.median(v) for mode, v in seconds.items()}
    return {
        "device": device_description(dev), "model": package.metadata.get("name"), "cases": cases,
        "shape_xyz": list(shape_xyz), "read_one_case_s": round(read_seconds, 3), "repeats": repeats,
        "seconds": seconds, "cases_per_hour": {mode: 3600 * cases / s for mode, s in median.items()},
        "prefetch_gain": median["off"] / median["on"],
    }


def format_cohort(report: dict) -> str:
    c = report["cases_per_hour"]
    return (f"- cohort of {report['cases']} phantoms {'x'.join(map(str, report['shape_xyz']))} ({report['model']}, "
            f"{report['device']}; reading one case {report['read_one_case_s']:.2f} s): **{c['on']:.0f} cases/hour "
            f"with prefetch**, {c['off']:.0f} without (x{report['prefetch_gain']:.2f}; median of "
            f"{report['repeats']})")
