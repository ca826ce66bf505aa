"""Spacing-aware inference: the canonical volume is resampled to the model's spacing and every result comes
back onto the exact input grid (probability thresholded after resampling, never a nearest-neighbour mask)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ROOT, demo_model_dir, rotation
from PancreasRSTNLib.engine.config import RunSettings
from PancreasRSTNLib.engine.inference import RoundResult, SaliencyMaps
from PancreasRSTNLib.engine.resampling import Resampling, needs_resampling
from PancreasRSTNLib.engine.segmentation import GridMapping, GridRound, canonical_hu, segment_image
from PancreasRSTNLib.evaluation.metrics import dice
from PancreasRSTNLib.io.model_package import load_model_package
from PancreasRSTNLib.phantom import make_phantom

MODEL_SPACING = (1.5, 1.5, 1.5)
FOV_MM = (170.0, 170.0, 110.0)  # around the phantom's pancreas: small enough for 0.57 mm pixels in a test
DIRECTIONS = {
    "identity": np.eye(3),
    "flipped": np.diag([-1.0, -1.0, 1.0]),
    "permuted-flipped": np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]),
    "oblique": rotation(2, 25) @ rotation(0, 10),
}
GRIDS = [(0.57, 1.0), (0.78, 2.0), (3.0, 5.0), (0.57, 5.0), (0.78, 1.0), (3.0, 2.0)]  # pixel, slice (mm)


def _phantom(pixel: float, slice_mm: float, direction: np.ndarray, seed: int = 11) -> tuple[sitk.Image, sitk.Image]:
    spacing = (pixel, pixel, slice_mm)
    size = tuple(max(8, int(round(f / s))) for f, s in zip(FOV_MM, spacing, strict=True))
    image, label = make_phantom(size, spacing=spacing, seed=seed)
    for im in (image, label):
        im.SetDirection(tuple(direction.reshape(-1)))
        im.SetOrigin((12.5, -40.0, 300.0))
    return image, label


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin()
            and a.GetDirection() == b.GetDirection())


def _round_from_truth(mapping: GridMapping, truth: np.ndarray, saliency: dict | None = None) -> GridRound:
    """What a perfect model would return on the model grid: the truth's resampled fraction as probability."""
    probability = mapping.resampling.to_model(truth.astype(np.float32), default=0.0)
    result = RoundResult(index=1, stage="fine", probability=probability, mask=probability >= 0.5,
                         saliency=saliency or {}, crop_boxes={}, dsc_to_previous=1.0, seconds={}, device="cpu")
    return GridRound(result, mapping)


@pytest.mark.parametrize("direction", list(DIRECTIONS), ids=list(DIRECTIONS))
@pytest.mark.parametrize("pixel,slice_mm", GRIDS, ids=[f"{p}mm-pixels-{s}mm-slices" for p, s in GRIDS])
def test_phantom_mask_survives_the_round_trip_on_the_exact_input_grid(pixel, slice_mm, direction):
    image, label = _phantom(pixel, slice_mm, DIRECTIONS[direction])
    hu, geometry = canonical_hu(image)
    truth, _ = canonical_hu(label)
    truth = truth == 1
    assert truth.any(), "the phantom's pancreas must lie inside the test field of view"
    mapping = GridMapping.for_input(hu.shape, geometry.canonical_spacing, MODEL_SPACING, geometry=geometry)
    assert mapping.resampling is not None
    assert np.allclose(mapping.model_spacing, MODEL_SPACING, rtol=0.05)
    grid_round = _round_from_truth(mapping, truth)
    mask = grid_round.mask_image(label_value=1)
    assert _same_grid(mask, image)
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert dice(sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(label) == 1) >= 0.95
    probability = grid_round.probability_image()
    assert _same_grid(probability, image) and probability.GetPixelID() == sitk.sitkFloat32
    assert grid_round.voxel_count == int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))


@pytest.mark.parametrize("direction", ["flipped", "oblique"])
def test_saliency_boxes_land_on_input_voxels(direction):
    image, label = _phantom(0.78, 2.0, DIRECTIONS[direction])
    hu, geometry = canonical_hu(image)
    truth = canonical_hu(label)[0] == 1
    mapping = GridMapping.for_input(hu.shape, geometry.canonical_spacing, MODEL_SPACING, geometry=geometry)
    offset, shape = (20, 30, 10), (25, 35, 12)
    channels = np.stack([np.full(shape, 1.0 + c, np.float32) for c in range(3)])
    grid_round = _round_from_truth(mapping, truth, {"Z": SaliencyMaps("Z", channels, offset)})
    images = grid_round.saliency_images("Z")
    assert len(images) == 3
    for c, sal in enumerate(images):
        assert sal.GetSpacing() == image.GetSpacing() and sal.GetDirection() == image.GetDirection()
        index = image.TransformPhysicalPointToContinuousIndex(sal.GetOrigin())
        assert np.allclose(index, np.round(index), atol=1e-4)  # on an input voxel
        values = sitk.GetArrayViewFromImage(sal)
        assert np.allclose(values, 1.0 + c, atol=1e-5)  # a constant box stays constant
    # the box covers the same physical region: its size in mm matches the model box's to within a voxel
    extent = np.array(images[0].GetSize()) * np.array(image.GetSpacing())
    model_extent = np.sort(np.array(shape) * np.array(mapping.model_spacing))
    assert np.allclose(np.sort(extent), model_extent, atol=2 * max(image.GetSpacing()) + 1.6)


def test_only_differences_over_ten_percent_resample():
    assert not needs_resampling((1.55, 1.45, 1.64), MODEL_SPACING)
    assert needs_resampling((1.5, 1.5, 1.7), MODEL_SPACING)
    assert not needs_resampling((0.7, 0.7, 5.0), None)  # a model without a recorded spacing: never
    mapping = GridMapping.for_input((40, 40, 20), (1.55, 1.45, 1.6), MODEL_SPACING)
    assert mapping.resampling is None and mapping.model_spacing == (1.55, 1.45, 1.6)
    assert GridMapping.for_input((40, 40, 20), (0.7, 0.7, 1.0), MODEL_SPACING, resample=False).resampling is None


def test_model_grid_covers_the_input_extent():
    r = Resampling.between((512, 512, 240), (0.859375, 0.859375, 1.0), MODEL_SPACING)
    assert r.model_shape == (293, 293, 160)
    extent_in = np.array(r.input_shape) * np.array(r.input_spacing)
    assert np.allclose(np.array(r.model_shape) * np.array(r.model_spacing), extent_in)


def test_segment_resamples_to_the_models_spacing_and_answers_on_the_input_grid():
    """The demo model (trained at 2.66 x 2.66 x 3 mm) on a phantom at 1.77 x 1.77 x 2 mm, end to end."""
    package = load_model_package(demo_model_dir())
    image, label = make_phantom((192, 192, 96), seed=20266)  # the demo's unseen phantom, at 1.5x resolution
    rounds = list(segment_image(image, package))
    last = rounds[-1]
    assert last.mapping.resampling is not None
    assert last.result.mask.shape == last.mapping.resampling.model_shape
    assert np.allclose(last.mapping.model_spacing, package.spacing, rtol=0.02)
    mask = last.mask_image()
    assert _same_grid(mask, image)
    assert dice(sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(label) == 1) > 0.8
    # --no-resample keeps the reference's behaviour: the model sees the input grid itself
    plain = next(iter(segment_image(image, package, RunSettings(resample=False))))
    assert plain.mapping.resampling is None and plain.result.mask.shape == (192, 192, 96)


def test_a_schema_1_package_is_migrated_and_not_resampled(tmp_path):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(demo_model_dir(), folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["schema_version"] = 1
    for key in ("spacing", "synthetic"):
        meta.pop(key)
    (folder / "model.json").write_text(json.dumps(meta))
    package = load_model_package(folder)
    assert package.metadata["schema_version"] == 2 and package.metadata["migrated_from_schema"] == 1
    assert package.spacing is None and package.metadata["synthetic"] is True  # phantom training data
    image, _ = make_phantom((64, 64, 32), seed=3)
    first = next(iter(segment_image(image, package)))
    assert first.mapping.resampling is None


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, SimpleITK as sitk, torch
    sys.path.insert(0, sys.argv[1])
    from helpers import tiny_models
    from PancreasRSTNLib.engine.config import InferenceConfig, RunSettings
    from PancreasRSTNLib.io.model_package import ModelPackage
    from PancreasRSTNLib.models.model import RSTNConfig
    from PancreasRSTNLib.engine.segmentation import segment_image

    torch.set_num_threads(2)
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    models = tiny_models(views="Z")
    meta = {"name": "tiny", "organ": {"name": "pancreas", "label_value": 1}, "spacing": [1.5, 1.5, 1.5]}
    package = ModelPackage(path=None, metadata=meta, config=RSTNConfig(), models=models)
    warm_array = np.full((12, 16, 16), -1000, np.int16)
    warm_array[:, 4:12, 4:12] = 40
    warm = sitk.GetImageFromArray(warm_array)
    warm.SetSpacing((0.57, 0.57, 1.0))
    for r in segment_image(warm, package, RunSettings(InferenceConfig(views=("Z",), max_iter=0))):
        r.mask_image()
    array = np.full((400, 768, 768), -1000, np.int16)  # k, j, i: 768 x 768 x 400 at 0.57 x 0.57 x 1 mm
    array[:, 100:668, 100:668] = 40
    image = sitk.GetImageFromArray(array)
    del array
    image.SetSpacing((0.57, 0.57, 1.0))
    before = rss()
    for r in segment_image(image, package, RunSettings(InferenceConfig(views=("Z",), max_iter=0))):
        mask = r.mask_image()
        grid = list(r.result.mask.shape)
    print(json.dumps({"before": before, "peak": rss(), "model_grid": grid, "mask_size": list(mask.GetSize())}))
""")


def test_memory_stays_bounded_for_a_768x768x400_ct():
    """A 768x768x400 CT at 0.57 mm: the run never holds a float32 copy of the input grid, let alone one per view
    (one would be 944 MB). The run's peak above the loaded image stays under that size."""
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(ROOT / "Testing")], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["mask_size"] == [768, 768, 400] and report["model_grid"] == [292, 292, 267]
    float32_input_grid = 768 * 768 * 400 * 4
    assert report["peak"] - report["before"] < float32_input_grid, report
