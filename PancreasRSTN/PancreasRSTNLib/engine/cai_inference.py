"""Cai et al.'s inference, and the refinement round that any package carrying a (Bi)CLSTM refiner adds.

Cai et al.: round 0 (stage "cnn") runs every axial triplet through the 2-D CNN (each slice's probability is the
mean of the 3 triplets that hold it, as RSTN's coarse stage and C2F do), round 1 (stage "refine") runs the
refiner over the slices of that probability volume. An RSTN package with a refiner (``--method rstn+biclstm``)
runs RSTN's rounds unchanged, then refines the last round's probability as one more round. Both rounds are
thresholded at the engine's probability threshold and keep the large connected components, as RSTN's fine rounds
do; no HU, no crop: the refiner sees probabilities only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import replace

import numpy as np
import torch

from ..devices import device_description, resolve_device
from ..errors import InputImageError, RSTNError, RunCancelled
from ..models.cai_system import CaiCNN
from ..models.clstm import SliceRefiner, refine_canonical
from ..models.intensity import DEFAULT_WINDOW, HUWindow
from ..overlap import dice
from .batching import autocast, compute_dtype, triplets_per_batch
from .c2f_inference import view_probability
from .config import CancelCallback, InferenceConfig, ProgressCallback
from .guidance import PRIOR_STAGE, Guidance
from .inference import prepare_for_inference
from .postprocess import keep_large_components
from .results import RoundResult


def refine_round(previous: RoundResult, refiner: SliceRefiner, config: InferenceConfig,
                 roi: np.ndarray | None = None) -> RoundResult:
    """The refiner applied to ``previous``'s probability, as the round after it (its stop reason carried over),
    limited to the region of interest ``roi`` when there is one."""
    t0 = time.perf_counter()
    probability = refine_canonical(refiner, previous.probability)
    if roi is not None:
        probability = probability * roi
    mask = probability >= config.prob_threshold
    if config.postprocess:
        mask = keep_large_components(mask)
    return RoundResult(index=previous.index + 1, stage="refine", probability=probability, mask=mask, saliency={},
                       crop_boxes={}, dsc_to_previous=dice(previous.mask, mask, empty=1.0),
                       seconds={"refine": time.perf_counter() - t0}, device=previous.device,
                       converged=previous.converged, stop_reason=previous.stop_reason or "done")


class RefinedEngine:
    """An engine whose last round is followed by the package's refinement round (same ``run`` contract)."""

    def __init__(self, engine: object, refiner: SliceRefiner) -> None:
        self.engine = engine
        self.config: InferenceConfig = engine.config
        self.refiner = refiner.to(engine.device).eval()

    def run(self, volume_hu: np.ndarray, progress: ProgressCallback | None = None,
            cancel: CancelCallback | None = None, *, oracle_mask: np.ndarray | None = None,
            guidance: Guidance | None = None) -> Iterator[RoundResult]:
        roi = None if guidance is None else guidance.roi
        for result in self.engine.run(volume_hu, progress, cancel, oracle_mask=oracle_mask, guidance=guidance):
            if result.stop_reason is None:
                yield result
                continue
            yield replace(result, stop_reason=None)  # no longer the last round
            if cancel is not None and cancel():
                raise RunCancelled("Segmentation cancelled.")
            yield refine_round(result, self.refiner, self.config, roi)


class CaiEngine:
    """Cai et al.'s system on a canonical (rows, cols, slices) HU volume: the CNN round, then the refiner's."""

    def __init__(self, models: Mapping[str, CaiCNN], refiner: SliceRefiner | None,
                 config: InferenceConfig | None = None, device: str = "auto", window: HUWindow = DEFAULT_WINDOW
                 ) -> None:
        if set(models) != {"Z"}:
            raise RSTNError(f"Cai et al.'s CNN segments axial slices (view Z); this package has views "
                            f"{sorted(models)}.")
        self.config = replace((config or InferenceConfig()).with_model_defaults(), views=("Z",))
        self.config.validate()
        self.device = resolve_device(device)
        self.dtype = compute_dtype(self.config.precision, self.device)
        self.cnn = prepare_for_inference(models["Z"], self.device)
        self.refiner = None if refiner is None else refiner.to(self.device).eval()
        self.window = window

    def run(self, volume_hu: np.ndarray, progress: ProgressCallback | None = None,
            cancel: CancelCallback | None = None, *, oracle_mask: np.ndarray | None = None,
            guidance: Guidance | None = None) -> Iterator[RoundResult]:
        """The CNN round (or a person's prior in its place: ``guidance``), then the refiner's round; a region of
        interest limits both."""
        if oracle_mask is not None:
            raise RSTNError("Oracle crops are defined for RSTN models only; Cai et al.'s CNN sees whole slices.")
        if volume_hu.ndim != 3 or min(volume_hu.shape) < 1:
            raise InputImageError(f"Expected a 3-D volume, got shape {volume_hu.shape}.")
        guidance = guidance or Guidance()
        guidance.check(volume_hu.shape, self.config.prob_threshold)
        if guidance.prior is not None and self.refiner is None:
            raise RSTNError("This Cai et al. package has no refiner, so nothing can refine a prior. Use a package "
                            "with its refiner, or an RSTN model.")
        result = (self._prior_round(guidance) if guidance.prior is not None
                  else self._cnn_round(volume_hu, guidance.roi, progress))
        yield result
        if result.stop_reason is not None:
            return
        if cancel is not None and cancel():
            raise RunCancelled("Segmentation cancelled.")
        refined = refine_round(result, self.refiner, self.config, guidance.roi)
        (progress or (lambda fraction, stage: None))(1.0, "refine")
        yield refined

    def _prior_round(self, guidance: Guidance) -> RoundResult:
        probability = guidance.prior if guidance.roi is None else guidance.prior * guidance.roi
        return RoundResult(index=0, stage=PRIOR_STAGE, probability=probability,
                           mask=probability >= self.config.prob_threshold, saliency={}, crop_boxes={},
                           dsc_to_previous=None, seconds={}, device=device_description(self.device))

    def _cnn_round(self, volume_hu: np.ndarray, roi: np.ndarray | None, progress: ProgressCallback | None
                   ) -> RoundResult:
        report = progress or (lambda fraction, stage: None)
        t0 = time.perf_counter()
        with torch.no_grad():
            hu = torch.from_numpy(np.ascontiguousarray(volume_hu, dtype=np.float32)).to(self.device)
            volume = self.window.apply(hu)
            del hu
            batch = triplets_per_batch(self.cnn.cnn, volume.shape[0] * volume.shape[1], self.config, self.device,
                                       self.dtype)
            with autocast(self.device, self.dtype):
                probability = view_probability(self.cnn, volume, 2, batch)
            probability = probability.float().cpu().numpy()
        if roi is not None:
            probability = probability * roi
        mask = probability >= self.config.prob_threshold
        if self.config.postprocess:
            mask = keep_large_components(mask)
        last = self.refiner is None
        report(1.0 if last else 0.9, "cnn")
        return RoundResult(index=0, stage="cnn", probability=probability, mask=mask, saliency={}, crop_boxes={},
                           dsc_to_previous=None, seconds={"cnn": time.perf_counter() - t0},
                           device=device_description(self.device), stop_reason="done" if last else None)
