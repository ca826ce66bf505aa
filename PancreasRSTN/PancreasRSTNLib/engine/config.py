"""What a run is asked to do (``InferenceConfig``) and the callbacks it reports through.

The config holds production settings only: what a user may choose in the CLI or the Slicer panel. Evaluation's
oracle crops are an argument of ``RSTNEngine.run``, not a setting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputImageError
from ..views import VIEW_AXES

#: (fraction of the run done in [0, 1], stage), e.g. (0.4, "fine Z")
ProgressCallback = Callable[[float, str], None]
#: True when the user asked to stop; the engine asks between batches
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

    def validate(self) -> None:
        """Refuse settings the engine cannot run, with the allowed values in the message."""
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
