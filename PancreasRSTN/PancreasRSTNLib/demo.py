"""The offline demo: make an unseen phantom, segment it with the bundled synthetic demo model, show every
round's DSC against the phantom's ground truth, and write the masks, saliency maps and a Figure-5-style PNG.

Why: one command that proves the whole pipeline works on a fresh machine, in about a minute on 2 CPU cores,
without downloading anything. The model is a *synthetic demo model*: it is not for clinical images.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import ModelPackageError, OutputExistsError
from .geometry import from_canonical, to_canonical
from .inference import InferenceConfig
from .metrics import dice
from .model_package import load_model_package
from .phantom import make_phantom

DEMO_MODEL_NAME = "PancreasRSTN-demo-phantom-light"
#: A seed the demo model never saw (it was trained on seeds 1000-1079).
DEFAULT_DEMO_SEED = 20266


def find_demo_model() -> Path:
    """The bundled demo model folder (repository or built-extension Resources/Models)."""
    from .user_models import bundled_models_dirs

    for root in bundled_models_dirs():
        candidate = root / DEMO_MODEL_NAME
        if (candidate / "model.json").is_file():
            return candidate
    raise ModelPackageError(
        f"The bundled demo model '{DEMO_MODEL_NAME}' was not found in Resources/Models. Reinstall PancreasRSTN "
        "from the repository (pip install -e .), or pass --model with a model folder."
    )


@dataclass
class DemoResult:
    seed: int
    dsc: list[float] = field(default_factory=list)  # DSC to the ground truth, per round (0 = coarse)
    inter_round: list[float | None] = field(default_factory=list)
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    stop_reason: str | None = None

    @property
    def final_dsc(self) -> float:
        return self.dsc[-1] if self.dsc else float("nan")


def _embed(channels: np.ndarray, offset, shape) -> np.ndarray:
    """(3, a, b, c) saliency box -> (a, b, c, 3) full canonical volume (0 outside the box)."""
    full = np.zeros(tuple(shape) + (3,), dtype=np.float32)
    a, b, c = channels.shape[1:]
    o = [int(v) for v in offset]
    full[o[0]:o[0] + a, o[1]:o[1] + b, o[2]:o[2] + c, :] = np.moveaxis(channels, 0, -1)
    return full


def _vector_image(full: np.ndarray, geometry) -> sitk.Image:
    """Canonical (a, b, c, 3) -> 3-component image on the input grid."""
    parts = [from_canonical(np.ascontiguousarray(full[..., k]), geometry) for k in range(full.shape[-1])]
    return sitk.Compose(parts)


def run_demo(out_dir: str | Path, seed: int = DEFAULT_DEMO_SEED, model_dir: str | Path | None = None,
             device: str = "cpu", overwrite: bool = False, figure_view: str = "Z", thr: float = 0.99,
             max_iter: int = 10, echo: Callable[[str], None] = print) -> DemoResult:
    """Run the demo and write its files to ``out_dir``; returns the per-round DSC and the timing."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} already exists and is not empty; choose another -o or pass --overwrite.")
    model_path = Path(model_dir) if model_dir else find_demo_model()
    package = load_model_package(model_path, device="cpu")
    meta = package.metadata
    data = (meta.get("training") or {}).get("data") or {}
    size = tuple(data.get("shape") or (128, 128, 64))
    echo(f"model: {meta.get('name')} ({package.config.backbone} backbone, views {'/'.join(package.models)})")
    if "not for clinical" in str(meta.get("description", "")).lower() or "phantom" in str(data.get("source", "")):
        echo("       synthetic demo model, trained on phantoms only: NOT for clinical images")
    image, truth_img = make_phantom(size, seed=seed)
    echo(f"phantom: seed {seed} (unseen in training), size {image.GetSize()}, "
         f"spacing {tuple(round(s, 2) for s in image.GetSpacing())} mm")
    truth, geometry = to_canonical(truth_img)
    truth = truth > 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "rounds").mkdir(exist_ok=True)
    result = DemoResult(seed=seed)

    def write(img: sitk.Image, name: str) -> None:
        path = out / name
        sitk.WriteImage(img, str(path), True)
        result.files.append(str(path))

    write(image, "phantom_ct.nii.gz")
    write(truth_img, "phantom_truth.nii.gz")

    from .segmentation import segment_image

    config = InferenceConfig(thr=thr, max_iter=max_iter, views=tuple(package.models), precision="fp32")
    figure_masks, titles, saliency_round = [], [], None
    z_slice = int(np.argmax(np.count_nonzero(truth, axis=(0, 1))))
    ct_canonical, _ = to_canonical(image)
    last = None
    for rnd in segment_image(image, package, config, device=device):
        r = rnd.result
        d = dice(r.mask, truth, empty=0.0)
        result.dsc.append(round(float(d), 4))
        result.inter_round.append(None if r.dsc_to_previous is None else round(float(r.dsc_to_previous), 4))
        name = "coarse" if r.index == 0 else f"fine {r.index}"
        inter = "" if r.dsc_to_previous is None else f", DSC to previous round {r.dsc_to_previous:.4f}"
        echo(f"round {r.index} ({name}): DSC vs ground truth {d:.4f}{inter}, {r.voxel_count} voxels, "
             f"{sum(r.seconds.values()):.1f} s")
        write(rnd.mask_image(), f"rounds/round_{r.index:02d}_mask.nii.gz")
        for view, maps in r.saliency.items():
            full = _embed(maps.channels, maps.offset, truth.shape)
            write(_vector_image(full, geometry), f"rounds/round_{r.index:02d}_saliency_{view}.nrrd")
            if view == figure_view and saliency_round is None:
                saliency_round = (r.index, full[:, :, z_slice, :])
        figure_masks.append(r.mask[:, :, z_slice])
        titles.append(f"round {r.index}: DSC {d:.3f}")
        last = rnd
    if last is None:
        raise ModelPackageError("The engine returned no rounds; the model package may be broken.")
    result.stop_reason = last.result.stop_reason
    write(last.mask_image(), "segmentation.nii.gz")

    from .plots import round_figure

    sal = None if saliency_round is None else [saliency_round[1][..., c] for c in range(3)]
    sal_title = ("no fine round ran" if saliency_round is None else
                 f"saliency of view {figure_view}, round {saliency_round[0]}, axial slice {z_slice}")
    fig = round_figure(ct_canonical[:, :, z_slice], truth[:, :, z_slice], figure_masks, titles, sal, sal_title,
                       out / "demo_rounds.png")
    result.files.append(str(fig))
    result.seconds = round(time.perf_counter() - t0, 2)
    summary = {"seed": seed, "model": str(model_path), "dsc_per_round": result.dsc,
               "inter_round_dsc": result.inter_round, "final_dsc": result.final_dsc,
               "stop_reason": result.stop_reason, "seconds": result.seconds,
               "note": "synthetic phantom and synthetic demo model; not for clinical images"}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    result.files.append(str(out / "demo_summary.json"))
    echo(f"final DSC {result.final_dsc:.4f} after {len(result.dsc) - 1} fine round(s) "
         f"({result.stop_reason}); {result.seconds:.1f} s in total. Files in {out}/ (figure: demo_rounds.png)")
    return result
