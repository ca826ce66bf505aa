"""The offline demo: the default real-CT model on a real CT shipped with the package, round by round.

The CT is the TotalSegmentator example (Apache-2.0, licence beside it in SampleData/): 3 mm, upper abdomen.
Its reference labels were made by a model (TotalSegmentator), not by an expert, so the DSC per round printed
here measures agreement with another model. ``--phantom`` keeps the first demo: an unseen synthetic phantom
and the synthetic demo model.

Why: one command that proves the whole pipeline works on a fresh machine, offline, in seconds on 2 CPU cores,
and shows what RSTN does on a real CT: the mask of every round, the saliency that steers it, the DSC.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from ..engine.config import RunSettings
from ..engine.inference import InferenceConfig
from ..errors import ModelPackageError, OutputExistsError
from ..io.geometry import to_canonical
from ..io.model_package import load_model_package
from ..io.outputs import json_text, write_text, write_volume
from ..organs import get_organ
from ..overlap import dice
from ..phantom import make_phantom
from ..progress import Mode, Progress

if TYPE_CHECKING:
    from ..engine.segmentation import GridRound

DEMO_MODEL_NAME = "PancreasRSTN-demo-phantom-light"
#: A seed the synthetic demo model never saw (it was trained on seeds 1000-1079).
DEFAULT_DEMO_SEED = 20266
SAMPLE_CT = "totalseg_ct_abdomen_3mm.nii.gz"
SAMPLE_LABELS = "totalseg_ct_abdomen_3mm_labels.nii.gz"
SAMPLE_PANCREAS_LABEL = 7
SUMMARY = "demo_summary.json"


def find_demo_model() -> Path:
    """The bundled synthetic demo model folder (for ``demo --phantom`` and tests)."""
    from ..io.user_models import bundled_models_dirs

    for root in bundled_models_dirs():
        candidate = root / DEMO_MODEL_NAME
        if (candidate / "model.json").is_file():
            return candidate
    raise ModelPackageError(
        f"The bundled demo model '{DEMO_MODEL_NAME}' was not found in Resources/Models. Reinstall PancreasRSTN "
        "(pip install .), or pass --model with a model folder."
    )


def find_sample_ct() -> tuple[Path, Path]:
    """The shipped sample CT and its label map (repository or installed SampleData/)."""
    from ..io.user_models import installed_data_dirs

    for root in installed_data_dirs("SampleData"):
        if (root / SAMPLE_CT).is_file() and (root / SAMPLE_LABELS).is_file():
            return root / SAMPLE_CT, root / SAMPLE_LABELS
    raise ModelPackageError(f"The sample CT {SAMPLE_CT} was not found in SampleData/. Reinstall PancreasRSTN "
                            "(pip install .), or run `pancreas-rstn demo --phantom`.")


@dataclass
class DemoResult:
    input: str
    model: str
    dsc: list[float] = field(default_factory=list)  # DSC to the reference, per round (0 = coarse)
    inter_round: list[float | None] = field(default_factory=list)
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    seed: int | None = None

    @property
    def final_dsc(self) -> float:
        return self.dsc[-1] if self.dsc else float("nan")


def check_output_folder(out: Path, overwrite: bool) -> bool:
    """Before any work: may the demo write to ``out``? True when ``out`` holds a previous demo's output (it is
    replaced: the README's command can be re-run); any other non-empty folder needs ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; the demo writes a folder. Choose another -o.")
    if not out.exists() or not any(out.iterdir()):
        return False
    if (out / SUMMARY).is_file():
        return True
    if not overwrite:
        raise OutputExistsError(f"{out} already exists, is not empty and is not a previous demo's output; choose "
                                "another -o or pass --overwrite (files of the same names are replaced).")
    return False


def save_round_figure(ct: np.ndarray, truth: np.ndarray | None, rounds: Sequence, dsc: Sequence[float],
                      path: Path, view: str = "Z", max_rounds: int = 6) -> Path:
    """Figure-5-style strip on the axial slice with the most organ (truth, else the final mask): the masks of
    the first rounds, and the saliency channels of ``view`` in the first fine round (canonical input grid)."""
    from ..evaluation.plots import round_figure

    reference = truth if truth is not None and truth.any() else rounds[-1].canonical_mask
    z = int(np.argmax(np.count_nonzero(reference, axis=(0, 1))))
    shown = list(rounds[:max_rounds])
    saliency, title = None, "no fine round ran"
    for r in rounds[1:]:
        found = r.canonical_saliency(view)
        if found is None:
            continue
        channels, offset = found
        full = np.zeros((3, *ct.shape[:2]), np.float32)
        if offset[2] <= z < offset[2] + channels.shape[3]:
            a, b = channels.shape[1:3]
            full[:, offset[0]:offset[0] + a, offset[1]:offset[1] + b] = channels[:, :, :, z - offset[2]]
        saliency, title = list(full), f"saliency of view {view}, round {r.index}, axial slice {z}"
        break
    titles = [f"round {r.index}: DSC {d:.3f}" for r, d in zip(shown, dsc, strict=False)]
    return round_figure(ct[:, :, z], None if truth is None else truth[:, :, z],
                        [r.canonical_mask[:, :, z] for r in shown], titles, saliency, title, path)


def _case(phantom: bool, seed: int, model_dir: str | Path | None, echo: Callable[[str], None]):
    """(image, reference labels as a bool image array source, description, model folder)."""
    from ..io.user_models import resolve_model

    if phantom:
        model_path = Path(model_dir) if model_dir else find_demo_model()
        from ..io.model_package import read_metadata

        data = (read_metadata(model_path).get("training") or {}).get("data") or {}
        size = tuple(data.get("shape") or (128, 128, 64))
        image, labels = make_phantom(size, seed=seed)
        echo(f"input: synthetic phantom, seed {seed} (unseen in training), size {image.GetSize()}, spacing "
             f"{tuple(round(s, 2) for s in image.GetSpacing())} mm; reference = the phantom's own pancreas label")
        return image, labels == 1, f"synthetic phantom (seed {seed})", model_path
    ct_path, labels_path = find_sample_ct()
    image = sitk.ReadImage(str(ct_path))
    labels = sitk.ReadImage(str(labels_path)) == SAMPLE_PANCREAS_LABEL
    echo(f"input: {ct_path.name}, a real upper-abdomen CT (TotalSegmentator example, Apache-2.0), size "
         f"{image.GetSize()}, spacing {tuple(round(s, 2) for s in image.GetSpacing())} mm")
    echo("       its reference pancreas label was made by a model (TotalSegmentator), not by an expert: the DSC "
         "below is agreement with that model")
    return image, labels, f"{ct_path.name} (TotalSegmentator example CT, Apache-2.0)", resolve_model(model_dir).path


# The options are the `demo` command's, one keyword each (commands/demo.py maps its arguments onto them).
def run_demo(out_dir: str | Path, *, phantom: bool = False, seed: int = DEFAULT_DEMO_SEED,  # noqa: PLR0913
             model_dir: str | Path | None = None, device: str = "cpu", overwrite: bool = False, thr: float = 0.99,
             max_iter: int | None = None, resample: bool = True, echo: Callable[[str], None] = print,
             progress: Mode = "quiet") -> DemoResult:
    """Run the demo and write its files to ``out_dir`` (all or nothing); returns the per-round DSC and timing.

    ``echo`` gets the result lines (every round's DSC); with ``progress`` 'quiet' only the final one. A bar
    shows the engine's progress on a terminal ('bar')."""
    from ..engine.segmentation import segment_image

    t0 = time.perf_counter()
    final_echo = echo
    if progress == "quiet":
        echo = _silent
    out = Path(out_dir)
    replaces_previous = check_output_folder(out, overwrite)
    image, truth_image, description, model_path = _case(phantom, seed, model_dir, echo)
    package = load_model_package(model_path, device="cpu")
    meta = package.metadata
    echo(f"model: {meta.get('name')} ({package.config.backbone} backbone, views {'/'.join(package.models)}) "
         f"from {model_path}")
    if package.warning:
        echo(f"       WARNING: {package.warning}")
    truth, _ = to_canonical(truth_image)
    truth = truth > 0
    ct_canonical, _ = to_canonical(image)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "rounds").mkdir(parents=True)
    try:
        write_volume(image, staging / "input_ct.nii.gz")  # to open beside the results (each file checked)
        write_volume(sitk.Cast(truth_image, sitk.sitkUInt8), staging / "reference_label.nii.gz")
        result = DemoResult(input=description, model=str(model_path), seed=seed if phantom else None)
        config = InferenceConfig(thr=thr, max_iter=max_iter, views=tuple(package.models), precision="fp32")
        rounds = []
        label_value = get_organ(package.organ).label_value  # the one rule (organs.py)
        bar = Progress(progress if progress == "bar" else "quiet")
        with bar:
            settings = RunSettings(config, device=device, resample=resample)
            _rounds(segment_image(image, package, settings, progress=bar.update),
                    rounds, truth, result, staging / "rounds", label_value,
                    (lambda m: bar.line(m, sys.stdout)) if progress == "bar" else echo)
        if not rounds:
            raise ModelPackageError("The engine returned no rounds; the model package may be broken.")
        last = rounds[-1]
        result.stop_reason = last.stop_reason
        write_volume(last.mask_image(label_value), staging / "segmentation.nii.gz")
        save_round_figure(ct_canonical, truth, rounds, result.dsc, staging / "demo_rounds.png")
        result.seconds = round(time.perf_counter() - t0, 2)
        summary = {"input": description, "model": meta.get("name"), "model_path": str(model_path),
                   "warning": package.warning, "reference": "phantom label" if phantom else
                   "model-made (TotalSegmentator), not expert", "dsc_per_round": result.dsc,
                   "inter_round_dsc": result.inter_round, "final_dsc": result.final_dsc,
                   "stop_reason": result.stop_reason, "seconds": result.seconds,
                   "resampled_to": None if last.mapping.resampling is None else list(last.mapping.model_spacing)}
        write_text(staging / SUMMARY, json_text(summary))
        _publish(staging, out, replaces_previous)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.files = sorted(str(p) for p in out.rglob("*") if p.is_file())
    final_echo(f"final DSC {result.final_dsc:.4f} after {len(result.dsc) - 1} fine round(s) ({result.stop_reason}); "
               f"{result.seconds:.1f} s in total. Files in {out}/ (figure: demo_rounds.png)")
    return result


def _silent(_message: str) -> None:
    return None


def _rounds(stream: Iterable[GridRound], rounds: list[GridRound], truth: np.ndarray, result: DemoResult,  # noqa: PLR0913
            folder: Path, label_value: int, echo: Callable[[str], None]) -> None:
    """Score, report and write every round as it arrives."""
    from .round_files import save_round

    for r in stream:
        if r.index == 0 and r.mapping.resampling is not None:
            echo("       resampled from " + "x".join(f"{s:.2f}" for s in r.mapping.input_spacing) + " mm to "
                 + "x".join(f"{s:.2f}" for s in r.mapping.model_spacing) + " mm (the model's spacing) and back")
        d = dice(r.canonical_mask, truth, empty=0.0)
        result.dsc.append(round(float(d), 4))
        result.inter_round.append(None if r.dsc_to_previous is None else round(float(r.dsc_to_previous), 4))
        name = "coarse" if r.index == 0 else f"fine {r.index}"
        inter = "" if r.dsc_to_previous is None else f", DSC to previous round {r.dsc_to_previous:.4f}"
        echo(f"round {r.index} ({name}): DSC vs reference {d:.4f}{inter}, {r.volume_ml:.1f} ml, "
             f"{sum(r.seconds.values()):.1f} s")
        save_round(r, folder, label_value, overwrite=True)
        rounds.append(r)


def _publish(staging: Path, out: Path, replaces_previous: bool) -> None:
    """Move the finished output into place: a previous demo folder is replaced as a whole, any other folder
    only gets the demo's files (replacing files of the same names, as --overwrite asked)."""
    if replaces_previous:
        shutil.rmtree(out)
    if not out.exists():
        os.replace(staging, out)
        return
    for item in staging.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(item, target)
    staging.rmdir()
