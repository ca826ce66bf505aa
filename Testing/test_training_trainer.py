"""The trainer: joint loss, modes (crop sources), optimiser groups, bit-exact resume, checkpoints, logs,
the C2F baseline and the CLI. Tiny light-backbone models on tiny phantoms, a few steps each."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.errors import OutputExistsError, RSTNError
from PancreasRSTNLib.io.model_package import load_model_package
from PancreasRSTNLib.models.model import RSTN, RSTNConfig
from PancreasRSTNLib.training.losses import soft_dsc_loss
from PancreasRSTNLib.training.trainer import (
    LRFactor,
    StepModule,
    TrainConfig,
    param_groups,
    phantom_cases,
    train,
    train_view,
)

TINY = {"widths": (4, 8)}


@pytest.fixture(scope="module")
def cases():
    return phantom_cases((40, 40, 20), first_seed=11, count=2)[0]


def _cfg(**kw) -> TrainConfig:
    base = dict(views=("Z",), backbone="light", backbone_kwargs=TINY, schedule=(("S", 3), ("I", 3), ("J", 4)),
                optimizer="sgd", lr=1e-3, T=2, log_every=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _fine_inputs(model: RSTN) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    model.fine_model.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    return shapes


def _example():
    torch.manual_seed(0)
    model = RSTN(RSTNConfig(backbone="light", backbone_kwargs=TINY))
    x = torch.rand(1, 3, 40, 48)
    y = torch.zeros(1, 3, 40, 48)
    y[..., 10:14, 20:30] = 1
    return model, x, y


def test_joint_loss_weights_in_mode_s():
    model, x, y = _example()
    step = StepModule(model, soft_dsc_loss, T=3)
    total, coarse, fine = step(x, y, "S", np.array([2, 2, 2, 2]))
    # in S every fine iteration sees the same raw crop: total = l0*Lc + 3*lt*Lf, l0 = 1/7, lt = 2/7
    assert total.item() == pytest.approx(coarse.item() / 7 + 3 * 2 / 7 * fine.item(), rel=1e-5)


def test_crop_sources_of_the_modes():
    model, x, y = _example()
    shapes = _fine_inputs(model)
    step = StepModule(model, soft_dsc_loss, T=1)
    margins = np.array([1, 2, 3, 4])
    step(x, y, "I", margins)  # label box 10:14 x 20:30 plus margins
    assert shapes[-1][-2:] == (4 + 3, 10 + 7)
    with torch.no_grad():  # coarse prediction everywhere -> J crops the whole slice
        model.coarse_model.head.bias.fill_(10.0)
    step(x, y, "J", margins)
    assert shapes[-1][-2:] == (40, 48)
    with torch.no_grad():  # empty prediction -> J falls back to the label box
        model.coarse_model.head.bias.fill_(-10.0)
    step(x, y, "J", margins)
    assert shapes[-1][-2:] == (7, 17)


def test_saliency_gets_gradient_in_i_but_not_in_s():
    model, x, y = _example()
    step = StepModule(model, soft_dsc_loss, T=1)
    step(x, y, "S", np.full(4, 2))[0].backward()
    assert model.saliency2.weight.grad is None or model.saliency2.weight.grad.abs().sum() == 0
    model.zero_grad()
    step(x, y, "I", np.full(4, 2))[0].backward()
    assert model.saliency2.weight.grad.abs().sum() > 0


def test_optimizer_groups_follow_the_reference():
    cfg = TrainConfig(backbone="fcn8s", lr=1e-4)
    model = RSTN(RSTNConfig())  # FCN-8s: the bilinear upsampling weights are frozen
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert groups["coarse_weight"]["lr"] == pytest.approx(1e-5) and groups["coarse_bias"]["lr"] == pytest.approx(2e-5)
    assert groups["fine_weight"]["lr"] == pytest.approx(1e-4) and groups["fine_bias"]["lr"] == pytest.approx(2e-4)
    assert groups["fine_weight"]["weight_decay"] == 5e-4 and groups["fine_bias"]["weight_decay"] == 0.0
    in_groups = {id(p) for g in groups.values() for p in g["params"]}
    assert id(model.coarse_model.upscore8.weight) not in in_groups
    assert id(model.fine_model.upscore2.weight) not in in_groups
    assert id(model.saliency1.weight) in {id(p) for p in groups["fine_weight"]["params"]}


def test_lr_schedule_j_decay_and_noisy_stage():
    cfg = _cfg(schedule=(("S", 2), ("I", 2), ("J", 6), ("N", 2)), j_decay_every=2, noisy_lr_factor=0.1)
    f = LRFactor(cfg)
    assert [f(s) for s in range(12)] == [1, 1, 1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.1, 0.1]


def test_resume_is_bit_exact(cases, tmp_path):
    cfg = _cfg(checkpoint_every=4)
    full, _ = train_view(cases, cfg, "Z", tmp_path / "full", progress=False)
    assert (tmp_path / "full" / "checkpoints" / "Z_step0000004.pt").exists()
    assert (tmp_path / "full" / "checkpoints" / "Z_final.pt").exists()
    _, part = train_view(cases, cfg, "Z", tmp_path / "split", progress=False, stop_after=5)
    assert part["final_step"] == 5 and not (tmp_path / "split" / "checkpoints" / "Z_final.pt").exists()
    torch.manual_seed(12345)  # a different global RNG state must not matter
    resumed, summary = train_view(cases, cfg, "Z", tmp_path / "split", resume=True, progress=False)
    assert summary["final_step"] == 10
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    fresh = RSTN(cfg.rstn_config()).state_dict()
    assert not torch.equal(fresh["fine_model.head.weight"], a["fine_model.head.weight"])  # it did train
    with open(tmp_path / "split" / "logs" / "train_log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(1, 11))  # the log has no duplicated or missing steps after the resume


def test_resume_is_bit_exact_with_augmentation_and_single_slice_cases(cases, tmp_path):
    """Augmentations draw from the step's own RNG, so resuming replays them; a one-slice case (a JPEG slice)
    trains view Z only."""
    from PancreasRSTNLib.training.augmentation import AugmentConfig
    from PancreasRSTNLib.training.trainer import TrainCase

    hu = np.full((40, 40, 1), -50, np.int16)
    hu[10:30, 10:30] = 60
    label = np.zeros((40, 40, 1), np.uint8)
    label[15:25, 18:26] = 1
    mixed = [*cases, TrainCase("slice", hu, label, views=("Z",))]
    cfg = _cfg(views=("Y", "Z"), checkpoint_every=4, augment=AugmentConfig(), hu_window=(0.0, 250.0))
    full, summary = train_view(mixed, cfg, "Z", tmp_path / "full", progress=False)
    _, part = train_view(mixed, cfg, "Z", tmp_path / "split", progress=False, stop_after=5)
    resumed, _ = train_view(mixed, cfg, "Z", tmp_path / "split", resume=True, progress=False)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    n_z = summary["samples"]
    _, y_summary = train_view(mixed, cfg, "Y", tmp_path / "y", progress=False, stop_after=1)
    assert n_z > 0 and y_summary["samples"] > 0
    from PancreasRSTNLib.training.training_data import labels_for_view, view_samples

    assert all(s.case < len(cases) for s in view_samples(labels_for_view(mixed, "Y"), "Y"))
    assert any(s.case == len(cases) for s in view_samples(labels_for_view(mixed, "Z"), "Z"))


def test_augmentation_is_seeded_and_keeps_labels_binary():
    from PancreasRSTNLib.training.augmentation import AugmentConfig, augment_triplet

    image = torch.full((3, 32, 40), 40.0)
    image[:, 8:24, 10:30] = 120.0
    label = torch.zeros(3, 32, 40)
    label[:, 12:20, 14:26] = 1
    cfg = AugmentConfig(probability=1.0)
    a = augment_triplet(image, label, np.random.default_rng([1, 2]), cfg)
    b = augment_triplet(image, label, np.random.default_rng([1, 2]), cfg)
    c = augment_triplet(image, label, np.random.default_rng([1, 3]), cfg)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert set(torch.unique(a[1]).tolist()) <= {0.0, 1.0} and 0.6 < a[1].sum() / label.sum() < 1.6
    assert a[0].shape == image.shape and torch.isfinite(a[0]).all()
    # with every range at zero it is the identity
    still = AugmentConfig(probability=0.0, scale=0.0, rotation_deg=0.0, shift_hu=0.0, contrast=0.0, noise_hu=0.0)
    same = augment_triplet(image, label, np.random.default_rng(0), still)
    assert torch.allclose(same[0], image) and torch.equal(same[1], label)


def test_fatty_organ_augmentation_darkens_only_the_organ():
    from PancreasRSTNLib.training.augmentation import AugmentConfig, augment_triplet

    image = torch.full((3, 32, 40), 40.0)
    label = torch.zeros(3, 32, 40)
    label[:, 10:22, 12:28] = 1
    fatty = AugmentConfig(probability=0.0, scale=0.0, rotation_deg=0.0, shift_hu=0.0, contrast=0.0, noise_hu=0.0,
                          fatty_organ_probability=1.0, fatty_organ_hu=120.0)
    out, out_label = augment_triplet(image, label, np.random.default_rng(5), fatty)
    drop = image - out
    assert torch.equal(out_label, label)
    assert 0 < drop[:, 14:18, 16:24].min() <= 120.0  # inside: lowered by one draw
    assert torch.allclose(drop[:, 14:18, 16:24], drop[0, 15, 20].expand(3, 4, 8))
    assert torch.equal(drop[:, :8], torch.zeros(3, 8, 40)) and torch.equal(drop[:, :, :10], torch.zeros(3, 32, 10))
    assert 0 < drop[0, 10, 20] < drop[0, 15, 20]  # the edge is softened, not a step a network could key on
    with pytest.raises(RSTNError):
        AugmentConfig(fatty_organ_probability=2.0)


def test_c2f_trains_fine_net_on_framed_3d_box(cases, tmp_path):
    from PancreasRSTNLib.training.step import c2f_boxes, framed_box

    label = cases[0].label
    rows = np.flatnonzero(label.any(axis=(1, 2)))
    cols = np.flatnonzero(label.any(axis=(0, 2)))
    box = c2f_boxes(cases[:1], "Z")[0]
    assert box == (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1)  # the 3-D box, projected on the axial plane
    framed = framed_box(box, np.array([10, 20, 15, 12]), (40, 40))
    assert framed == (max(rows[0] - 10, 0), min(rows[-1] + 21, 40), max(cols[0] - 15, 0), min(cols[-1] + 13, 40))
    # the fine net sees the raw image in the framed box; the saliency module gets no gradient
    model, x, y = _example()
    shapes = _fine_inputs(model)
    total, coarse, fine = StepModule(model, soft_dsc_loss, T=1)(x, y, "C2F", np.full(4, 20), (2, 30, 5, 41))
    assert shapes[-1][-2:] == (28, 36)
    assert total.item() == pytest.approx(coarse.item() + fine.item(), rel=1e-6)
    total.backward()
    assert model.saliency1.weight.grad is None
    cfg = _cfg(method="c2f", schedule=(("C2F", 4),), T=1)
    _, summary = train_view(cases[:1], cfg, "Z", tmp_path, progress=False)
    assert summary["final_step"] == 4
    with pytest.raises(RSTNError, match="C2F"):
        TrainConfig(method="c2f", schedule=(("J", 3),))


def test_train_writes_package_and_refuses_to_clobber(cases, tmp_path):
    cfg = _cfg(views=("X", "Z"), schedule=(("S", 2), ("J", 2)), optimizer="adamw")
    meta = {"name": "tiny", "organ": "pancreas", "training": {"data": {"source": "unit test"}}}
    package = train(cases, cfg, tmp_path, progress=False, package_metadata=meta)
    loaded = load_model_package(package)
    assert set(loaded.models) == {"X", "Z"}
    training = loaded.metadata["training"]
    assert training["data"]["source"] == "unit test" and training["config"]["optimizer"] == "adamw"
    assert training["cases"] == ["phantom_00011", "phantom_00012"]
    assert (tmp_path / "logs" / "train_log.csv").is_file()
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:  # an optional extra ([train], [test])
        assert (tmp_path / "logs" / "tensorboard").is_dir()
    assert json.loads((tmp_path / "train_config.json").read_text())["views"] == ["X", "Z"]
    with pytest.raises(OutputExistsError, match="--resume"):
        train(cases, cfg, tmp_path, progress=False, package_metadata=meta)
    # resume of a finished run reloads the final weights and re-writes the same package, its views' summaries too
    again = load_model_package(train(cases, cfg, tmp_path, resume=True, progress=False, package_metadata=meta))
    assert torch.equal(again.models["Z"].state_dict()["fine_model.head.weight"],
                       loaded.models["Z"].state_dict()["fine_model.head.weight"])
    assert [v["view"] for v in training["views"]] == ["X", "Z"] and all("coarse_check" in v for v in training["views"])
    assert again.metadata["training"]["views"] == training["views"]


def test_cli_train_on_phantoms(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--phantoms", "2", "--phantom-shape", "32x32x16", "-o", str(out), "--views", "Y",
            "--backbone", "light", "--widths", "4,8", "--steps", "S:2,I:1,J:2", "--noisy-steps", "1",
            "--optimizer", "adamw", "--T", "2", "--loss", "jaccard", "--no-progress"]
    assert main(args) == 0
    meta = load_model_package(out / "model").metadata
    assert "not for clinical images" in meta["description"]
    assert meta["training"]["config"]["schedule"] == [["S", 2], ["I", 1], ["J", 2], ["N", 1]]
    assert main(args) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(args[:-1] + ["--steps", "Q:3", "--overwrite", "--no-progress"]) == 1
    assert "Unknown training mode" in capsys.readouterr().err


def _jpeg_slices(folder, n=2, size=(40, 36)):
    """A tiny JPEG slice set: images/CASE-1SSS.jpg + masks/ (grey = HU clipped to [0, 255], as the NIH JPEGs)."""
    import SimpleITK as sitk

    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for k in range(n):
        grey = np.full(size, 0, np.uint8)
        grey[8:32, 6:30] = 60 + 20 * k
        mask = np.zeros(size, np.uint8)
        mask[14:22, 12:24] = 255
        sitk.WriteImage(sitk.GetImageFromArray(grey), str(folder / "images" / f"CASEA-10{k + 10}.jpg"))
        sitk.WriteImage(sitk.GetImageFromArray(mask), str(folder / "masks" / f"CASEA-10{k + 10}.jpg"))
    return folder


def test_cli_train_records_spacing_window_augmentation_and_axial_slices(tmp_path, capsys):
    import SimpleITK as sitk

    from PancreasRSTNLib.phantom import make_phantom

    data = tmp_path / "data"
    for i, seed in enumerate((5, 6)):
        image, label = make_phantom((48, 48, 16), seed=seed)
        (data / "images").mkdir(parents=True, exist_ok=True)
        (data / "labels").mkdir(exist_ok=True)
        sitk.WriteImage(image, str(data / "images" / f"case{i}.nii.gz"))
        sitk.WriteImage(label, str(data / "labels" / f"case{i}.nii.gz"))
    slices = _jpeg_slices(tmp_path / "jpeg")
    out = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--organ", "pancreas", "-o", str(out), "--views", "Z",
               "--backbone", "light", "--widths", "4,8", "--steps", "S:2,I:2,J:2", "--spacing", "9,9,14",
               "--hu-window", "0,250", "--augment", "--axial-slices", str(slices), "--slices-window=-1.4,257.4",
               "--no-progress", "--checkpoint-every", "0"])
    assert rc == 0
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["spacing"] == [9.0, 9.0, 14.0] and meta["hu_window"] == {"low": 0.0, "high": 250.0}
    config = meta["training"]["config"]
    assert config["augment"]["scale"] == 0.2 and config["spacing"] == [9.0, 9.0, 14.0]
    assert meta["training"]["data"]["axial_slices"]["slices"] == 2
    assert meta["training"]["cases"][-2:] == ["slice_CASEA-1010", "slice_CASEA-1011"]
    cached = np.load(out / "cache" / "case0" / "image.npy", mmap_mode="r")
    assert cached.shape == (38, 38, 14)  # 340 x 340 x 192 mm at 9 x 9 x 14 mm
    # a window below the slices' display window is refused before any training
    rc = main(["train", "--data", str(data), "-o", str(tmp_path / "run2"), "--views", "Z", "--backbone", "light",
               "--widths", "4,8", "--steps", "S:1", "--axial-slices", str(slices), "--slices-window=-1.4,257.4",
               "--no-progress"])
    assert rc == 1 and "below the JPEG slices' display window" in capsys.readouterr().err
    assert not (tmp_path / "run2" / "checkpoints").exists()


def test_an_organ_free_slice_trains_the_fine_stage_only_where_inference_would_run_it():
    model, x, _ = _example()
    empty = torch.zeros_like(x[:, :, :, :])
    shapes = _fine_inputs(model)
    step = StepModule(model, soft_dsc_loss, T=1)
    total, coarse, fine = step(x, empty, "I", np.array([5, 5, 5, 5]))  # no label box: no fine stage
    assert shapes == [] and torch.equal(total, step.w0 * coarse) and torch.equal(fine, coarse)
    for module in (model.coarse_model.head, model.fine_model.head):  # everything predicted: a J crop
        module.bias.data.fill_(5.0)
    step(x, empty, "J", np.array([5, 5, 5, 5]))
    assert shapes == [tuple(x.shape)]  # the crop of the (whole-slice) prediction, clamped to the slice


def test_a_collapsed_coarse_network_is_found_and_recorded(cases, tmp_path, caplog):
    """One of the default recipe's validation folds ended with a coarse net that marks nothing (largest probability
    0.45): the check finds such a net on organ slices of its own training data, and a training records the
    check in its summary (model.json) and warns."""
    from PancreasRSTNLib.training.collapse_check import coarse_check, organ_slices

    cfg = _cfg()
    torch.manual_seed(0)
    model = RSTN(RSTNConfig(backbone="light", backbone_kwargs=TINY))
    chosen = organ_slices(cases, "Z", count=5)
    assert len(chosen) == 5 and all(cases[i].label[:, :, j].any() for i, j in chosen)
    last = [m for m in model.coarse_model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.fill_(-30.0)  # a coarse net that says "no organ" everywhere
    dead = coarse_check(model, cases, cfg, "Z")
    assert dead["collapsed"] and dead["marked"] == 0 and dead["largest_probability"] < 0.5
    with torch.no_grad():
        last.bias.fill_(30.0)  # and one that marks everything (not collapsed: the fine stage has crops)
    assert not coarse_check(model, cases, cfg, "Z")["collapsed"]
    assert model.training  # the check leaves the model's mode as it was

    _, summary = train_view(cases, cfg, "Z", tmp_path, progress=False)
    check = summary["coarse_check"]
    assert check["organ_slices"] > 0 and 0.0 <= check["largest_probability"] <= 1.0
    assert check["collapsed"] == (check["marked"] == 0) == ("calibration" in check)
    assert ("the training collapsed" in caplog.text) == check["collapsed"]


class _IntensityBand(torch.nn.Module):
    """A real two-layer network whose logit is ``ceiling`` on pixels of the organ's intensities (lo..hi) and
    falls off outside them: a coarse network that ranks the organ first under a ceiling, as fold 3's did."""

    def __init__(self, lo: float, hi: float, ceiling: float) -> None:
        super().__init__()
        self.band = torch.nn.Conv2d(3, 6, 1)
        self.head = torch.nn.Conv2d(6, 3, 1)
        with torch.no_grad():
            self.band.weight.zero_()
            for c in range(3):
                self.band.weight[2 * c, c], self.band.bias[2 * c] = -1.0, lo  # relu(lo - x)
                self.band.weight[2 * c + 1, c], self.band.bias[2 * c + 1] = 1.0, -hi  # relu(x - hi)
            self.head.weight.zero_()
            for c in range(3):
                self.head.weight[c, 2 * c: 2 * c + 2] = -50.0
            self.head.bias.fill_(ceiling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.band(x)))


def test_a_collapsed_coarse_network_is_mended_by_an_offset_chosen_on_its_training_slices(cases, caplog):
    """Fold 3's collapsed coarse network still ranked the organ first, under a logit ceiling below 0: one offset,
    chosen on its training slices, gives it back its masks; a network no offset can help is left as it was."""
    from PancreasRSTNLib.training.collapse_check import check_and_mend

    organ = np.concatenate([np.asarray(c.image)[np.asarray(c.label) > 0] for c in cases])
    lo, hi = np.percentile(organ, [5, 95])
    model = RSTN(RSTNConfig(backbone="light", backbone_kwargs=TINY))
    model.coarse_model = _IntensityBand(float(lo), float(hi), ceiling=-2.0)
    check = check_and_mend(model, cases, _cfg(), "Z")
    mend, after = check["calibration"], check["after_calibration"]
    assert check["collapsed"] and check["largest_probability"] < 0.5
    assert mend["applied"] and mend["offset"] > 2.0 and mend["training_dsc_before"] == 0.0
    assert mend["training_dsc_after"] > 0.0  # the phantom's organ shares its intensities with other tissue
    assert not after["collapsed"] and after["marked"] > 0
    assert float(model.coarse_model.head.bias[0]) == pytest.approx(-2.0 + mend["offset"])
    assert "Mended: a logit offset of" in caplog.text

    hopeless = RSTN(RSTNConfig(backbone="light", backbone_kwargs=TINY))
    hopeless.coarse_model = _IntensityBand(float(lo), float(hi), ceiling=-30.0)  # beyond every offset tried
    check = check_and_mend(hopeless, cases, _cfg(), "Z")
    assert check["collapsed"] and not check["calibration"]["applied"] and "after_calibration" not in check
    assert float(hopeless.coarse_model.head.bias[0]) == -30.0
    assert "could not be mended" in caplog.text
