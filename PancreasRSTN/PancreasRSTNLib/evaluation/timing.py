"""Measuring helpers of the benchmarks: device synchronisation, medians, peak memory, FLOPs and device peaks.

Why apart: the speed benchmark and the training-throughput measurement time things the same way."""

from __future__ import annotations

import resource
import statistics

import torch

from ..models.backbones import backbone_gflops
from ..models.model import RSTN
from ..views import VIEW_AXES

# Dense peak TFLOP/s by (device-name fragment, dtype): what "achieved against the peak" is measured against.
DEVICE_PEAK_TFLOPS = {
    ("H200", torch.bfloat16): 989.0,
    ("H100", torch.bfloat16): 989.0,
    ("A100", torch.bfloat16): 312.0,
    ("H200", torch.float32): 67.0,
    ("H100", torch.float32): 67.0,
    ("A100", torch.float32): 19.5,
}


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def host_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's dense peak for ``dtype`` when known (see DEVICE_PEAK_TFLOPS), else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for (fragment, dt), peak in DEVICE_PEAK_TFLOPS.items():
        if fragment in name and dt == dtype:
            return peak
    return None


def coarse_gflop(models: dict[str, RSTN], shape: tuple[int, ...]) -> float:
    """GFLOP of the coarse stage over every slice of every view of a canonical volume of ``shape``."""
    total = 0.0
    for view, model in models.items():
        axis = VIEW_AXES[view]
        h, w = (shape[a] for a in range(3) if a != axis)
        cfg = model.config
        total += backbone_gflops(cfg.backbone, h, w, **cfg.backbone_kwargs) * shape[axis]
    return total
