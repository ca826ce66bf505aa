"""A person steers the run: a prior in place of the coarse round, a region of interest, on resampled grids and
through ``segment --prior/--roi``, with every refusal made before any work and nothing written on a refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ct_image, demo_model_dir, rotation
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.engine.cai_inference import RefinedEngine
from PancreasRSTNLib.engine.config import InferenceConfig, RunSettings
from PancreasRSTNLib.engine.guidance import Guidance, change_from_prior
from PancreasRSTNLib.engine.guidance_input import (
    box_from_markups,
    guidance_from_images,
    prior_from_image,
    roi_from_box,
)
from PancreasRSTNLib.engine.inference import RSTNEngine
from PancreasRSTNLib.engine.segmentation import prepare_ct, segment_canonical, segment_image
from PancreasRSTNLib.engine.slice_fill import fill_between_slices, has_gaps
from PancreasRSTNLib.errors import InputImageError, ModelPackageError, OptionsError
from PancreasRSTNLib.io.geometry import from_canonical, geometry_of, to_canonical
from PancreasRSTNLib.io.model_package import load_model_package
from PancreasRSTNLib.io.volume_io import write_image
from PancreasRSTNLib.models.clstm import RefinerConfig
from PancreasRSTNLib.overlap import dice
from PancreasRSTNLib.phantom import make_phantom, make_phantom_canonical


def _rough(truth: np.ndarray, shift: int = 3) -> np.ndarray:
    """The truth shifted by a few voxels: a person's rough mask."""
    return np.roll(truth, shift, axis=0)


# ------------------------------------------------------------------------------------------------ engine
def test_the_prior_takes_the_coarse_rounds_place_and_the_fine_rounds_refine_it(demo, phantom):
    hu, truth = phantom
    prior = _rough(truth)
    engine = RSTNEngine(demo.models, InferenceConfig(max_iter=3), device="cpu")
    rounds = list(engine.run(hu, guidance=Guidance(prior=prior)))
    assert rounds[0].stage == "prior" and [r.stage for r in rounds[1:]] == ["fine"] * (len(rounds) - 1)
    assert np.array_equal(rounds[0].mask, prior) and np.array_equal(rounds[0].probability, prior.astype(np.float32))
    assert rounds[0].seconds == {} and len(rounds) >= 2
    assert rounds[1].dsc_to_previous == pytest.approx(dice(prior, rounds[1].mask))
    assert dice(rounds[-1].mask, truth) > dice(prior, truth)  # the demo model pulls the shifted mask back


def test_a_probability_prior_is_used_as_the_previous_rounds_probability(demo, phantom):
    hu, truth = phantom
    soft = truth.astype(np.float32) * 0.8
    first = next(RSTNEngine(demo.models, InferenceConfig(max_iter=1), device="cpu").run(hu, guidance=Guidance(soft)))
    assert np.allclose(first.probability, soft) and np.array_equal(first.mask, truth)


def test_the_prior_weight_keeps_the_persons_say_in_every_fine_round(demo, phantom):
    hu, truth = phantom
    prior = _rough(truth)
    plain = list(RSTNEngine(demo.models, InferenceConfig(max_iter=1), device="cpu").run(
        hu, guidance=Guidance(prior)))
    weighted = list(RSTNEngine(demo.models, InferenceConfig(max_iter=1, prior_weight=0.4), device="cpu").run(
        hu, guidance=Guidance(prior)))
    expected = 0.6 * plain[1].probability + 0.4 * prior  # round 1 sees the same prior either way
    np.testing.assert_allclose(weighted[1].probability, expected, atol=1e-5)
    assert not np.array_equal(weighted[1].mask, plain[1].mask)
    with pytest.raises(OptionsError, match="prior_weight=1.0 is outside \\[0, 1\\)"):
        InferenceConfig(prior_weight=1.0).validate()


def test_a_model_records_its_validated_prior_weight(tmp_path):
    import shutil

    folder = shutil.copytree(demo_model_dir(), tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text())
    meta["inference"] = {"max_iter": 2, "prior_max_iter": 1, "prior_weight": 0.3}
    (folder / "model.json").write_text(json.dumps(meta))
    package = load_model_package(folder)
    assert package.prior_weight == 0.3 and package.prior_max_iter == 1
    hu, truth = make_phantom_canonical(size=(128, 128, 64), seed=1234)
    refined = list(segment_canonical(hu, package.spacing, package, RunSettings(InferenceConfig(thr=1.0)),
                                     guidance=Guidance(prior=truth == 1)))
    automatic = list(segment_canonical(hu, package.spacing, package, RunSettings(InferenceConfig(thr=1.0))))
    assert [r.stage for r in refined] == ["prior", "fine"] and len(automatic) == 3  # each its validated count
    assert InferenceConfig().with_model_defaults(package.max_iter, package.prior_weight).prior_weight == 0.3
    assert InferenceConfig(prior_weight=0.0).with_model_defaults(1, 0.3).prior_weight == 0.0  # asked: kept
    meta["inference"]["prior_weight"] = 1.5
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackageError, match="prior_weight"):
        load_model_package(folder)


def test_the_region_of_interest_limits_every_round_and_the_crops(demo, phantom):
    hu, truth = phantom
    lo = [int(np.flatnonzero(truth.any(axis=tuple(a for a in range(3) if a != k)))[0]) - 3 for k in range(3)]
    hi = [int(np.flatnonzero(truth.any(axis=tuple(a for a in range(3) if a != k)))[-1]) + 4 for k in range(3)]
    roi = np.zeros_like(truth)
    hi[2] -= (hi[2] - lo[2]) // 4
    roi[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True  # a box around three quarters of the organ
    engine = RSTNEngine(demo.models, InferenceConfig(max_iter=3), device="cpu")
    free = list(engine.run(hu))
    assert (free[0].mask & ~roi).any()  # without the region, the coarse round finds voxels outside it
    rounds = list(engine.run(hu, guidance=Guidance(roi=roi)))
    assert rounds[0].stage == "coarse" and len(rounds) >= 2
    assert rounds[0].mask.any()
    for r in rounds:
        assert not (r.mask & ~roi).any() and not (r.probability[~roi] > 0).any()
        for view, boxes in r.crop_boxes.items():  # (slice, a0, a1, b0, b1) in the view's axes
            axis = "XYZ".index(view)
            a_axis, b_axis = (a for a in range(3) if a != axis)
            m = engine.config.margin  # the region plus the fine net's context margin
            assert boxes[:, 0].min() >= lo[axis] - m and boxes[:, 0].max() < hi[axis] + m
            assert boxes[:, 1].min() >= lo[a_axis] - m and boxes[:, 2].max() <= hi[a_axis] + m
            assert boxes[:, 3].min() >= lo[b_axis] - m and boxes[:, 4].max() <= hi[b_axis] + m
    assert dice(rounds[-1].mask, truth & roi) > 0.5


def test_the_prior_and_the_region_combine(demo, phantom):
    hu, truth = phantom
    roi = np.ones_like(truth)
    roi[:, :, int(np.median(np.flatnonzero(truth.any(axis=(0, 1))))):] = False
    first = next(RSTNEngine(demo.models, InferenceConfig(max_iter=1), device="cpu").run(
        hu, guidance=Guidance(prior=truth, roi=roi)))
    assert np.array_equal(first.mask, truth & roi)


def test_guidance_is_refused_before_any_work(demo, phantom):
    hu, truth = phantom
    engine = RSTNEngine(demo.models, InferenceConfig(max_iter=1), device="cpu")
    cases = [
        (Guidance(prior=np.zeros_like(truth)), "The prior is empty"),
        (Guidance(prior=truth[:-1]), "Give a mask on the CT's own grid"),
        (Guidance(prior=np.full(truth.shape, 1.5, np.float32)), "outside \\[0, 1\\]"),
        (Guidance(roi=np.zeros_like(truth)), "misses the image"),
        (Guidance(prior=truth, roi=~truth), "wholly outside the region"),
    ]
    for guidance, message in cases:
        with pytest.raises(InputImageError, match=message):
            next(engine.run(hu, guidance=guidance))


def test_a_package_with_a_refiner_refines_the_prior_too(demo, phantom, tmp_path):
    """rstn+biclstm: the prior, RSTN's fine rounds from it, then the refiner's round."""
    hu, truth = phantom
    config = RefinerConfig("bi", None, "rstn")
    engine = RefinedEngine(RSTNEngine(demo.models, InferenceConfig(max_iter=2), device="cpu"), config.build())
    roi = np.ones_like(truth)
    roi[:, :, int(np.median(np.flatnonzero(truth.any(axis=(0, 1))))):] = False
    rounds = list(engine.run(hu, guidance=Guidance(prior=truth, roi=roi)))
    assert rounds[0].stage == "prior" and rounds[-1].stage == "refine"
    assert not any((r.mask & ~roi).any() for r in rounds)


# ------------------------------------------------------------------------------------------------ images
@pytest.fixture(scope="module")
def resampled_case(tmp_path_factory):
    """A phantom CT whose spacing differs from the demo model's (so the run resamples), stored flipped."""
    image, labels = make_phantom(size=(128, 128, 64), seed=4321)
    image.SetSpacing([s * 1.4 for s in image.GetSpacing()])
    labels.CopyInformation(image)
    return sitk.Flip(image, [True, False, True]), sitk.Flip(labels, [True, False, True])


def test_a_prior_comes_back_on_the_exact_input_grid_after_resampling(demo, resampled_case):
    image, labels = resampled_case
    ct = prepare_ct(image)
    prior = sitk.Cast(labels == 1, sitk.sitkUInt8)
    guidance = guidance_from_images(ct.geometry, prior)
    rounds = list(segment_image(ct, demo, RunSettings(config=InferenceConfig(max_iter=1)), guidance=guidance))
    assert rounds[0].mapping.resampling is not None  # the run did resample
    truth, _ = to_canonical(prior)
    assert rounds[0].stage == "prior" and rounds[0].canonical_mask.shape == truth.shape
    assert dice(rounds[0].canonical_mask, truth.astype(bool)) > 0.97  # round trip through the model grid
    mask = rounds[-1].mask_image()
    assert mask.GetSize() == image.GetSize() and np.allclose(mask.GetOrigin(), image.GetOrigin())
    assert np.allclose(mask.GetDirection(), image.GetDirection())


def test_sparse_contours_are_filled_between_slices():
    zz, yy, xx = np.mgrid[:40, :40, :40]
    ball = (zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 14 ** 2  # canonical: slices along the last axis
    sparse = np.zeros_like(ball)
    sparse[:, :, ::5] = ball[:, :, ::5]
    assert has_gaps(sparse) and not has_gaps(ball)
    filled, report = fill_between_slices(sparse, (1.0, 1.0, 1.0))
    assert report == {"contoured_slices": 5, "filled_slices": 16}  # slices 10, 15, ..., 30
    assert np.array_equal(filled[:, :, ::5], sparse[:, :, ::5])  # drawn slices kept as drawn
    assert dice(filled[:, :, 10:31], ball[:, :, 10:31]) > 0.95
    assert not filled[:, :, 31:].any() and not filled[:, :, :10].any()  # nothing outside the contoured range


def test_prior_images_are_checked_against_the_ct(tmp_path):
    image = ct_image()
    geometry = geometry_of(image)
    labels = np.zeros(image.GetSize()[::-1], np.uint8)
    labels[4:8, 5:12, 6:15] = 2
    labels[9:11, 5:12, 6:15] = 3
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    with pytest.raises(OptionsError, match="several labels \\(2, 3\\).*--prior-label"):
        prior_from_image(label_image, geometry)
    with pytest.raises(OptionsError, match="--prior-label 5 is not in the prior \\(it holds 2, 3\\)"):
        prior_from_image(label_image, geometry, label=5)
    prior, report, _ = prior_from_image(label_image, geometry, label=3)
    assert report["label"] == 3 and report["voxels"] == 2 * 7 * 9
    moved = sitk.Image(label_image)
    moved.SetOrigin([o + 5 for o in image.GetOrigin()])
    moved.SetSpacing([s * 2 for s in image.GetSpacing()])
    with pytest.raises(InputImageError, match="another grid than the CT: spacing \\(1.8, 1.8, 5.0\\) vs the CT.s "
                                              "\\(0.9, 0.9, 2.5\\) mm; origin"):
        prior_from_image(moved, geometry, label=3)
    empty = sitk.Image(label_image) * 0
    with pytest.raises(InputImageError, match="The prior is empty"):
        prior_from_image(empty, geometry)
    probability = sitk.Cast(label_image, sitk.sitkFloat32) * 0.7
    with pytest.raises(InputImageError, match="neither labels nor probabilities"):
        prior_from_image(probability, geometry)
    probability = sitk.Cast(label_image == 2, sitk.sitkFloat32) * 0.75
    prior, report, drawn = prior_from_image(probability, geometry)
    assert report["kind"] == "probability map" and drawn is None and prior.max() == pytest.approx(0.75)


def test_a_sparse_priors_drawn_slices_are_kept_as_drawn_in_every_round(demo, resampled_case):
    """Contours on every 5th axial slice, on a grid the run resamples: each round's mask and probability hold
    the person's contours exactly on those slices (the fine net at the model's spacing would re-draw them), and
    the rest of the volume is the model's."""
    image, labels = resampled_case
    ct = prepare_ct(image)
    truth = to_canonical(sitk.Cast(labels == 1, sitk.sitkUInt8))[0].astype(bool)
    drawn_at = np.flatnonzero(truth.any(axis=(0, 1)))[::5]
    sparse = np.zeros_like(truth)
    sparse[:, :, drawn_at] = np.roll(truth, 2, axis=0)[:, :, drawn_at]  # rough contours, a little off
    guidance = guidance_from_images(ct.geometry, from_canonical(sparse.astype(np.uint8), ct.geometry))
    assert guidance.report["prior"]["drawn_slices_kept"] == len(drawn_at)
    rounds = list(segment_image(ct, demo, RunSettings(config=InferenceConfig(max_iter=2, thr=1.0)),
                                guidance=guidance))
    assert rounds[0].mapping.resampling is not None and [r.stage for r in rounds] == ["prior", "fine", "fine"]
    for r in rounds:
        assert np.array_equal(r.canonical_mask[:, :, drawn_at], sparse[:, :, drawn_at])
        assert np.array_equal(r.canonical_probability()[:, :, drawn_at], sparse[:, :, drawn_at].astype(np.float32))
    between = np.setdiff1d(np.arange(drawn_at[0], drawn_at[-1]), drawn_at)
    assert rounds[-1].canonical_mask[:, :, between].any()  # filled and refined between the drawn slices
    kept = to_canonical(rounds[-1].mask_image())[0][:, :, drawn_at] > 0  # and so in the image written out
    assert np.array_equal(kept, sparse[:, :, drawn_at])
    dense = guidance_from_images(ct.geometry, sitk.Cast(labels == 1, sitk.sitkUInt8))
    assert dense.drawn is None and "drawn_slices_kept" not in dense.report["prior"]  # a whole mask is refined
    holed = truth.copy()
    holed[:, :, drawn_at[1]] = False  # a whole mask that lost a slice (an eroded thin part): refined, not kept
    guided = guidance_from_images(ct.geometry, from_canonical(holed.astype(np.uint8), ct.geometry))
    assert guided.report["prior"]["filled_slices"] == 1 and guided.drawn is None


@pytest.mark.parametrize("oblique", [False, True])
def test_an_lps_box_selects_the_voxels_whose_centres_lie_inside(oblique):
    image = ct_image((30, 26, 14), direction=rotation(2, 25) @ rotation(0, 10) if oblique else None)
    box = (15.0, 31.0, -15.0, 2.0, 33.0, 50.0)
    roi = roi_from_box(box, geometry_of(image))
    expected = np.zeros(image.GetSize()[::-1], bool)
    for k, j, i in np.ndindex(*expected.shape):  # brute force through SimpleITK's own index -> LPS
        x, y, z = image.TransformIndexToPhysicalPoint((i, j, k))
        expected[k, j, i] = box[0] <= x <= box[1] and box[2] <= y <= box[3] and box[4] <= z <= box[5]
    canonical_expected, _ = to_canonical(_on(image, expected))
    assert roi.any() and np.array_equal(roi, canonical_expected.astype(bool))


def _on(image: sitk.Image, array_kji: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(array_kji.astype(np.uint8))
    out.CopyInformation(image)
    return out


def test_a_slicer_markups_roi_file_gives_its_lps_box(tmp_path):
    path = tmp_path / "R.mrk.json"
    path.write_text(json.dumps({"markups": [{"type": "ROI", "coordinateSystem": "RAS", "center": [10, 20, 30],
                                             "size": [4, 6, 8], "orientation": [1, 0, 0, 0, 1, 0, 0, 0, 1]}]}))
    assert box_from_markups(path) == pytest.approx((-12, -8, -23, -17, 26, 34))
    path.write_text("{not json")
    with pytest.raises(OptionsError, match="not a readable Slicer markups ROI file"):
        box_from_markups(path)


def test_change_from_prior_reports_dsc_and_volume_change():
    a = np.zeros((4, 4, 4), bool)
    a[:2] = True
    b = np.zeros_like(a)
    b[:3] = True
    dsc, change = change_from_prior(a, b, 0.5)
    assert dsc == pytest.approx(2 * 32 / (32 + 48)) and change == pytest.approx(8.0)


# ------------------------------------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def cli_case(tmp_path_factory):
    d = tmp_path_factory.mktemp("guided")
    image, labels = make_phantom(size=(128, 128, 64), seed=4321)
    rough = sitk.Cast(labels == 1, sitk.sitkUInt8)
    rough = sitk.Cast(sitk.BinaryDilate(rough, [2, 2, 2]), sitk.sitkUInt8) * 4  # a wide contour, label 4
    rough.CopyInformation(image)
    return write_image(image, d / "ct.nrrd"), write_image(labels, d / "labels.nrrd"), write_image(rough, d / "p.nrrd")


def test_segment_prior_refines_a_persons_mask(tmp_path, cli_case, capsys):
    ct, labels, rough = cli_case
    out = tmp_path / "refined.nii.gz"
    assert main(["segment", str(ct), "-o", str(out), "--model", str(demo_model_dir()), "--prior", str(rough),
                 "--max-iter", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prior"]["label"] == 4 and summary["prior"]["file"] == str(rough)
    assert summary["rounds"][0]["stage"] == "prior" and summary["rounds"][0]["dsc_to_prior"] == 1.0
    assert all("volume_change_ml" in r for r in summary["rounds"])
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(labels))) == 1
    before = dice(sitk.GetArrayFromImage(sitk.ReadImage(str(rough))) > 0, truth)
    after = dice(sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0, truth)
    assert after > before  # the demo model tightens the wide contour


def test_segment_roi_keeps_the_result_inside(tmp_path, cli_case, capsys):
    ct, labels, _ = cli_case
    image = sitk.ReadImage(str(ct))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(labels))) == 1
    k = np.flatnonzero(lab.any(axis=(1, 2)))
    z_cut = image.TransformIndexToPhysicalPoint((0, 0, int(k[0] + 3 * (k[-1] - k[0]) // 4)))[2]
    far = 1e4
    out = tmp_path / "roi.nii.gz"
    assert main(["segment", str(ct), "-o", str(out), "--model", str(demo_model_dir()), "--max-iter", "2",
                 f"--roi=-{far},{far},-{far},{far},-{far},{z_cut}", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["roi"]["kind"] == "box" and summary["rounds"][0]["stage"] == "coarse"
    result = sitk.ReadImage(str(out))
    array = sitk.GetArrayFromImage(result)
    kept = np.flatnonzero(array.any(axis=(1, 2)))
    assert len(kept) and all(result.TransformIndexToPhysicalPoint((0, 0, int(s)))[2] <= z_cut for s in kept)


@pytest.mark.parametrize("extra, message", [
    (["--prior-label", "2"], "--prior-label names a label of --prior"),
    (["--prior-weight", "0.3"], "--prior-weight weighs --prior in the fine rounds"),
    (["--prior", "missing.nii.gz"], "--prior missing.nii.gz: no such file"),
    (["--roi=1,2,3"], "neither x0,x1,y0,y1,z0,z1"),
    (["--roi=1,1,0,5,0,5"], "the box is flat"),
    (["--roi=9000,9100,0,10,0,10"], "misses the image"),
])
def test_segment_refuses_bad_guidance_and_writes_nothing(tmp_path, cli_case, capsys, extra, message):
    ct, _, _ = cli_case
    out = tmp_path / "o.nii.gz"
    assert main(["segment", str(ct), "-o", str(out), "--model", str(demo_model_dir()), *extra]) == 1
    assert message in capsys.readouterr().err and not out.exists() and not list(tmp_path.iterdir())


def test_segment_refuses_guidance_for_a_cohort(tmp_path, cli_case, capsys):
    ct, _, rough = cli_case
    out = tmp_path / "out"
    assert main(["segment", str(ct.parent), "-o", str(out), "--model", str(demo_model_dir()), "--prior",
                 str(rough)]) == 1
    assert "--prior and --roi steer one CT" in capsys.readouterr().err and not out.exists()


def test_segment_refuses_a_prior_on_another_grid(tmp_path, cli_case, capsys):
    ct, _, rough = cli_case
    other = sitk.ReadImage(str(rough))[:, :, 4:40]
    moved = write_image(other, tmp_path / "other.nrrd")
    out = tmp_path / "o.nii.gz"
    assert main(["segment", str(ct), "-o", str(out), "--model", str(demo_model_dir()), "--prior", str(moved)]) == 1
    err = capsys.readouterr().err
    assert "another grid than the CT: size 128x128x36 vs the CT's 128x128x64" in err and not out.exists()
    assert "np.float64" not in err


def test_segment_never_overwrites_the_prior(tmp_path, cli_case, capsys):
    ct, _, rough = cli_case
    before = rough.read_bytes()
    assert main(["segment", str(ct), "-o", str(rough), "--model", str(demo_model_dir()), "--prior", str(rough),
                 "--overwrite"]) == 1
    assert "--prior" in capsys.readouterr().err and rough.read_bytes() == before


def test_guidance_on_a_canonical_grid_round_trips_through_images():
    image = ct_image((20, 18, 10), direction=rotation(1, 180))
    ct = prepare_ct(image)
    prior = np.zeros(ct.geometry.canonical_shape, bool)
    prior[3:9, 4:10, 2:7] = True
    guidance = guidance_from_images(ct.geometry, from_canonical(prior, ct.geometry))
    assert np.array_equal(guidance.prior >= 0.5, prior)
