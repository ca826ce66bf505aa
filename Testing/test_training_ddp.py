"""DDP through torchrun on CPU: 2 processes, gloo backend, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys

from PancreasRSTNLib.io.model_package import load_model_package


def test_torchrun_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "PancreasRSTNLib", "train", "--phantoms", "2", "--phantom-shape", "32x32x16", "-o", str(out),
           "--views", "Z", "--backbone", "light", "--widths", "4,8", "--steps", "S:2,J:3", "--optimizer", "sgd",
           "--lr", "1e-3", "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    meta = load_model_package(out / "model").metadata
    training = meta["training"]
    assert training["world_size"] == 2
    view = training["views"][0]
    assert view["ddp_ranks_in_sync"] is True and view["final_step"] == 5
