"""Groundwork for the Cai et al. method: PNet-MSA and the MICCAI 2017 CNN as RSTN-style backbones, and the
convolutional-LSTM slice refiner (forward / backward / bidirectional, optional window of previous slices)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import tiny_models
from PancreasRSTNLib.engine.inference import InferenceConfig, RSTNEngine
from PancreasRSTNLib.models.backbones import (
    available_backbones,
    backbone_gflops,
    build_backbone,
    count_parameters,
    fold_batch_norms,
)
from PancreasRSTNLib.models.cai_cnn import CaiMiccaiCNN
from PancreasRSTNLib.models.clstm import ConvLSTMCell, SliceRefiner, refine_canonical
from PancreasRSTNLib.models.model import RSTN, RSTNConfig
from PancreasRSTNLib.models.pnet_msa import PNetMSA

# ------------------------------------------------------------------ backbones


def test_backbones_registered_with_parameter_counts():
    assert {"pnet_msa", "cai_miccai"} <= set(available_backbones())
    pnet = build_backbone("pnet_msa")
    assert isinstance(pnet, PNetMSA)
    assert count_parameters(pnet) == 2_089_919 < 3_000_000  # the paper: fewer than 3 M
    # 64 channels in every conv and deconv layer (the output branches excepted)
    for m in pnet.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and m not in (*pnet.sides, pnet.fuse):
            assert m.out_channels == 64
    assert len(pnet.units) == 5 and len(pnet.sides) == 5
    cai = build_backbone("cai_miccai")
    assert isinstance(cai, CaiMiccaiCNN)
    assert count_parameters(cai) == 1_066_115
    assert count_parameters(build_backbone("cai_miccai", channels=128)) == 4_253_955
    # 5 scale blocks of 4 CBR blocks (conv, BatchNorm, ReLU)
    assert len(cai.blocks) == 5
    assert all(sum(isinstance(m, torch.nn.Conv2d) for m in b) == 4 for b in cai.blocks)
    with pytest.raises(ValueError, match="64 or 128"):
        CaiMiccaiCNN(channels=32)


@pytest.mark.parametrize("name", ["pnet_msa", "cai_miccai"])
def test_backbone_output_size_for_any_input_size(name):
    torch.manual_seed(0)
    net = build_backbone(name).eval()
    assert net.replicate_pad_multiple == 16  # the padding contract the engine uses for fine crops
    with torch.no_grad():
        for h, w in ((67, 91), (1, 1), (33, 17)):
            assert net(torch.rand(1, 3, h, w)).shape == (1, 3, h, w)
        assert net(torch.rand(3, 67, 91)[None]).shape == (1, 3, 67, 91)  # a 3 x 67 x 91 triplet


def test_pnet_msa_deep_supervision():
    torch.manual_seed(0)
    net = PNetMSA().train()
    fused, sides = net.forward_deep(torch.rand(2, 3, 40, 50))
    assert fused.shape == (2, 3, 40, 50) and len(sides) == 5
    assert all(s.shape == (2, 3, 40, 50) for s in sides)
    assert torch.allclose(fused, torch.stack(sides).mean(0), atol=1e-5)  # the fusion starts as the mean
    net.eval()
    x = torch.rand(1, 3, 35, 29)
    with torch.no_grad():
        assert torch.equal(net(x), net.forward_deep(x)[0])  # forward = the fused output


@pytest.mark.parametrize("name", ["pnet_msa", "cai_miccai"])
def test_backbone_batch_norms_fold(name):
    """The engine folds BatchNorm into the preceding conv for inference: every CBR block must allow it."""
    torch.manual_seed(0)
    net = build_backbone(name).eval()
    x = torch.rand(1, 3, 37, 45)
    with torch.no_grad():
        before = net(x)
        folded = fold_batch_norms(net)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        assert torch.allclose(folded(x), before, atol=1e-4)


@pytest.mark.parametrize("name", ["pnet_msa", "cai_miccai"])
def test_backbone_inside_rstn(name):
    model = RSTN(RSTNConfig(backbone=name)).eval()
    with torch.no_grad():
        prob = model(torch.rand(1, 3, 21, 26))
    assert prob.shape == (1, 3, 21, 26) and float(prob.min()) >= 0 and float(prob.max()) <= 1


def test_backbone_gflops_per_512_slice():
    pnet, cai = backbone_gflops("pnet_msa", 512, 512), backbone_gflops("cai_miccai", 512, 512)
    fcn = backbone_gflops("fcn8s", 512, 512)
    assert pnet > 0 and cai > 0, f"GFLOP per 512x512 slice: pnet_msa {pnet:.1f}, cai_miccai {cai:.1f}"
    assert max(pnet, cai) < fcn, f"pnet_msa {pnet:.1f}, cai_miccai {cai:.1f}, fcn8s {fcn:.1f} GFLOP"


# ------------------------------------------------------------------ CLSTM refiner


def test_convlstm_cell_parameter_count():
    cell = ConvLSTMCell(input_channels=1, hidden_channels=1, kernel_size=3)
    weights, biases = cell.gates.weight.numel(), cell.gates.bias.numel()
    assert weights == 4 * (1 + 1) * 3 * 3 == 72  # 4 gates x (1 input + 1 hidden) channels x 9
    assert biases == 4
    assert count_parameters(cell) == 76
    # the refiner: one cell per direction plus the 1x1 fusion (dirs weights + 1 bias)
    assert count_parameters(SliceRefiner("bi")) == 2 * 76 + 3 == 155
    assert count_parameters(SliceRefiner("forward", window=3)) == 76 + 2 == 78


@pytest.mark.parametrize("shape", [(7, 13, 11), (2, 7, 13, 11)])
@pytest.mark.parametrize("direction,window", [("bi", None), ("forward", None), ("forward", 3), ("backward", 2)])
def test_refiner_keeps_shape_and_range(shape, direction, window):
    torch.manual_seed(0)
    vol = torch.rand(shape)
    with torch.no_grad():
        out = SliceRefiner(direction, window)(vol)
    assert out.shape == vol.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def _perturbed(seed: int = 0, slices: int = 12, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    vol = torch.rand(2, slices, 9, 10)
    changed = vol.clone()
    changed[:, k] = torch.rand(2, 9, 10)
    return vol, changed


def _with_trained_like_weights(refiner: SliceRefiner) -> SliceRefiner:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in refiner.parameters():
            p.normal_(0, 1)
    return refiner.eval()


def test_forward_refiner_is_causal():
    k = 5
    vol, changed = _perturbed(k=k)
    refiner = _with_trained_like_weights(SliceRefiner("forward"))
    with torch.no_grad():
        a, b = refiner(vol), refiner(changed)
    assert torch.equal(a[:, :k], b[:, :k])  # bit-identical before slice k
    for t in range(k, vol.shape[1]):
        assert not torch.equal(a[:, t], b[:, t]), t


def test_backward_refiner_is_anticausal():
    k = 6
    vol, changed = _perturbed(k=k)
    refiner = _with_trained_like_weights(SliceRefiner("backward"))
    with torch.no_grad():
        a, b = refiner(vol), refiner(changed)
    assert torch.equal(a[:, k + 1 :], b[:, k + 1 :])  # bit-identical after slice k
    for t in range(k + 1):
        assert not torch.equal(a[:, t], b[:, t]), t


def test_bidirectional_refiner_sees_both_sides():
    k = 5
    vol, changed = _perturbed(k=k)
    refiner = _with_trained_like_weights(SliceRefiner("bi"))
    with torch.no_grad():
        a, b = refiner(vol), refiner(changed)
    for t in range(vol.shape[1]):
        assert not torch.equal(a[:, t], b[:, t]), t


def test_windowed_forward_refiner_sees_three_previous_slices_only():
    k = 3
    vol, changed = _perturbed(k=k)
    refiner = _with_trained_like_weights(SliceRefiner("forward", window=3))
    with torch.no_grad():
        a, b = refiner(vol), refiner(changed)
    assert torch.equal(a[:, :k], b[:, :k])
    for t in range(k, k + 4):  # slices k .. k+3 see slice k
        assert not torch.equal(a[:, t], b[:, t]), t
    assert torch.equal(a[:, k + 4 :], b[:, k + 4 :])  # slice k+4 sees k+1 .. k+4 only


def test_windowed_refiner_matches_a_fresh_run_over_the_window():
    torch.manual_seed(0)
    vol = torch.rand(9, 8, 7)
    refiner = _with_trained_like_weights(SliceRefiner("forward", window=3))
    with torch.no_grad():
        out = refiner(vol)
        for t in range(vol.shape[0]):
            state = None
            for u in range(max(0, t - 3), t + 1):
                state = refiner.forward_cell(vol[u][None, None], state)
            logit = torch.logit(vol[t].clamp(1e-4, 1 - 1e-4))
            assert torch.allclose(torch.sigmoid(logit + refiner.fuse(state[0])[0, 0]), out[t], atol=1e-6), t


def test_untrained_refiner_returns_its_input():
    """The fusion starts at zero: a refiner adds a correction to the input's logit, nothing before it learns one."""
    torch.manual_seed(0)
    vol = torch.rand(6, 9, 8).clamp(1e-3, 1 - 1e-3)
    for direction in ("bi", "forward"):
        with torch.no_grad():
            out = SliceRefiner(direction)(vol)
        assert torch.allclose(out, vol, atol=1e-5)


def test_refiner_rejects_bad_arguments():
    with pytest.raises(ValueError, match="direction"):
        SliceRefiner("sideways")
    with pytest.raises(ValueError, match="Window"):
        SliceRefiner("forward", window=0)
    with pytest.raises(ValueError, match="slices"):
        SliceRefiner()(torch.rand(4, 4))


def test_refiner_on_an_rstn_probability_volume():
    """The engine's RoundResult.probability is canonical (rows, cols, slices): the axial slice axis is the last."""
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 40, size=(24, 20, 12)).astype(np.float32)
    engine = RSTNEngine(tiny_models(), InferenceConfig(max_iter=1), device="cpu")
    first = next(iter(engine.run(hu)))
    prob = first.probability
    assert prob.shape == hu.shape
    refiner = SliceRefiner("bi").eval()
    refined = refine_canonical(refiner, prob)
    assert refined.shape == prob.shape and refined.dtype == np.float32
    assert refined.min() >= 0 and refined.max() <= 1
    with torch.no_grad():  # the same as moving the slice axis first by hand
        direct = refiner(torch.from_numpy(np.ascontiguousarray(prob.transpose(2, 0, 1)))).numpy()
    np.testing.assert_array_equal(refined, direct.transpose(1, 2, 0))
    # causality along the canonical slice axis: a forward refiner ignores later slices
    fwd = _with_trained_like_weights(SliceRefiner("forward"))
    changed = prob.copy()
    changed[:, :, 8] = 1 - changed[:, :, 8]
    a, b = refine_canonical(fwd, prob), refine_canonical(fwd, changed)
    np.testing.assert_array_equal(a[:, :, :8], b[:, :, :8])
    assert not np.array_equal(a[:, :, 8:], b[:, :, 8:])
