"""The batched iterative engine: streaming results, progress, cancel, saliency placement, and agreement with
the plain per-triplet batch-1 fp32 loop of the reference procedure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import tiny_models
from PancreasRSTNLib.engine.inference import InferenceConfig, RSTNEngine, cudnn_autotuning
from PancreasRSTNLib.engine.reference_loop import reference_segment
from PancreasRSTNLib.engine.triplets import accumulate_whole_slices, slice_weights
from PancreasRSTNLib.errors import ModelPackageError, OptionsError, RunCancelled
from PancreasRSTNLib.evaluation.metrics import dice
from PancreasRSTNLib.models.model import RSTN, RSTNConfig
from PancreasRSTNLib.phantom import make_phantom_canonical


def test_engine_matches_reference_loop(demo, phantom):
    """Same weights, same volume: the batched engine's final mask equals the batch-1 fp32 loop's."""
    hu, truth = phantom
    ref_masks = reference_segment(demo.models, hu, thr=0.99, max_iter=4)
    default = list(RSTNEngine(demo.models, InferenceConfig(max_iter=4, batch_size=8), device="cpu").run(hu))
    assert len(ref_masks) >= 2 and ref_masks[-1].any()
    assert [r.voxel_count for r in default] == [int(m.sum()) for m in ref_masks]
    assert dice(default[-1].mask, ref_masks[-1]) >= 0.995
    assert dice(default[-1].mask, truth) > 0.7  # and the result is a real segmentation


def test_rounds_stream_with_everything_the_caller_needs(demo, phantom):
    hu, _ = phantom
    fractions: list[float] = []
    rounds = []
    for r in RSTNEngine(demo.models, InferenceConfig(thr=0.999, max_iter=3), device="cpu").run(
        hu, progress=lambda f, stage: fractions.append(f)
    ):
        rounds.append(r)
        assert r.probability.shape == hu.shape and r.mask.shape == hu.shape
        assert r.probability.dtype == np.float32 and r.mask.dtype == bool
    assert [r.index for r in rounds] == list(range(len(rounds)))
    assert rounds[0].stage == "coarse" and rounds[0].dsc_to_previous is None and not rounds[0].saliency
    assert rounds[-1].stop_reason in ("converged", "max_iter")
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0 < fractions[len(fractions) // 2] < 1
    for prev, r in zip(rounds, rounds[1:]):
        assert r.dsc_to_previous == pytest.approx(dice(prev.mask, r.mask))
        assert set(r.saliency) == {"X", "Y", "Z"} and set(r.crop_boxes) == {"X", "Y", "Z"}
        assert "fine Z" in r.seconds and "postprocess" in r.seconds and r.device.startswith("cpu")
        for maps in r.saliency.values():
            box = np.array(maps.offset), np.array(maps.offset) + maps.channels.shape[1:]
            assert maps.channels.shape[0] == 3 and np.all(box[1] <= hu.shape)
            # saliency is non-zero exactly where the fine stage looked: inside the sub-volume, around the mask
            assert np.count_nonzero(maps.channels) > 0
            seen = np.zeros(hu.shape, bool)
            seen[tuple(slice(a, b) for a, b in zip(*box))] = True
            assert seen[prev.mask].all()  # the previous mask lies inside the region the fine stage saw
    # results handed out are never modified by later rounds
    assert not np.array_equal(rounds[0].probability, rounds[1].probability)


def test_cancel_stops_between_batches(demo, phantom):
    hu, _ = phantom
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    engine = RSTNEngine(demo.models, InferenceConfig(batch_size=4), device="cpu")
    with pytest.raises(RunCancelled, match="Cancelled"):
        list(engine.run(hu, cancel=cancel))
    assert calls["n"] == 4


def test_view_subset_and_empty_prediction():
    models = tiny_models(seed=1, views="Z")
    hu = np.full((24, 20, 10), -1000, np.int16)
    # force an empty coarse mask: a large negative bias on the coarse head
    with torch.no_grad():
        models["Z"].coarse_model.head.bias.fill_(-50.0)
    rounds = list(RSTNEngine(models, InferenceConfig(views=("Z",)), device="cpu").run(hu))
    assert len(rounds) == 1 and rounds[0].stop_reason == "empty" and rounds[0].voxel_count == 0


def test_cpu_batches_fit_the_cache_and_the_memory_budget():
    """On the CPU a batch's full-resolution activation stays near 16 MiB (bigger batches measured slower)."""
    light = RSTN(RSTNConfig(backbone="light", backbone_kwargs={"widths": (8, 16, 32, 64)}))
    engine = RSTNEngine({"Z": light}, InferenceConfig(views=("Z",)), device="cpu")
    model = engine.models["Z"]
    assert engine._batch_size(model, 512 * 240) == 4  # 4 x 8 channels x 4 bytes x 122,880 pixels = 15.7 MB
    assert engine._batch_size(model, 512 * 512) == 2
    assert engine._batch_size(model, 120 * 120) == 36
    assert engine._batch_size(model, 4096 * 4096) == 1  # never 0
    engine.config.memory_budget_gb = 0.05  # the memory budget wins when it is the smaller bound
    assert engine._batch_size(model, 120 * 120) == 6
    engine.config.batch_size = 7  # an explicit batch size overrides both
    assert engine._batch_size(model, 512 * 512) == 7


@pytest.mark.parametrize("length,batch", [(1, 1), (2, 1), (2, 2), (7, 3), (9, 4)])
def test_coarse_accumulation_averages_the_triplets_that_hold_each_slice(length, batch):
    """Slice t is the mean of the channels that predict it: ch2 of triplet t-1, ch1 of t, ch0 of t+1 (those
    inside the volume), written out naively here and compared with the batched accumulation."""
    torch.manual_seed(length)
    p = torch.rand(length, 3, 4, 5)
    expected = torch.zeros(length, 4, 5)
    for t in range(length):
        parts = [p[t, 1]] + ([p[t - 1, 2]] if t > 0 else []) + ([p[t + 1, 0]] if t + 1 < length else [])
        expected[t] = sum(parts) / len(parts)
    acc = torch.zeros(4, 5, length)  # the Z view: slices are the last, strided axis
    weight = slice_weights(length, torch.device("cpu"))
    for start in range(0, length, batch):
        accumulate_whole_slices(acc.movedim(2, 0), start, p[start : start + batch], weight)
    torch.testing.assert_close(acc.movedim(2, 0), expected)


def test_cudnn_autotuning_is_scoped_and_restored():
    """The engine switches cuDNN's autotuner per stage and gives the process its own setting back."""
    before = torch.backends.cudnn.benchmark
    with pytest.raises(RuntimeError):
        with cudnn_autotuning(not before):
            assert torch.backends.cudnn.benchmark is (not before)
            raise RuntimeError("a failed batch")
    assert torch.backends.cudnn.benchmark is before


def test_the_coarse_weight_keeps_the_coarse_rounds_say_in_every_fine_round(demo, phantom):
    hu, _ = phantom
    plain = list(RSTNEngine(demo.models, InferenceConfig(max_iter=1, thr=1.0), device="cpu").run(hu))
    anchored = list(RSTNEngine(demo.models, InferenceConfig(max_iter=1, thr=1.0, coarse_weight=0.3),
                               device="cpu").run(hu))
    np.testing.assert_array_equal(anchored[0].probability, plain[0].probability)  # the coarse round is the same
    expected = 0.7 * plain[1].probability + 0.3 * plain[0].probability  # round 1 crops the same coarse mask
    np.testing.assert_allclose(anchored[1].probability, expected, atol=1e-5)
    with pytest.raises(OptionsError, match="coarse_weight=1.0 is outside \\[0, 1\\)"):
        InferenceConfig(coarse_weight=1.0).validate()


def test_the_previous_weight_averages_the_fine_rounds_from_the_second_on(demo, phantom):
    hu, _ = phantom
    plain = list(RSTNEngine(demo.models, InferenceConfig(max_iter=2, thr=1.0), device="cpu").run(hu))
    settled = list(RSTNEngine(demo.models, InferenceConfig(max_iter=2, thr=1.0, previous_weight=0.3),
                              device="cpu").run(hu))
    for index in (0, 1):  # the coarse round and the first fine round are the paper's
        np.testing.assert_allclose(settled[index].probability, plain[index].probability, atol=1e-5)
    expected = 0.7 * plain[2].probability + 0.3 * plain[1].probability  # round 2 crops the same round-1 mask
    np.testing.assert_allclose(settled[2].probability, expected, atol=1e-5)
    assert not np.allclose(settled[2].probability, plain[2].probability)
    with pytest.raises(OptionsError, match="previous_weight=1.0 is outside \\[0, 1\\)"):
        InferenceConfig(previous_weight=1.0).validate()


def test_a_settling_run_converges_on_the_fine_nets_own_mask_not_on_its_small_step(demo, phantom):
    """With a previous-round weight the averaged mask moves only part of the way, so the step between two rounds
    is small even while the fine nets still move: convergence asks the fine nets' own mask to agree instead."""
    hu, _ = phantom
    plain = list(RSTNEngine(demo.models, InferenceConfig(max_iter=3, thr=1.0), device="cpu").run(hu))
    own_agreement = dice(plain[1].mask, plain[2].mask > 0, empty=1.0)  # round 2's own mask against round 1's
    settled = list(RSTNEngine(demo.models, InferenceConfig(max_iter=3, thr=own_agreement + 1e-6,
                                                           previous_weight=0.9), device="cpu").run(hu))
    assert settled[2].dsc_to_previous > own_agreement  # the averaged step alone would have stopped the run
    assert not settled[2].converged and len(settled) == 4  # the fine nets still moved: it went on


def test_bad_configuration_messages():
    models = tiny_models(views="Z")
    with pytest.raises(ModelPackageError, match="no weights for view"):
        RSTNEngine(models, InferenceConfig(views=("X", "Z")))
    with pytest.raises(OptionsError, match="thr"):  # an option's error, not the input image's (issue 21, class 8)
        RSTNEngine(models, InferenceConfig(views=("Z",), thr=1.5))
    with pytest.raises(OptionsError, match="subset of X, Y, Z"):
        RSTNEngine(models, InferenceConfig(views=("Q",)))
    if not torch.cuda.is_available():
        with pytest.raises(OptionsError, match="CUDA was requested"):
            RSTNEngine(models, InferenceConfig(views=("Z",)), device="cuda")


@pytest.mark.parametrize("kernels", [(1,), (5,), (3, 5), (5, 5)])
def test_crop_local_saliency_is_exact_for_every_variant(kernels):
    """The engine computes g only around each crop (zero outside the slice, as the convolutions' padding);
    with exact boxes it must give what the loop gets from full-slice saliency, for every kernel set."""
    from PancreasRSTNLib.models.model import RSTN, RSTNConfig, SaliencyConfig

    torch.manual_seed(7)
    cfg = RSTNConfig(backbone="light", saliency=SaliencyConfig(kernels), backbone_kwargs={"widths": (4, 8)})
    models = {v: RSTN(cfg).eval() for v in "XYZ"}
    for m in models.values():  # make g far from constant so that a wrong border would show
        for p in (m.saliency1, m.saliency2):
            if p is not None:
                torch.nn.init.normal_(p.weight, std=0.5)
    hu, labels = make_phantom_canonical(size=(40, 40, 20), seed=5)
    oracle = labels == 1
    ref_probs: list[np.ndarray] = []
    reference_segment(models, hu, thr=1.0, max_iter=2, oracle_mask=oracle, probabilities=ref_probs)
    eng = list(RSTNEngine(models, InferenceConfig(thr=1.0, max_iter=2, crop_bucket=1),
                          device="cpu").run(hu, oracle_mask=oracle))
    assert len(eng) == len(ref_probs) == 3
    for r, p in zip(eng, ref_probs):
        assert np.abs(r.probability - p).max() < 1e-5, f"round {r.index}"
        assert np.count_nonzero(r.probability[oracle] > 0.01) > 0.9 * oracle.sum()  # the fine stage did run there
