"""The batched 3-view iterative RSTN engine (Algorithm 1 of Yu et al., with the reference code's details).

Round 0 (coarse): every slice triplet of every view goes through the coarse network; each slice's probability
is the mean of the triplets that contain it, the views are averaged and thresholded.
Round r >= 1 (fine): per view, triplets whose previous mask is empty are skipped; the others are cropped by the
previous binary mask (margin 20), weighted by the saliency transformation of the previous soft probability, run
through the fine network and pasted back. Averaging, thresholding and post-processing as in round 0 (plus
keeping the large components). The run stops when DSC(Z(r-1), Z(r)) >= thr or after ``max_iter`` rounds.

Results stream out round by round as ``RoundResult``s. Work is batched over triplets (fine crops are grouped by
bucketed size), runs in mixed precision on CUDA, and holds only the HU volume, one probability accumulator and
the previous round's probability and mask in full size.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from .backbones import fold_batch_norms
from .boxes import TripletBoxes, boxes_from_projections, bucket_boxes, mask_projections, view_projections
from .errors import DeviceOutOfMemoryError, InputImageError, ModelPackageError, RunCancelled
from .intensity import DEFAULT_WINDOW, HUWindow
from .metrics import dice
from .model import RSTN
from .postprocess import keep_large_components

log = logging.getLogger(__name__)

VIEW_AXES: dict[str, int] = {"X": 0, "Y": 1, "Z": 2}
ProgressCallback = Callable[[float, str], None]
# On the CPU a batch is fastest when one full-resolution activation of it fits in about this many bytes: light
# U-Net (widths 8-64) at 512x240, 2 cores / 32 MiB L3: 22 ms per slice at batch 4 (15.7 MB), 36 ms at batch 12.
CPU_CACHE_BYTES = 16 * 2**20
# cuDNN autotunes a view's fine stage only when its crops come in at most this many input shapes (see
# cudnn_autotuning); exact FCN-8s crops give nearly one shape per batch.
AUTOTUNE_MAX_SHAPES = 16
CancelCallback = Callable[[], bool]


@dataclass
class InferenceConfig:
    """Parameters of a run; defaults are the reference's (thr 0.99 is the paper's best setting)."""

    thr: float = 0.99  # stop when the inter-round DSC reaches this
    max_iter: int = 10  # fine rounds at most
    prob_threshold: float = 0.5
    margin: int = 20
    postprocess: bool = True
    views: tuple[str, ...] = ("X", "Y", "Z")
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    batch_size: int | None = None  # None: adapt to free memory
    # Fine crops of equal size are batched. >1 grows crops (with real image context) to multiples of this so that
    # more of them share a batch: faster, but the fine net then sees more context than the reference gives it.
    crop_bucket: int = 1
    memory_budget_gb: float | None = None  # activation budget for adaptive batching
    coarse_downsample: int = 1  # >1: the coarse stage (which only localises) runs on slices pooled by this factor
    oracle_mask: np.ndarray | None = field(default=None, repr=False)  # evaluation only: crop by ground truth

    def validate(self) -> None:
        if not 0.0 < self.thr <= 1.0:
            raise InputImageError(f"Convergence threshold thr={self.thr} must be in (0, 1].")
        if self.max_iter < 0:
            raise InputImageError(f"max_iter={self.max_iter} must be >= 0.")
        if not 0.0 < self.prob_threshold < 1.0:
            raise InputImageError(f"Probability threshold {self.prob_threshold} must be in (0, 1).")
        if self.margin < 0:
            raise InputImageError(f"Margin {self.margin} must be >= 0.")
        bad = [v for v in self.views if v not in VIEW_AXES]
        if bad or not self.views:
            raise InputImageError(f"Views {self.views} invalid: choose a non-empty subset of X, Y, Z.")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise InputImageError(f"Precision '{self.precision}' invalid: use auto, fp32, bf16 or fp16.")
        if self.crop_bucket < 1:
            raise InputImageError("crop_bucket must be >= 1.")
        if self.coarse_downsample not in (1, 2, 3, 4):
            raise InputImageError(f"coarse_downsample={self.coarse_downsample} must be 1 (faithful), 2, 3 or 4.")


@dataclass
class SaliencyMaps:
    """The saliency weight channels of one view in one fine round, over the box the fine stage saw.

    ``channels[c]`` at slice j (along the view's axis) is the weight that multiplied slice j-1+c of the
    triplet centred on slice j. Canonical layout; ``offset`` places the box in the canonical volume. Voxels of the
    box outside every crop are 0."""

    view: str
    channels: np.ndarray  # (3, a, b, c) float32
    offset: tuple[int, int, int]


@dataclass
class RoundResult:
    index: int  # 0 = coarse
    stage: str  # "coarse" | "fine"
    probability: np.ndarray  # fused probability, canonical float32; never modified afterwards
    mask: np.ndarray  # binary mask (post-processed in fine rounds), canonical bool
    saliency: dict[str, SaliencyMaps]
    crop_boxes: dict[str, np.ndarray]  # view -> (n, 5) slice, a0, a1, b0, b1 in that view's (slice, a, b) axes
    dsc_to_previous: float | None
    seconds: dict[str, float]
    device: str
    converged: bool = False
    stop_reason: str | None = None  # "converged" | "max_iter" | "empty" when this is the last round

    @property
    def voxel_count(self) -> int:
        return int(np.count_nonzero(self.mask))


def prepare_for_inference(model: RSTN, device: torch.device) -> RSTN:
    """Eval mode, on the device, channels-last (2.5x faster for the light U-Net on CPU, faster convs on GPU),
    with BatchNorm folded into convolutions. Models with BatchNorm are copied first, so the caller's model
    (e.g. one being trained) is left as it was."""
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        model = fold_batch_norms(copy.deepcopy(model).eval())
    return model.to(device).eval().to(memory_format=torch.channels_last)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' takes CUDA when torch sees a GPU, else the CPU; an explicit 'cuda' without one is an error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputImageError(
            "CUDA was requested but this torch build sees no GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}). Use --device cpu, or install "
            "a CUDA build of torch."
        )
    return torch.device(name)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


class RSTNEngine:
    """Runs the per-view RSTN models of one organ over a canonical HU volume."""

    def __init__(
        self,
        models: dict[str, RSTN],
        config: InferenceConfig | None = None,
        device: str | torch.device = "auto",
        window: HUWindow = DEFAULT_WINDOW,
    ) -> None:
        self.config = config or InferenceConfig()
        self.config.validate()
        missing = [v for v in self.config.views if v not in models]
        if missing:
            raise ModelPackageError(
                f"The model has no weights for view(s) {', '.join(missing)} (it has {', '.join(sorted(models))}). "
                "Choose views the model has, or install a complete model."
            )
        self.device = resolve_device(device)
        self.window = window
        self.models = {v: prepare_for_inference(models[v], self.device) for v in self.config.views}
        self.dtype = self._compute_dtype()

    # ----------------------------------------------------------------- set-up helpers
    def _compute_dtype(self) -> torch.dtype:
        p = self.config.precision
        if p == "fp32" or (p == "auto" and self.device.type != "cuda"):
            return torch.float32
        if p == "fp16":
            return torch.float16
        if self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _batch_size(self, model: torch.nn.Module, pixels: int) -> int:
        """Triplets per batch: activations must fit the memory budget, and on the CPU the full-resolution
        activations of one batch should stay in cache (bigger batches are slower there, see CPU_CACHE_BYTES)."""
        if self.config.batch_size:
            return int(self.config.batch_size)
        backbone = model.coarse_model
        per_pixel = getattr(backbone, "activation_bytes_per_pixel", 2600)
        if self.dtype != torch.float32:
            per_pixel //= 2
        if self.config.memory_budget_gb:
            budget = self.config.memory_budget_gb * 2**30
        elif self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget = min(0.5 * free, 6 * 2**30)  # keeps the peak near 8 GB on large GPUs
        else:
            budget = 1.5 * 2**30
        batch = budget // max(1, per_pixel * pixels)
        if self.device.type == "cpu":
            channels = getattr(backbone, "full_resolution_channels", 64)
            batch = min(batch, CPU_CACHE_BYTES // (4 * channels * max(1, pixels)))
        return int(max(1, min(256, batch)))

    # ----------------------------------------------------------------- main loop
    def run(
        self,
        volume_hu: np.ndarray,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
    ) -> Iterator[RoundResult]:
        """Segment a canonical (rows, cols, slices) HU volume, yielding the coarse round and every fine round."""
        cfg = self.config
        if volume_hu.ndim != 3 or min(volume_hu.shape) < 1:
            raise InputImageError(f"Expected a 3-D volume, got shape {volume_hu.shape}.")
        self._cancel = cancel or (lambda: False)
        self._progress = progress or (lambda fraction, stage: None)
        if volume_hu.dtype not in (np.int16, np.float32):
            volume_hu = volume_hu.astype(np.float32)
        if not volume_hu.flags.writeable:  # torch wants writable memory (the engine never writes to it)
            volume_hu = volume_hu.copy()
        volume = torch.from_numpy(np.ascontiguousarray(volume_hu)).to(self.device)
        shape = volume.shape
        coarse_units = sum(shape[VIEW_AXES[v]] * math.prod(shape) / shape[VIEW_AXES[v]] for v in cfg.views)
        self._work = {"done": 0.0, "total": coarse_units * (1 + 0.25 * cfg.max_iter)}
        device_name = device_description(self.device)

        # Round 0: coarse
        seconds: dict[str, float] = {}
        acc = torch.zeros(shape, dtype=torch.float32, device=self.device)
        for view in cfg.views:
            t0 = time.perf_counter()
            self._coarse_view(volume, view, acc)
            seconds[f"coarse {view}"] = self._elapsed(t0)
        t0 = time.perf_counter()
        prob = acc.div_(len(cfg.views))
        mask = prob >= cfg.prob_threshold
        seconds["fusion"] = self._elapsed(t0)
        empty = cfg.oracle_mask is None and not bool(mask.any())  # oracle crops never run dry
        stop = "empty" if empty else ("max_iter" if cfg.max_iter == 0 else None)
        self._report("coarse", done=stop is not None)
        yield self._result(0, "coarse", prob, mask, {}, {}, None, seconds, device_name, False, stop)
        if stop:
            return

        oracle = None
        if cfg.oracle_mask is not None:
            oracle = torch.from_numpy(np.ascontiguousarray(cfg.oracle_mask, dtype=bool)).to(self.device)
        fine_units_seen = False
        for r in range(1, cfg.max_iter + 1):
            seconds = {}
            acc = torch.zeros(shape, dtype=torch.float32, device=self.device)
            saliency: dict[str, SaliencyMaps] = {}
            boxes_out: dict[str, np.ndarray] = {}
            crop_source = oracle if oracle is not None else mask
            t0 = time.perf_counter()
            projections = mask_projections(crop_source)
            boxes_by_view = {v: boxes_from_projections(*view_projections(projections, VIEW_AXES[v]), cfg.margin)
                             for v in cfg.views}
            seconds["crop boxes"] = self._elapsed(t0)
            if not fine_units_seen:
                # Replace the guess of the fine rounds' cost by their real cost once it is known.
                units = max(1.0, sum(float(((b.a1 - b.a0) * (b.b1 - b.b0)).sum()) for b in boxes_by_view.values()))
                self._work["total"] = self._work["done"] + units * (cfg.max_iter - r + 1)
                fine_units_seen = True
            for view in cfg.views:
                t0 = time.perf_counter()
                boxes, maps = self._fine_view(volume, prob, boxes_by_view[view], view, acc)
                boxes_out[view] = boxes
                if maps is not None:
                    saliency[view] = maps
                seconds[f"fine {view}"] = self._elapsed(t0)
            t0 = time.perf_counter()
            new_prob = acc.div_(len(cfg.views))
            new_mask = new_prob >= cfg.prob_threshold
            seconds["fusion"] = self._elapsed(t0)
            if cfg.postprocess:
                t0 = time.perf_counter()
                new_mask = keep_large_components(new_mask)
                seconds["postprocess"] = self._elapsed(t0)
            dsc = dice(mask, new_mask, empty=1.0)
            converged = dsc >= cfg.thr
            empty = oracle is None and not bool(new_mask.any())  # oracle crops never run dry
            stop = "converged" if converged else "empty" if empty else "max_iter" if r == cfg.max_iter else None
            self._report(f"fine round {r}", done=stop is not None)
            prob, mask = new_prob, new_mask
            yield self._result(r, "fine", prob, mask, saliency, boxes_out, dsc, seconds, device_name, converged, stop)
            if stop:
                return

    # ----------------------------------------------------------------- stages
    def _coarse_view(self, volume: torch.Tensor, view: str, acc: torch.Tensor) -> None:
        axis = VIEW_AXES[view]
        model = self.models[view]
        vol_v = volume.movedim(axis, 0)
        acc_v = acc.movedim(axis, 0)
        length = vol_v.shape[0]
        weight = _slice_weights(length, self.device)
        pixels = vol_v.shape[1] * vol_v.shape[2]
        factor = self.config.coarse_downsample
        batch = self._batch_size(model, -(-pixels // factor**2))
        with cudnn_autotuning(self.device.type == "cuda"):  # one input shape per view: worth it
            start = 0
            while start < length:
                self._check_cancel()
                centres = torch.arange(start, min(start + batch, length), device=self.device)
                try:
                    p = self._coarse_batch(model, vol_v, centres)
                except torch.OutOfMemoryError:
                    batch = self._shrink_batch(batch)
                    continue
                _accumulate_whole_slices(acc_v, start, p, weight)
                start += len(centres)
                self._advance(len(centres) * pixels, f"coarse {view}")

    def _coarse_batch(self, model: RSTN, vol_v: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Coarse probabilities (B, 3, H, W) of the triplets centred on ``centres`` (slices of ``vol_v``)."""
        factor = self.config.coarse_downsample
        with torch.inference_mode(), self._autocast():
            x = self.window.apply(vol_v[_triplet_indices(centres, vol_v.shape[0])])
            if factor > 1:
                x = torch.nn.functional.avg_pool2d(x, factor, ceil_mode=True)
            logits = model.coarse(x.contiguous(memory_format=torch.channels_last)).float()
            if factor > 1:
                logits = torch.nn.functional.interpolate(logits, size=vol_v.shape[1:], mode="bilinear",
                                                         align_corners=False)
            return torch.sigmoid(logits)

    def _fine_view(
        self, volume: torch.Tensor, prob: torch.Tensor, boxes: TripletBoxes, view: str, acc: torch.Tensor
    ) -> tuple[np.ndarray, SaliencyMaps | None]:
        cfg = self.config
        axis = VIEW_AXES[view]
        model = self.models[view]
        vol_v, prob_v, acc_v = (t.movedim(axis, 0) for t in (volume, prob, acc))
        length, height, width = vol_v.shape
        if len(boxes) == 0:
            return boxes.as_array(), None
        weight = _slice_weights(length, self.device)
        pad_multiple = getattr(model.fine_model, "replicate_pad_multiple", 1)
        replicate = cfg.crop_bucket == 1 and pad_multiple > 1 and min((boxes.a1 - boxes.a0).min(), (boxes.b1 - boxes.b0).min()) > 1
        if replicate:
            # The backbone replicate-pads each input to a multiple of `pad_multiple` itself; padding each crop that
            # way here (by clamped gathering) batches all crops of one padded size with unchanged results.
            start_a, start_b = boxes.a0, boxes.b0
            size_a = -(-(boxes.a1 - boxes.a0) // pad_multiple) * pad_multiple
            size_b = -(-(boxes.b1 - boxes.b0) // pad_multiple) * pad_multiple
        else:
            start_a, start_b, size_a, size_b = bucket_boxes(boxes, cfg.crop_bucket, height, width)
        # Saliency maps of this view, over the union of the crop boxes.
        lo = np.array([boxes.centres.min(), boxes.a0.min(), boxes.b0.min()])
        hi = np.array([boxes.centres.max() + 1, boxes.a1.max(), boxes.b1.max()])
        sal_box = torch.zeros((3, *(hi - lo)), dtype=torch.float32, device=self.device)
        radius = model.saliency_radius
        groups: dict[tuple[int, int], list[int]] = {}
        for i, key in enumerate(zip(size_a.tolist(), size_b.tolist())):
            groups.setdefault(key, []).append(i)
        as_t = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in {
            "c": boxes.centres, "a0": boxes.a0, "a1": boxes.a1, "b0": boxes.b0, "b1": boxes.b1,
            "sa": start_a, "sb": start_b}.items()}
        with cudnn_autotuning(self.device.type == "cuda" and len(groups) <= AUTOTUNE_MAX_SHAPES):
            for (h, w), members in sorted(groups.items()):
                batch = self._batch_size(model, h * w)
                members_t = torch.tensor(members, device=self.device)
                pos = 0
                while pos < len(members):
                    self._check_cancel()
                    sel = members_t[pos : pos + batch]
                    try:
                        self._fine_batch(model, vol_v, prob_v, acc_v, sal_box, lo, as_t, sel, h, w, radius, weight, length)
                    except torch.OutOfMemoryError:
                        batch = self._shrink_batch(batch)
                        continue
                    pos += len(sel)
                    self._advance(len(sel) * h * w, f"fine {view}")
        channels = sal_box.movedim(1, 1 + axis).cpu().numpy()
        offset = [0, 0, 0]
        other = [a for a in range(3) if a != axis]
        offset[axis], offset[other[0]], offset[other[1]] = (int(x) for x in lo)
        return boxes.as_array(), SaliencyMaps(view, channels, tuple(offset))  # type: ignore[arg-type]

    def _fine_batch(self, model, vol_v, prob_v, acc_v, sal_box, lo, t, sel, h, w, radius, weight, length) -> None:
        height, width = vol_v.shape[1:]
        centres = t["c"][sel]
        slices = _triplet_indices(centres, length)  # (B, 3)
        ar, ac = torch.arange(h, device=self.device), torch.arange(w, device=self.device)
        rows = t["sa"][sel, None] + ar  # (B, h) where each crop pixel would lie
        cols = t["sb"][sel, None] + ac
        # which crop pixel each position takes its value from: itself, or (replicate padding) the crop's last one
        rel_r = torch.minimum(ar[None], (t["a1"][sel] - 1 - t["sa"][sel])[:, None])
        rel_c = torch.minimum(ac[None], (t["b1"][sel] - 1 - t["sb"][sel])[:, None])
        take_r, take_c = t["sa"][sel, None] + rel_r, t["sb"][sel, None] + rel_c
        # Saliency needs the previous probability `radius` pixels around the crop, zero outside the slice
        # (the convolutions' zero padding on the full slice), to equal the full-slice result inside the crop.
        rows_ext = t["sa"][sel, None] - radius + torch.arange(h + 2 * radius, device=self.device)
        cols_ext = t["sb"][sel, None] - radius + torch.arange(w + 2 * radius, device=self.device)
        valid = ((rows_ext >= 0) & (rows_ext < height))[:, None, :, None] & ((cols_ext >= 0) & (cols_ext < width))[:, None, None, :]
        with torch.inference_mode():
            p_ext = prob_v[slices[:, :, None, None], rows_ext.clamp(0, height - 1)[:, None, :, None],
                           cols_ext.clamp(0, width - 1)[:, None, None, :]] * valid
            if model.saliency2 is None:
                sal = model.saliency1(p_ext)
            else:
                sal = model.saliency2(model.relu_saliency1(model.saliency1(p_ext)) * valid)
            batch = torch.arange(len(sel), device=self.device)[:, None, None, None]
            channel = torch.arange(3, device=self.device)[None, :, None, None]
            sal = sal[batch, channel, (radius + rel_r)[:, None, :, None], (radius + rel_c)[:, None, None, :]]
            image = self.window.apply(vol_v[slices[:, :, None, None], take_r[:, None, :, None], take_c[:, None, None, :]])
            with self._autocast():
                x = (image * sal).contiguous(memory_format=torch.channels_last)
                p = torch.sigmoid(model.fine(x).float())
            # Outside its own box a triplet predicts nothing (the reference pastes into -9999999 logits).
            inside = (((rows >= t["a0"][sel, None]) & (rows < t["a1"][sel, None]))[:, None, :, None]
                      & ((cols >= t["b0"][sel, None]) & (cols < t["b1"][sel, None]))[:, None, None, :])
            p = p * inside
            _accumulate(acc_v, centres, p, weight, length, rows=take_r, cols=take_c)
            sal_box.index_put_(
                (channel, (centres - lo[0])[:, None, None, None],
                 (take_r - int(lo[1]))[:, None, :, None].clamp(0, sal_box.shape[2] - 1),
                 (take_c - int(lo[2]))[:, None, None, :].clamp(0, sal_box.shape[3] - 1)),
                sal * inside,
                accumulate=True,
            )

    # ----------------------------------------------------------------- bookkeeping
    def _shrink_batch(self, batch: int) -> int:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if batch <= 1:
            fix = ("Run on the CPU (--device cpu / Device: CPU), use fewer views, or crop the volume around the abdomen."
                   if self.device.type == "cuda" else
                   "Close other programs, use fewer views or --coarse-downsample 2, or crop the volume around the abdomen.")
            raise DeviceOutOfMemoryError(f"Out of memory on {self.device} even with one triplet per batch. {fix}")
        log.warning("out of memory with batch %d: retrying with %d", batch, batch // 2)
        return batch // 2

    def _check_cancel(self) -> None:
        if self._cancel():
            raise RunCancelled()

    def _advance(self, units: float, stage: str) -> None:
        self._work["done"] += units
        self._progress(min(0.99, self._work["done"] / self._work["total"]), stage)

    def _report(self, stage: str, done: bool) -> None:
        if done:
            self._progress(1.0, "done")
        else:
            self._progress(min(0.99, self._work["done"] / self._work["total"]), stage)

    def _elapsed(self, t0: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    @staticmethod
    def _result(index, stage, prob, mask, saliency, boxes, dsc, seconds, device_name, converged, stop) -> RoundResult:
        return RoundResult(
            index=index,
            stage=stage,
            probability=prob.cpu().numpy(),
            mask=mask.cpu().numpy(),
            saliency=saliency,
            crop_boxes=boxes,
            dsc_to_previous=dsc,
            seconds=seconds,
            device=device_name,
            converged=converged,
            stop_reason=stop,
        )


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


def _triplet_indices(centres: torch.Tensor, length: int) -> torch.Tensor:
    """(B, 3) slice indices [j-1, j, j+1] with the ends replicated, as the reference builds triplets."""
    offsets = torch.tensor([-1, 0, 1], device=centres.device)
    return (centres[:, None] + offsets).clamp(0, length - 1)


def _slice_weights(length: int, device: torch.device) -> torch.Tensor:
    """1 / (number of triplet channels that predict each slice): 1/3 inside, 1/2 at the ends (reference)."""
    counts = torch.full((length,), 3.0, device=device)
    counts[0] -= 1
    counts[-1] -= 1
    if length == 1:
        counts[0] = 1.0
    return 1.0 / counts


def _accumulate_whole_slices(acc_v: torch.Tensor, start: int, p: torch.Tensor, weight: torch.Tensor) -> None:
    """Coarse stage: triplets start .. start+B-1 predict slices start-1 .. start+B. Their three channels are summed
    per target slice in a small contiguous buffer first, then added to the accumulator's (for the Z view strided)
    slices in one pass: 4x cheaper than a scattered index_put_ there (13-16 -> 3.3 ms per 512x512 slice).
    Channels that would fall outside the volume are dropped (reference)."""
    n, length = p.shape[0], acc_v.shape[0]
    contrib = torch.zeros((n + 2, *p.shape[2:]), dtype=p.dtype, device=p.device)
    for c in range(3):  # the three channels of every triplet at once
        contrib[c : c + n] += p[:, c]
    lo, hi = max(start - 1, 0), min(start + n + 1, length)
    acc_v[lo:hi].add_(contrib[lo - start + 1 : hi - start + 1] * weight[lo:hi, None, None])


def _accumulate(acc_v, centres, p, weight, length, rows, cols) -> None:
    """Fine stage: add each crop's three channel probabilities to the slices j-1, j, j+1 and the pixels it
    predicts, scaled by the per-slice averaging weight. Channels outside the volume are dropped (reference)."""
    target = centres[:, None] + torch.tensor([-1, 0, 1], device=centres.device)  # (B, 3)
    valid = (target >= 0) & (target < length)
    target = target.clamp(0, length - 1)
    scale = (weight[target] * valid)[:, :, None, None]
    acc_v.index_put_((target[:, :, None, None], rows[:, None, :, None], cols[:, None, None, :]), p * scale,
                     accumulate=True)
