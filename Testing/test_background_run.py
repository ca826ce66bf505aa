"""The worker thread that keeps Slicer's GUI responsive: messages, progress, cancel, errors (no Qt)."""

from __future__ import annotations

import pytest
import torch

from PancreasRSTNLib.devices import describe_device
from PancreasRSTNLib.errors import DeviceOutOfMemoryError, InputImageError, RunCancelled
from PancreasRSTNSlicerLib.background_run import (
    BackgroundRun,
    Failed,
    Finished,
    Job,
    ProgressMessage,
    RoundReady,
    user_message,
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from PancreasRSTNLib.io.model_package import default_metadata, save_model_package
    from PancreasRSTNLib.models.model import RSTN, RSTNConfig

    torch.manual_seed(0)
    config = RSTNConfig(backbone="light", backbone_kwargs={"widths": (4, 8)})
    return save_model_package(tmp_path_factory.mktemp("m") / "tiny", {v: RSTN(config) for v in "XYZ"},
                              default_metadata("tiny", "pancreas"))


@pytest.fixture(scope="module")
def ct():
    from PancreasRSTNLib.phantom import make_phantom

    return make_phantom(size=(32, 32, 16), seed=1)[0]


def _settings():
    from PancreasRSTNLib.engine.config import InferenceConfig, RunSettings

    return RunSettings(InferenceConfig(max_iter=2, postprocess=False), device="cpu")


def test_rounds_and_progress_arrive_in_order(tiny_model, ct):
    run = BackgroundRun(ct, [Job("pancreas", tiny_model)], _settings()).start()
    messages = list(run.wait_messages(timeout=120))
    assert isinstance(messages[-1], Finished) and run.finished
    rounds = [m for m in messages if isinstance(m, RoundReady)]
    assert [r.result.index for r in rounds] == list(range(len(rounds))) and len(rounds) >= 2
    fractions = [m.fraction for m in messages if isinstance(m, ProgressMessage)]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert rounds[0].result.mask_image().GetSize() == ct.GetSize()  # on the input grid


def test_cancel_stops_with_cancelled_message(tiny_model, ct):
    run = BackgroundRun(ct, [Job("pancreas", tiny_model)], _settings())
    run.cancel()  # cancelled before it starts: must not run a single round
    run.start()
    messages = list(run.wait_messages(timeout=60))
    assert isinstance(messages[-1], Failed) and messages[-1].kind == "cancelled"
    assert not any(isinstance(m, RoundReady) for m in messages)


def test_errors_become_messages(tmp_path, ct):
    run = BackgroundRun(ct, [Job("pancreas", tmp_path / "nowhere")], _settings()).start()
    last = list(run.wait_messages(timeout=60))[-1]
    assert isinstance(last, Failed) and last.kind == "error" and "nowhere" in last.message
    assert "Traceback" in last.details


def test_poll_is_non_blocking(tiny_model, ct):
    run = BackgroundRun(ct, [Job("pancreas", tiny_model)], _settings())
    assert run.poll() == []  # nothing yet, returns at once
    run.start()
    run.join(120)
    messages = run.poll()
    assert isinstance(messages[-1], Finished)


def test_user_messages():
    assert user_message(RunCancelled())[1] == "cancelled"
    oom_message, kind = user_message(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB"))
    assert kind == "out_of_memory" and "CPU" in oom_message and "batch size" in oom_message
    assert user_message(DeviceOutOfMemoryError("x"))[1] == "out_of_memory"
    assert user_message(InputImageError("The image is 2-D"))[0] == "The image is 2-D"
    message, kind = user_message(ValueError("boom"))
    assert kind == "error" and "ValueError" in message


def test_describe_device_says_why():
    device, why = describe_device("CPU")
    assert device == "cpu" and "CPU" in why
    device, why = describe_device("Auto")
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert "CPU-only build" in why or "sees no GPU" in why
        device, why = describe_device("CUDA")
        assert device == "unavailable" and "Choose Auto or CPU" in why
