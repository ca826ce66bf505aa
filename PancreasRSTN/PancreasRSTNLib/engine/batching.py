"""How the engine batches triplets: compute precision, batch size, the out-of-memory fallback, cuDNN autotuning.

Why here: the engine's rounds read as the algorithm; how many triplets go through the network at once, and what
happens when a device runs out of memory, is the same for the coarse and the fine stage."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

from ..errors import DeviceOutOfMemoryError
from .config import InferenceConfig

log = logging.getLogger(__name__)

# On the CPU a batch is fastest when one full-resolution activation of it fits in about this many bytes: light
# U-Net (widths 8-64) at 512x240, 2 cores / 32 MiB L3: 22 ms per slice at batch 4 (15.7 MB), 36 ms at batch 12.
CPU_CACHE_BYTES = 16 * 2**20
# cuDNN autotunes a view's fine stage only when its crops come in at most this many input shapes (see
# cudnn_autotuning); exact FCN-8s crops give nearly one shape per batch.
AUTOTUNE_MAX_SHAPES = 16


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of ``precision`` on ``device`` (auto: bf16 on CUDA, fp16 where bf16 is missing)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def precision_name(precision: str, device: torch.device) -> str:
    """What ``precision`` runs as on ``device``: 'fp32', 'bf16' or 'fp16' (what a run's summary reports)."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[compute_dtype(precision, device)]


def autocast(device: torch.device, dtype: torch.dtype) -> AbstractContextManager:
    """Mixed precision for the networks' forward passes; nothing to do in fp32."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def triplets_per_batch(model: torch.nn.Module, pixels: int, config: InferenceConfig, device: torch.device,
                       dtype: torch.dtype) -> int:
    """Triplets per batch: activations must fit the memory budget, and on the CPU the full-resolution
    activations of one batch should stay in cache (bigger batches are slower there, see CPU_CACHE_BYTES)."""
    if config.batch_size:
        return int(config.batch_size)
    backbone = getattr(model, "coarse_model", model)  # an RSTN's coarse net, or a single CNN (Cai et al.)
    per_pixel = getattr(backbone, "activation_bytes_per_pixel", 2600)
    if dtype != torch.float32:
        per_pixel //= 2
    if config.memory_budget_gb:
        budget = config.memory_budget_gb * 2**30
    elif device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(0.5 * free, 6 * 2**30)  # keeps the peak near 8 GB on large GPUs
    else:
        budget = 1.5 * 2**30
    batch = budget // max(1, per_pixel * pixels)
    if device.type == "cpu":
        channels = getattr(backbone, "full_resolution_channels", 64)
        batch = min(batch, CPU_CACHE_BYTES // (4 * channels * max(1, pixels)))
    return int(max(1, min(256, batch)))


def shrink_batch(batch: int, device: torch.device) -> int:
    """Half the batch after an out-of-memory error; below one triplet, tell the user what to change."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if batch <= 1:
        if device.type == "cuda":
            fix = "Run on the CPU (--device cpu / Device: CPU), use fewer views, or crop the volume around the abdomen."
        else:
            fix = ("Close other programs, use fewer views or --coarse-downsample 2, or crop the volume around the "
                   "abdomen.")
        raise DeviceOutOfMemoryError(f"Out of memory on {device} even with one triplet per batch. {fix}")
    log.warning("out of memory with batch %d: retrying with %d", batch, batch // 2)
    return batch // 2


def run_in_batches(count: int, batch: int, device: torch.device, step: Callable[[int, int], None]) -> None:
    """Call ``step(start, stop)`` over ``[0, count)`` in batches of ``batch`` items; a batch that runs out of
    memory is retried at half the size (``step`` must leave no trace when it fails)."""
    start = 0
    while start < count:
        stop = min(start + batch, count)
        try:
            step(start, stop)
        except torch.OutOfMemoryError:
            batch = shrink_batch(batch, device)
            continue
        start = stop


@contextmanager
def cudnn_autotuning(enabled: bool) -> Iterator[None]:
    """cuDNN's autotuner searches the fastest kernels once per input shape: a gain when a shape repeats over many
    batches (the coarse stage), a loss when nearly every batch brings a new shape (exact fine crops). The caller's
    setting is restored afterwards (Slicer's Python process is shared with other modules)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
