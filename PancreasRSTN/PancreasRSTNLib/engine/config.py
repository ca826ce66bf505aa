"""What a run is asked to do (``InferenceConfig``; ``RunSettings``, the one record every surface builds) and the
callbacks it reports through.

The config holds production settings only: what a user may choose in the CLI or the Slicer panel. Evaluation's
oracle crops are an argument of ``RSTNEngine.run``, not a setting."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..errors import ModelPackageError, OptionsError
from ..views import VIEW_AXES

if TYPE_CHECKING:  # a package is only read here: no import at run time
    from ..io.model_package import ModelPackage

#: (fraction of the run done in [0, 1], stage), e.g. (0.4, "fine Z")
ProgressCallback = Callable[[float, str], None]
#: True when the user asked to stop; the engine asks between batches
CancelCallback = Callable[[], bool]


#: the reference's (and the paper's) upper bound on fine rounds
REFERENCE_MAX_ITER = 10


@dataclass
class InferenceConfig:
    """Parameters of a run; defaults are the reference's (thr 0.99 is the paper's best setting)."""

    thr: float = 0.99  # stop when the inter-round DSC reaches this
    #: fine rounds at most; None: the model's validated count (model.json ``inference.max_iter``), else the
    #: reference's 10 (``with_model_defaults``)
    max_iter: int | None = None
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
    #: with a prior (refinement): every fine round's probability is (1 - w) * the fine net's + w * the prior's, so
    #: the person's mask keeps its say; None: the model's validated weight (model.json ``inference.prior_weight``),
    #: else 0 (the fine rounds alone)
    prior_weight: float | None = None
    #: without a prior: every fine round's probability is (1 - w) * the fine net's + w * the coarse round's, so that
    #: the coarse localisation keeps its say and the fine rounds cannot drift away from it; None: the model's
    #: validated weight (model.json ``inference.coarse_weight``), else 0 (the paper's fine rounds)
    coarse_weight: float | None = None
    #: every fine round after the first: its probability is (1 - w) * its own + w * the previous round's (an
    #: exponential average of the fine rounds), so that a round can move the mask only part of the way and the rounds
    #: settle instead of swinging; None: the model's validated weight (model.json ``inference.previous_weight``),
    #: else 0 (the paper's fine rounds)
    previous_weight: float | None = None

    def with_model_defaults(self, model_max_iter: int | None = None, model_prior_weight: float | None = None,
                            model_coarse_weight: float | None = None, model_previous_weight: float | None = None
                            ) -> InferenceConfig:
        """The settings a run uses: an unset ``max_iter`` becomes the model's validated count, else the reference's
        ``REFERENCE_MAX_ITER`` (the fine stage of a weak model drifts after its best round: docs/models.md); an
        unset ``prior_weight``, ``coarse_weight`` or ``previous_weight`` the model's validated weight, else 0."""
        config = self
        if config.max_iter is None:
            config = replace(config, max_iter=REFERENCE_MAX_ITER if model_max_iter is None else int(model_max_iter))
        if config.prior_weight is None:
            config = replace(config, prior_weight=float(model_prior_weight or 0.0))
        if config.coarse_weight is None:
            config = replace(config, coarse_weight=float(model_coarse_weight or 0.0))
        if config.previous_weight is None:
            config = replace(config, previous_weight=float(model_previous_weight or 0.0))
        return config

    def with_package_defaults(self, package: ModelPackage, rounds: int | None = None) -> InferenceConfig:
        """``with_model_defaults`` from a model package's model.json ``inference`` (``rounds``: the round count the
        caller picked from it, e.g. a refinement's; None: its ``max_iter``). Every caller that runs a package uses
        this, so that a validated setting added to model.json reaches them all."""
        return self.with_model_defaults(package.max_iter if rounds is None else rounds, package.prior_weight,
                                        package.coarse_weight, package.previous_weight)

    def validate(self) -> None:
        """Refuse settings the engine cannot run (an ``OptionsError``: the value, the allowed range, the default)."""
        problems = (
            (not 0.0 < self.thr <= 1.0, f"thr={self.thr} is outside (0, 1]", "Give a convergence threshold in (0, 1], "
             "e.g. 0.99 (the default)"),
            (self.max_iter is not None and self.max_iter < 0, f"max_iter={self.max_iter} is negative",
             "Give 0 or more fine rounds (default: the model's validated count, else 10)"),
            (self.prior_weight is not None and not 0.0 <= self.prior_weight < 1.0,
             f"prior_weight={self.prior_weight} is outside [0, 1)", "Give a weight of the prior in [0, 1), e.g. 0 "
             "(the fine rounds alone) or 0.3 (default: the model's validated weight)"),
            (self.coarse_weight is not None and not 0.0 <= self.coarse_weight < 1.0,
             f"coarse_weight={self.coarse_weight} is outside [0, 1)", "Give a weight of the coarse round in [0, 1), "
             "e.g. 0 (the paper's fine rounds; default: the model's validated weight)"),
            (self.previous_weight is not None and not 0.0 <= self.previous_weight < 1.0,
             f"previous_weight={self.previous_weight} is outside [0, 1)", "Give a weight of the previous round in "
             "[0, 1), e.g. 0 (the paper's fine rounds; default: the model's validated weight)"),
            (not 0.0 < self.prob_threshold < 1.0, f"prob_threshold={self.prob_threshold} is outside (0, 1)",
             "Give a probability threshold in (0, 1), e.g. 0.5 (the default)"),
            (self.margin < 0, f"margin={self.margin} is negative",
             "Give a crop margin of 0 or more pixels (default 20)"),
            (not self.views or any(v not in VIEW_AXES for v in self.views), f"views={''.join(self.views) or 'none'} "
             "are not a non-empty subset of X, Y, Z", "Give views such as XYZ or Z (Z is axial)"),
            (self.precision not in ("auto", "fp32", "bf16", "fp16"), f"precision '{self.precision}' is unknown",
             "Use auto, fp32, bf16 or fp16"),
            (self.crop_bucket < 1, f"crop_bucket={self.crop_bucket} is below 1",
             "Give 1 (exact reference crops) or more"),
            (self.coarse_downsample not in (1, 2, 3, 4), f"coarse_downsample={self.coarse_downsample} is not 1, 2, 3 "
             "or 4", "Give 1 (faithful), 2, 3 or 4"),
        )
        for bad, problem, fix in problems:
            if bad:
                raise OptionsError(f"{problem}. {fix}.", fix=f"{fix}.")


@dataclass(frozen=True)
class RunSettings:
    """One run's settings, the one record every surface builds (the command line, a cohort, the demo, the Slicer
    panel) and ``segment_image`` takes whole: the engine's ``InferenceConfig`` plus the device, whether the CT is
    resampled to the model's spacing (when they differ by more than 10 %), and whether a non-CT image is allowed."""

    config: InferenceConfig = field(default_factory=InferenceConfig)
    device: str = "auto"
    resample: bool = True
    allow_non_ct: bool = False

    def for_model_views(self, model_views: Sequence[str]) -> RunSettings:
        """These settings for a model with ``model_views``: the views asked that the model has (a panel whose view
        boxes are all ticked runs a Z-only model on Z). None of them: a ``ModelPackageError`` naming both."""
        views = tuple(v for v in self.config.views if v in model_views)
        if not views:
            raise ModelPackageError(f"The model has view(s) {', '.join(model_views)} only, and the run asks for "
                                    f"{', '.join(self.config.views)}. Tick one of the model's views "
                                    "(Advanced, Views), or install a model with those views.")
        return self if views == tuple(self.config.views) else replace(self, config=replace(self.config, views=views))

