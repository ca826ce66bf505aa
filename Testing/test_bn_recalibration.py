"""BatchNorm recalibration: running stats become the average of the per-sample batch statistics, nothing but BN
buffers changes, it is deterministic, and the trainer applies / skips / records it as configured. Tiny models."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from PancreasRSTNLib.models.model import RSTN, RSTNConfig
from PancreasRSTNLib.training.bn_recalibration import (
    batchnorm_layers,
    has_batchnorm,
    recalibrate_batchnorm,
    recalibrate_view,
    recalibration_samples,
)
from PancreasRSTNLib.training.trainer import TrainConfig, phantom_cases, train, train_view
from PancreasRSTNLib.training.training_data import bounding_box

TINY = {"widths": (4, 8)}
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def cases():
    return phantom_cases((40, 40, 20), first_seed=21, count=2)[0]


def _model(seed: int = 0) -> RSTN:
    torch.manual_seed(seed)
    model = RSTN(RSTNConfig(backbone="light", backbone_kwargs=TINY))
    with torch.no_grad():  # stale, training-like running stats, and a coarse net that predicts something
        for m in batchnorm_layers(model):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
        model.coarse_model.head.bias.fill_(0.3)
    return model


def _samples(n: int = 5, h: int = 40, w: int = 32):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        y = torch.zeros(1, 3, h, w)
        y[..., 10:20, 8:18] = 1
        out.append((torch.rand(1, 3, h, w, generator=g), y))
    return out


def _batch_stats(inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Average over calls of each call's per-channel mean and unbiased variance (what batch-1 training used)."""
    means = torch.stack([t.mean(dim=(0, 2, 3)) for t in inputs])
    vars_ = torch.stack([t.var(dim=(0, 2, 3), unbiased=True) for t in inputs])
    return means.mean(0), vars_.mean(0)


def _record_inputs(layers) -> tuple[dict, list]:
    seen: dict = {m: [] for m in layers}
    handles = [m.register_forward_pre_hook(lambda mod, inp: seen[mod].append(inp[0].detach().clone())) for m in layers]
    return seen, handles


def test_coarse_running_stats_equal_the_batch_statistics_of_the_samples():
    model = _model()
    samples = _samples()
    # independent expectation: a copy with its coarse BatchNorms in train mode, fed each full triplet once
    ref = copy.deepcopy(model).eval()
    ref_bn = batchnorm_layers(ref.coarse_model)
    seen, handles = _record_inputs(ref_bn)
    for m in ref_bn:
        m.train()
    with torch.no_grad():
        for x, _ in samples:
            ref.coarse(x)
    for h in handles:
        h.remove()
    model.eval()
    model.fine_model.train()  # a mix of modes, restored afterwards
    modes = [m.training for m in model.modules()]
    info = recalibrate_batchnorm(model, samples)
    assert info["applied"] and info["samples"] == len(samples)
    for m, r in zip(batchnorm_layers(model.coarse_model), ref_bn, strict=True):
        mean, var = _batch_stats(seen[r])
        torch.testing.assert_close(m.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.running_var, var, rtol=1e-5, atol=1e-6)
        assert int(m.num_batches_tracked) == len(samples)
        assert m.momentum == 0.1  # restored
    assert [m.training for m in model.modules()] == modes  # modes restored


def test_fine_running_stats_use_inference_style_crops():
    model = _model()
    samples = _samples()
    fine_bn = batchnorm_layers(model.fine_model)
    seen, handles = _record_inputs(fine_bn)
    crops: list[tuple[int, ...]] = []
    model.fine_model.register_forward_hook(lambda m, i, o: crops.append(tuple(i[0].shape)))
    recalibrate_batchnorm(model, samples, rounds=1, margin=3)
    for h in handles:
        h.remove()
    assert len(crops) == len(samples)
    for m in fine_bn:
        mean, var = _batch_stats(seen[m])
        torch.testing.assert_close(m.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.running_var, var, rtol=1e-5, atol=1e-6)
        assert int(m.num_batches_tracked) == len(samples)
    # the crop is the box of the recalibrated coarse net's eval-mode prediction, with the margin
    with torch.no_grad():
        for (x, _), shape in zip(samples, crops, strict=True):
            box = bounding_box((torch.sigmoid(model.coarse(x))[0] >= 0.5).numpy(), (3,) * 4)
            if box is None:
                box = (7, 23, 5, 21)  # the label box 10:20 x 8:18 with margin 3
            assert shape[-2:] == (box[1] - box[0], box[3] - box[2])


def test_only_batchnorm_buffers_change_and_it_is_deterministic():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recalibrate_batchnorm(model, _samples(), rounds=2)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.rsplit(".", 1)[1] in BN_BUFFERS for k in changed)
    assert any(k.endswith("running_mean") and k.startswith("coarse_model.") for k in changed)
    assert any(k.endswith("running_mean") and k.startswith("fine_model.") for k in changed)
    assert all(p.grad is None for p in model.parameters())
    again = _model()
    recalibrate_batchnorm(again, lambda: iter(_samples()), rounds=2)  # a factory of fresh iterables works too
    assert all(torch.equal(after[k], v) for k, v in again.state_dict().items())


def test_no_batchnorm_is_a_no_op():
    model = RSTN(RSTNConfig(backbone="light", backbone_kwargs=TINY))
    for m in list(model.coarse_model.modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(m, child_name, torch.nn.Identity())
    model.fine_model = copy.deepcopy(model.coarse_model)
    assert not has_batchnorm(model)
    assert recalibrate_batchnorm(model, _samples())["applied"] is False


def test_recalibration_samples_are_seeded_training_slices(cases):
    a = list(recalibration_samples(cases, "Z", 4, seed=5))
    b = list(recalibration_samples(cases, "Z", 4, seed=5))
    assert len(a) == 4 and all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b, strict=True))
    assert all(x.shape == (1, 3, 40, 40) and lab.sum() > 0 for x, lab in a)
    assert len(list(recalibration_samples(cases, "Z", 0))) > 4  # 0: all of them
    info = recalibrate_view(_model(), cases, "Z", n=3)
    assert info["applied"] and info["samples"] == 3


def _cfg(**kw) -> TrainConfig:
    base = dict(views=("Z",), backbone="light", backbone_kwargs=TINY, schedule=(("S", 2), ("J", 2)),
                optimizer="sgd", lr=1e-3, log_every=1, seed=3, bn_recalibration_samples=4)
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_recalibrates_by_default_and_records_it(cases, tmp_path):
    on, s_on = train_view(cases, _cfg(), "Z", tmp_path / "on", progress=False)
    off, s_off = train_view(cases, _cfg(bn_recalibration=False), "Z", tmp_path / "off", progress=False)
    assert s_on["bn_recalibration"]["applied"] and s_on["bn_recalibration"]["samples"] == 4
    assert s_off["bn_recalibration"] == {"applied": False, "reason": "disabled"}
    a, b = on.state_dict(), off.state_dict()
    diff = {k for k in a if not torch.equal(a[k], b[k])}
    assert diff and all(k.rsplit(".", 1)[1] in BN_BUFFERS for k in diff)  # same weights, new BN stats
    # the final checkpoint holds the recalibrated model; the last one keeps training-time stats (for --resume)
    final = torch.load(tmp_path / "on" / "checkpoints" / "Z_final.pt", weights_only=True)["model"]
    last = torch.load(tmp_path / "on" / "checkpoints" / "Z_last.pt", weights_only=True)["model"]
    assert all(torch.equal(final[k], a[k]) for k in a)
    assert all(torch.equal(last[k], b[k]) for k in b)
    package = train(cases, _cfg(), tmp_path / "pkg", progress=False)
    meta = json.loads((package / "model.json").read_text())
    assert meta["training"]["config"]["bn_recalibration"] is None
    assert meta["training"]["views"][0]["bn_recalibration"]["applied"] is True


def test_cli_flags(tmp_path):
    from PancreasRSTNLib.app.cli import build_parser

    args = build_parser().parse_args(["train", "--phantoms", "1", "-o", str(tmp_path), "--no-bn-recalibration",
                                      "--bn-recalibration-samples", "7"])
    assert args.no_bn_recalibration and args.bn_recalibration_samples == 7
