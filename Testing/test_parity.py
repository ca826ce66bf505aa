"""Our RSTN must compute what the public reference network computes (shared/reference/PARITY.md)."""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch

from PancreasRSTNLib.engine.boxes import triplet_boxes
from PancreasRSTNLib.models.model import RSTN, load_reference_state_dict


def recipe_state_dict(fixture, seed: int, prefix: str = "") -> dict[str, torch.Tensor]:
    rng = np.random.RandomState(seed)
    out = {}
    for key, shape in zip(fixture["keys"], fixture["shapes"]):
        shape = tuple(ast.literal_eval(str(shape)))
        values = rng.standard_normal(shape).astype(np.float32)
        scale = np.float32(np.sqrt(2.0 / np.prod(shape[1:]))) if len(shape) == 4 else np.float32(0.01)
        out[prefix + str(key)] = torch.from_numpy(values * scale)
    return out


@pytest.fixture(scope="module")
def fixture(shared_dir):
    return dict(np.load(shared_dir / "reference" / "parity_seed0.npz", allow_pickle=False))


@pytest.fixture(scope="module")
def parity_model(fixture) -> RSTN:
    """Loaded from the recipe with the ``module.`` prefix of multi-GPU checkpoints."""
    model = RSTN()
    load_reference_state_dict(model, recipe_state_dict(fixture, int(fixture["seed"]), "module."))
    return model.eval()


def test_plain_and_prefixed_keys_load_the_same_weights(parity_model, fixture):
    plain = RSTN()
    load_reference_state_dict(plain, recipe_state_dict(fixture, int(fixture["seed"])))
    for (k, a), (k2, b) in zip(plain.state_dict().items(), parity_model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_state_dict_layout_is_the_reference(fixture):
    sd = RSTN().state_dict()
    assert list(sd) == [str(k) for k in fixture["keys"]]
    assert len(sd) == 82
    assert sum(v.numel() for v in sd.values()) == 268_555_786


def test_parity_with_reference(parity_model, fixture):
    x = torch.from_numpy(fixture["input"])[None]
    score = torch.from_numpy(fixture["score"])[None]
    with torch.inference_mode():
        coarse_logit = parity_model.coarse(x)[0].numpy()
        saliency = parity_model.saliency(score)
        # the fixture's 3 mask channels are the 3 slices of one triplet: the one centred on slice 1
        boxes = triplet_boxes(torch.from_numpy(fixture["mask"]).bool(), 20)
        i = int(np.flatnonzero(boxes.centres == 1)[0])
        r0, r1, c0, c1 = (int(boxes.a0[i]), int(boxes.a1[i]), int(boxes.b0[i]), int(boxes.b1[i]))
        fine_logit = parity_model.fine((x * saliency)[:, :, r0:r1, c0:c1])[0].numpy()
    np.testing.assert_allclose(coarse_logit, fixture["coarse_logit"], rtol=1e-3, atol=2e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-coarse_logit)), fixture["coarse_prob"], atol=1e-4)
    np.testing.assert_allclose(saliency[0].numpy(), fixture["saliency"], atol=1e-4)
    assert [r0, r1, c0, c1] == [int(v) for v in fixture["crop_box"]]
    np.testing.assert_allclose(fine_logit, fixture["fine_logit_box"], rtol=1e-3, atol=2e-5)
    fine_prob = np.zeros_like(fixture["fine_prob"])
    fine_prob[:, r0:r1, c0:c1] = 1 / (1 + np.exp(-fine_logit))
    np.testing.assert_allclose(fine_prob, fixture["fine_prob"], atol=1e-4)


def test_wrong_checkpoint_lists_offending_keys(fixture):
    from PancreasRSTNLib.errors import ModelPackageError

    sd = recipe_state_dict(fixture, 0)
    sd["fine_model.fc6.weight"] = sd["fine_model.fc6.weight"][:, :, :3, :3]
    del sd["saliency2.bias"]
    with pytest.raises(ModelPackageError,
                       match=r"missing keys: saliency2\.bias.*shape mismatch: fine_model\.fc6\.weight"):
        load_reference_state_dict(RSTN(), sd)
