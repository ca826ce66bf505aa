"""The batched 3-view iterative RSTN engine (Algorithm 1 of Yu et al., with the reference code's details).

Round 0 (coarse): every slice triplet of every view goes through the coarse network; each slice's probability
is the mean of the triplets that contain it, the views are averaged and thresholded (no post-processing).
Round r >= 1 (fine): per view, triplets whose previous mask is empty are skipped; the others are cropped by the
previous binary mask (margin 20), weighted by the saliency transformation of the previous soft probability, run
through the fine network and pasted back. The views are averaged and thresholded as in round 0, then only the
large connected components are kept (``postprocess``). The run stops when DSC(Z(r-1), Z(r)) >= thr or after
``max_iter`` fine rounds.

Results stream out round by round as ``RoundResult``s. Work is batched over triplets (fine crops are grouped by
window size, ``fine_crops.py``; batch sizes and the out-of-memory fallback in ``batching.py``), runs in mixed
precision on CUDA, and holds only the HU volume, one probability accumulator and the previous round's
probability and mask in full size.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ..devices import device_description, resolve_device
from ..errors import InputImageError, ModelPackageError, RunCancelled
from ..models.backbones import fold_batch_norms
from ..models.intensity import DEFAULT_WINDOW, HUWindow
from ..models.model import RSTN
from ..overlap import dice
from ..views import VIEW_AXES
from .batching import (
    AUTOTUNE_MAX_SHAPES,
    autocast,
    compute_dtype,
    cudnn_autotuning,
    run_in_batches,
    triplets_per_batch,
)
from .boxes import TripletBoxes, boxes_from_projections, clip_boxes, mask_projections, view_projections
from .config import CancelCallback, InferenceConfig, ProgressCallback
from .fine_crops import CropBatch, CropPlan, SaliencyBox
from .guidance import PRIOR_STAGE, Guidance, roi_bounds
from .postprocess import keep_large_components
from .results import RoundResult, SaliencyMaps
from .round_weights import own_agreement, settle
from .triplets import accumulate_crops, accumulate_whole_slices, slice_weights, triplet_indices

# Re-exported: callers import the engine's public names from this module.
__all__ = ["CancelCallback", "InferenceConfig", "ProgressCallback", "RSTNEngine", "RoundResult", "SaliencyMaps",
           "cudnn_autotuning", "prepare_for_inference"]


def prepare_for_inference(model: RSTN, device: torch.device) -> RSTN:
    """Eval mode, on the device, channels-last (2.5x faster for the light U-Net on CPU, faster convs on GPU),
    with BatchNorm folded into convolutions. Models with BatchNorm are copied first, so the caller's model
    (e.g. one being trained) is left as it was."""
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        model = fold_batch_norms(copy.deepcopy(model).eval())
    return model.to(device).eval().to(memory_format=torch.channels_last)


@dataclass
class _WorkMeter:
    """Progress of one run in work units (pixels through a network), and its cancel button."""

    progress: ProgressCallback
    cancel: CancelCallback
    total: float
    done: float = 0.0
    fine_cost_known: bool = False

    def check_cancel(self) -> None:
        if self.cancel():
            raise RunCancelled()

    def advance(self, units: float, stage: str) -> None:
        self.done += units
        self.progress(min(0.99, self.done / self.total), stage)

    def report(self, stage: str, finished: bool) -> None:
        if finished:
            self.progress(1.0, "done")
        else:
            self.progress(min(0.99, self.done / self.total), stage)

    def learn_fine_cost(self, boxes: dict[str, TripletBoxes], rounds_left: int) -> None:
        """Replace the guess of the fine rounds' cost by their real cost once the first crops are known."""
        if self.fine_cost_known:
            return
        units = max(1.0, sum(float(((b.a1 - b.a0) * (b.b1 - b.b0)).sum()) for b in boxes.values()))
        self.total = self.done + units * rounds_left
        self.fine_cost_known = True


@dataclass
class _RunState:
    """What one run carries from round to round (the engine itself holds only its models and settings)."""

    volume: torch.Tensor  # canonical HU
    meter: _WorkMeter
    device_name: str
    oracle: torch.Tensor | None  # crop by this mask instead of the previous round's (evaluation)
    probability: torch.Tensor | None = None  # the previous round's
    mask: torch.Tensor | None = None
    prior: torch.Tensor | None = None  # a person's round 0 (float probability), instead of the coarse round
    anchor: torch.Tensor | None = None  # round 0's probability, weighted into every fine round ...
    anchor_weight: float = 0.0  # ... with this weight (``prior_weight`` for a prior, ``coarse_weight`` otherwise)
    roi: torch.Tensor | None = None  # every round's result is limited to this region
    roi_bounds: tuple[np.ndarray, np.ndarray] | None = None  # its bounding box: the fine crops stay inside

    def limit(self, probability: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A round's probability and mask, limited to the region of interest when there is one."""
        if self.roi is None:
            return probability, mask
        return probability.mul_(self.roi), mask.logical_and_(self.roi)

    @property
    def crop_source(self) -> torch.Tensor:
        return self.oracle if self.oracle is not None else self.mask


@dataclass
class _FineView:
    """One view's fine stage in one round: its model, the view-major (slice axis first) volume, previous
    probability and accumulator, the per-slice averaging weight, and where the applied saliency is kept."""

    name: str
    model: RSTN
    volume: torch.Tensor
    probability: torch.Tensor
    accumulator: torch.Tensor
    weight: torch.Tensor
    saliency: SaliencyBox


class RSTNEngine:
    """Runs the per-view RSTN models of one organ over a canonical HU volume."""

    def __init__(
        self,
        models: dict[str, RSTN],
        config: InferenceConfig | None = None,
        device: str | torch.device = "auto",
        window: HUWindow = DEFAULT_WINDOW,
    ) -> None:
        self.config = (config or InferenceConfig()).with_model_defaults()
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
        self.dtype = compute_dtype(self.config.precision, self.device)

    def _autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.dtype)

    def _batch_size(self, model: torch.nn.Module, pixels: int) -> int:
        return triplets_per_batch(model, pixels, self.config, self.device, self.dtype)

    # ----------------------------------------------------------------- rounds
    def run(
        self,
        volume_hu: np.ndarray,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
        *,
        oracle_mask: np.ndarray | None = None,
        guidance: Guidance | None = None,
    ) -> Iterator[RoundResult]:
        """Segment a canonical (rows, cols, slices) HU volume, yielding the coarse round and every fine round.

        ``oracle_mask`` (evaluation only): the fine rounds crop by this mask (the ground truth) instead of the
        previous round's, which gives the upper bound of the method; such crops never run dry.
        ``guidance`` (on this volume's grid): a prior replaces the coarse round (round 0, stage "prior"); a region
        of interest limits every round's result and keeps the fine crops inside its bounding box."""
        run = self._start(volume_hu, progress, cancel, oracle_mask, guidance)
        result = self._prior_round(run) if run.prior is not None else self._coarse_round(run)
        yield result
        while result.stop_reason is None:
            result = self._fine_round(run, result.index + 1)
            yield result

    def _start(self, volume_hu: np.ndarray, progress: ProgressCallback | None, cancel: CancelCallback | None,
               oracle_mask: np.ndarray | None, guidance: Guidance | None = None) -> _RunState:
        if volume_hu.ndim != 3 or min(volume_hu.shape) < 1:
            raise InputImageError(f"Expected a 3-D volume, got shape {volume_hu.shape}.")
        guidance = guidance or Guidance()
        guidance.check(volume_hu.shape, self.config.prob_threshold)
        if oracle_mask is not None and oracle_mask.shape != volume_hu.shape:
            raise InputImageError(f"The oracle mask's shape {oracle_mask.shape} differs from the volume's "
                                  f"{volume_hu.shape}.")
        if volume_hu.dtype not in (np.int16, np.float32):
            volume_hu = volume_hu.astype(np.float32)
        if not volume_hu.flags.writeable:  # torch wants writable memory (the engine never writes to it)
            volume_hu = volume_hu.copy()
        volume = torch.from_numpy(np.ascontiguousarray(volume_hu)).to(self.device)
        oracle = None
        if oracle_mask is not None:
            oracle = torch.from_numpy(np.ascontiguousarray(oracle_mask, dtype=bool)).to(self.device)
        shape = volume.shape
        coarse_units = sum(shape[VIEW_AXES[v]] * math.prod(shape) / shape[VIEW_AXES[v]] for v in self.config.views)
        fine_guess = 0.25 * max(1, self.config.max_iter)
        meter = _WorkMeter(progress or (lambda fraction, stage: None), cancel or (lambda: False),
                           total=coarse_units * (fine_guess if guidance.prior is not None else 1 + fine_guess))
        run = _RunState(volume=volume, meter=meter, device_name=device_description(self.device), oracle=oracle)
        if guidance.prior is not None:
            run.prior = torch.from_numpy(np.ascontiguousarray(guidance.prior, dtype=np.float32)).to(self.device)
        if guidance.roi is not None:
            run.roi = torch.from_numpy(np.ascontiguousarray(guidance.roi, dtype=bool)).to(self.device)
            run.roi_bounds = roi_bounds(guidance.roi)
        return run

    def _prior_round(self, run: _RunState) -> RoundResult:
        """Round 0 from a person's prior: its probability (limited to the region) and its mask at the threshold."""
        run.probability, run.mask = run.limit(run.prior.clone(), run.prior >= self.config.prob_threshold)
        if self.config.prior_weight:
            run.anchor, run.anchor_weight = run.probability, self.config.prior_weight  # each fine round makes a
            # new probability: the anchor is never written to
        run.prior = None  # the run holds it as its previous round now
        stop = "max_iter" if self.config.max_iter == 0 else None
        run.meter.report(PRIOR_STAGE, finished=stop is not None)
        return RoundResult(index=0, stage=PRIOR_STAGE, probability=run.probability.cpu().numpy(),
                           mask=run.mask.cpu().numpy(), saliency={}, crop_boxes={}, dsc_to_previous=None,
                           seconds={}, device=run.device_name, converged=False, stop_reason=stop)

    def _coarse_round(self, run: _RunState) -> RoundResult:
        """Round 0: every triplet of every view through the coarse net, views averaged and thresholded."""
        cfg = self.config
        seconds: dict[str, float] = {}
        acc = torch.zeros(run.volume.shape, dtype=torch.float32, device=self.device)
        for view in cfg.views:
            with self._timed(seconds, f"coarse {view}"):
                self._coarse_view(run, view, acc)
        with self._timed(seconds, "fusion"):
            run.probability = acc.div_(len(cfg.views))
            run.probability, run.mask = run.limit(run.probability, run.probability >= cfg.prob_threshold)
        if cfg.coarse_weight:
            run.anchor, run.anchor_weight = run.probability, cfg.coarse_weight
        empty = run.oracle is None and not bool(run.mask.any())  # oracle crops never run dry
        stop = "empty" if empty else ("max_iter" if cfg.max_iter == 0 else None)
        run.meter.report("coarse", finished=stop is not None)
        return RoundResult(index=0, stage="coarse", probability=run.probability.cpu().numpy(),
                           mask=run.mask.cpu().numpy(), saliency={}, crop_boxes={}, dsc_to_previous=None,
                           seconds=seconds, device=run.device_name, converged=False, stop_reason=stop)

    def _fine_round(self, run: _RunState, index: int) -> RoundResult:
        """Round ``index`` >= 1: crops of the previous mask (or the oracle) through the fine nets, fused,
        post-processed, and compared with the previous round."""
        cfg = self.config
        seconds: dict[str, float] = {}
        with self._timed(seconds, "crop boxes"):
            projections = mask_projections(run.crop_source)
            boxes = {v: boxes_from_projections(*view_projections(projections, VIEW_AXES[v]), cfg.margin)
                     for v in cfg.views}
            if run.roi_bounds is not None:  # inside the region and the context margin the fine net was trained with
                lo, hi = run.roi_bounds
                boxes = {v: clip_boxes(b, lo - cfg.margin, hi + cfg.margin, VIEW_AXES[v]) for v, b in boxes.items()}
        run.meter.learn_fine_cost(boxes, rounds_left=cfg.max_iter - index + 1)
        acc = torch.zeros(run.volume.shape, dtype=torch.float32, device=self.device)
        saliency: dict[str, SaliencyMaps] = {}
        crop_boxes: dict[str, np.ndarray] = {}
        for view in cfg.views:
            with self._timed(seconds, f"fine {view}"):
                maps = self._fine_view(run, boxes[view], view, acc)
                crop_boxes[view] = boxes[view].as_array()
            if maps is not None:
                saliency[view] = maps
        with self._timed(seconds, "fusion"):
            probability = acc.div_(len(cfg.views))
            if run.anchor is not None:  # the person's prior (or the coarse round) keeps its weight
                probability.mul_(1.0 - run.anchor_weight).add_(run.anchor, alpha=run.anchor_weight)
            own = (settle(probability, run.probability, cfg.previous_weight, cfg.prob_threshold, run.roi)
                   if index > 1 and cfg.previous_weight else None)  # the fine nets' own mask (round_weights.py)
            probability, mask = run.limit(probability, probability >= cfg.prob_threshold)
        if cfg.postprocess:
            with self._timed(seconds, "postprocess"):
                mask = keep_large_components(mask)
        dsc = dice(run.mask, mask, empty=1.0)
        converged = (own_agreement(run.mask, own, cfg.postprocess) if own is not None else dsc) >= cfg.thr
        empty = run.oracle is None and not bool(mask.any())  # oracle crops never run dry
        stop = "converged" if converged else "empty" if empty else "max_iter" if index == cfg.max_iter else None
        run.meter.report(f"fine round {index}", finished=stop is not None)
        run.probability, run.mask = probability, mask
        return RoundResult(index=index, stage="fine", probability=probability.cpu().numpy(), mask=mask.cpu().numpy(),
                           saliency=saliency, crop_boxes=crop_boxes, dsc_to_previous=dsc, seconds=seconds,
                           device=run.device_name, converged=converged, stop_reason=stop)

    # ----------------------------------------------------------------- coarse stage
    def _coarse_view(self, run: _RunState, view: str, acc: torch.Tensor) -> None:
        axis = VIEW_AXES[view]
        model = self.models[view]
        vol_v = run.volume.movedim(axis, 0)
        acc_v = acc.movedim(axis, 0)
        length = vol_v.shape[0]
        weight = slice_weights(length, self.device)
        pixels = vol_v.shape[1] * vol_v.shape[2]
        factor = self.config.coarse_downsample

        def step(start: int, stop: int) -> None:
            run.meter.check_cancel()
            centres = torch.arange(start, stop, device=self.device)
            accumulate_whole_slices(acc_v, start, self._coarse_batch(model, vol_v, centres), weight)
            run.meter.advance(len(centres) * pixels, f"coarse {view}")

        with cudnn_autotuning(self.device.type == "cuda"):  # one input shape per view: worth it
            run_in_batches(length, self._batch_size(model, -(-pixels // factor**2)), self.device, step)

    def _coarse_batch(self, model: RSTN, vol_v: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Coarse probabilities (B, 3, H, W) of the triplets centred on ``centres`` (slices of ``vol_v``)."""
        factor = self.config.coarse_downsample
        with torch.inference_mode(), self._autocast():
            x = self.window.apply(vol_v[triplet_indices(centres, vol_v.shape[0])])
            if factor > 1:
                x = torch.nn.functional.avg_pool2d(x, factor, ceil_mode=True)
            logits = model.coarse(x.contiguous(memory_format=torch.channels_last)).float()
            if factor > 1:
                logits = torch.nn.functional.interpolate(logits, size=vol_v.shape[1:], mode="bilinear",
                                                         align_corners=False)
            return torch.sigmoid(logits)

    # ----------------------------------------------------------------- fine stage
    def _fine_view(self, run: _RunState, boxes: TripletBoxes, view: str, acc: torch.Tensor) -> SaliencyMaps | None:
        """One view's fine stage into ``acc``; returns the saliency weights it applied (None: no crop)."""
        if len(boxes) == 0:
            return None
        axis = VIEW_AXES[view]
        model = self.models[view]
        vol_v, prob_v, acc_v = (t.movedim(axis, 0) for t in (run.volume, run.probability, acc))
        fine = _FineView(name=view, model=model, volume=vol_v, probability=prob_v, accumulator=acc_v,
                         weight=slice_weights(vol_v.shape[0], self.device),
                         saliency=SaliencyBox.around(boxes, self.device))
        plan = CropPlan.for_boxes(boxes, vol_v.shape[1:], self.config.crop_bucket,
                                  getattr(model.fine_model, "replicate_pad_multiple", 1), self.device)
        groups = plan.groups()
        with cudnn_autotuning(self.device.type == "cuda" and len(groups) <= AUTOTUNE_MAX_SHAPES):
            for size, members in groups:
                self._fine_group(run, fine, plan, size, members)
        return fine.saliency.maps(view, axis)

    def _fine_group(self, run: _RunState, fine: _FineView, plan: CropPlan, size: tuple[int, int],
                    members: torch.Tensor) -> None:
        """The crops ``members`` of window size ``size``, batched."""
        pixels = size[0] * size[1]

        def step(start: int, stop: int) -> None:
            run.meter.check_cancel()
            crops = plan.batch(members[start:stop], size)
            self._fine_batch(fine, crops)
            run.meter.advance(len(crops) * pixels, f"fine {fine.name}")

        run_in_batches(len(members), self._batch_size(fine.model, pixels), self.device, step)

    def _fine_batch(self, fine: _FineView, crops: CropBatch) -> None:
        model, radius = fine.model, fine.model.saliency_radius
        length, height, width = fine.volume.shape
        slices = triplet_indices(crops.centres, length)  # (B, 3)
        rows, cols = crops.window_pixels()
        take_r, take_c, rel_r, rel_c = crops.source_pixels()
        # Saliency needs the previous probability `radius` pixels around the crop, zero outside the slice
        # (the convolutions' zero padding on the full slice), to equal the full-slice result inside the crop.
        rows_ext, cols_ext, valid = crops.context_pixels(radius, (height, width))
        with torch.inference_mode():
            p_ext = fine.probability[slices[:, :, None, None], rows_ext.clamp(0, height - 1)[:, None, :, None],
                                     cols_ext.clamp(0, width - 1)[:, None, None, :]] * valid
            if model.saliency2 is None:
                sal = model.saliency1(p_ext)
            else:
                sal = model.saliency2(model.relu_saliency1(model.saliency1(p_ext)) * valid)
            batch = torch.arange(len(crops), device=self.device)[:, None, None, None]
            channel = torch.arange(3, device=self.device)[None, :, None, None]
            sal = sal[batch, channel, (radius + rel_r)[:, None, :, None], (radius + rel_c)[:, None, None, :]]
            image = self.window.apply(fine.volume[slices[:, :, None, None], take_r[:, None, :, None],
                                                  take_c[:, None, None, :]])
            with self._autocast():
                x = (image * sal).contiguous(memory_format=torch.channels_last)
                p = torch.sigmoid(model.fine(x).float())
            inside = crops.inside(rows, cols)  # outside its own box a triplet predicts nothing
            p = p * inside
            accumulate_crops(fine.accumulator, crops.centres, p, fine.weight, rows=take_r, cols=take_c)
            fine.saliency.add(crops.centres, take_r, take_c, sal * inside)

    # ----------------------------------------------------------------- bookkeeping
    @contextmanager
    def _timed(self, seconds: dict[str, float], stage: str) -> Iterator[None]:
        """Record the wall time of the block as ``seconds[stage]`` (device work included)."""
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds[stage] = time.perf_counter() - t0
