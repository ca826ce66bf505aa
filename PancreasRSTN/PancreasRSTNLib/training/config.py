"""What a training run learns: ``TrainConfig``, every choice that changes the weights a seed gives.

Why one frozen-at-start record: it is written to ``train_config.json``, into every checkpoint and into model.json,
so a run can be resumed, audited and repeated from it alone (how to *run* -- device, resume, progress -- is not
in it: see ``view_training.TrainRunOptions``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import RSTNError
from ..models.intensity import HUWindow
from ..models.model import RSTNConfig, SaliencyConfig
from ..views import VIEWS
from .augmentation import AugmentConfig
from .losses import get_loss, joint_weights
from .training_data import view_axis

#: S, I, J: the reference's stages; N: noisy fine-tuning; C2F: the stage-wise baseline (see trainer.py).
MODES = ("S", "I", "J", "N", "C2F", "CNN", "SEQ", "REF")
#: The modes each method trains in (Cai et al.: CNN with its units added progressively, then CNN + refiner end to
#: end on slice sequences; rstn+biclstm: the refiner alone on a frozen RSTN's final probabilities).
METHOD_MODES = {"rstn": ("S", "I", "J", "N"), "c2f": ("C2F",), "cai": ("CNN", "SEQ"), "rstn+biclstm": ("REF",)}
#: The learning rate when none is given: the reference's for SGD, one that trains from scratch for AdamW.
DEFAULT_LR = {"sgd": 1e-4, "adamw": 1e-3}


@dataclass
class TrainConfig:
    views: tuple[str, ...] = VIEWS
    backbone: str = "fcn8s"
    backbone_kwargs: dict = field(default_factory=dict)
    saliency_kernels: tuple[int, ...] = (3, 5)
    method: str = "rstn"  # "rstn", "c2f", "cai" or "rstn+biclstm"
    T: int = 1
    loss: str = "dsc"
    #: (mode, steps per view) stages, run in order with one optimiser; the reference is S -> I -> J.
    schedule: tuple[tuple[str, int], ...] = (("S", 200), ("I", 600), ("J", 800))
    j_decay_every: int = 0  # halve the LR every this many steps in J (reference: 2 epochs); 0 = never
    noisy_lr_factor: float = 0.1
    optimizer: str = "sgd"  # "sgd" (reference) or "adamw"
    lr: float = 1e-4  # saliency + fine weights; coarse = lr * coarse_lr_ratio; biases x bias_lr_ratio
    coarse_lr_ratio: float = 0.1
    bias_lr_ratio: float = 2.0
    momentum: float = 0.99
    weight_decay: float = 5e-4
    slice_threshold: float = 0.98
    negative_fraction: float = 0.0  # organ-free slices per organ slice (not in the reference)
    margin_random_prob: float = 0.5
    margin_high: int = 40
    margin_fixed: int = 20
    c2f_frame: tuple[int, int] = (10, 20)
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end
    log_every: int = 10
    amp: str = "auto"  # "auto" (bf16/fp16 on CUDA, fp32 on CPU), "off"
    init: str | None = None  # None (scratch), a model package folder, or a reference checkpoint ("{view}" in path)
    #: After a view's training, recompute BatchNorm running stats from this many training slices (see
    #: bn_recalibration.py; batch-1 training leaves them stale). None: on when the backbone has BatchNorm.
    bn_recalibration: bool | None = None
    bn_recalibration_samples: int = 500  # <= 0: every training slice of the view
    hu_window: tuple[float, float] = (-100.0, 240.0)  # applied to HU cases (the reference's window by default)
    augment: AugmentConfig | None = None  # None: no augmentation (the reference)
    spacing: tuple[float, float, float] | None = None  # the voxel spacing of the training data (model.json)
    #: a converted ImageNet encoder (models/pretrained.py) loaded into both networks before training; None: none
    pretrained_encoder: str | None = None
    #: RSTN training samples per optimiser step (their losses averaged: a batch, under instance normalisation)
    samples_per_step: int = 1
    #: in stage N, the share of steps whose fine rounds start from a perturbed truth (a person's rough mask:
    #: prior_noise.py) instead of the coarse prediction; 0: the paper's noisy stage alone
    prior_noise: float = 0.0
    # Cai et al.'s system and the refiner (methods "cai", "rstn+biclstm")
    refiner_direction: str = "bi"  # "bi" (TMI) or "forward" (MICCAI 2017)
    refiner_window: int | None = None  # forward only: slices t-w .. t (MICCAI: 3); None: the whole volume
    sequence_length: int = 5  # axial slices per training sequence (SEQ, REF)
    crop_size: int = 128  # square training crop around the organ (CNN, SEQ, REF); 0: whole slices
    batch_size: int = 2  # triplets per CNN step
    unit_share: float = 0.1  # share of the CNN steps that each progressively added unit trains before the next

    def __post_init__(self) -> None:
        self.views = tuple(self.views)
        self.schedule = tuple((str(m), int(n)) for m, n in self.schedule)
        self.hu_window = tuple(float(v) for v in self.hu_window)
        if len(self.hu_window) != 2 or self.hu_window[1] <= self.hu_window[0]:
            raise RSTNError(f"HU window {self.hu_window} invalid: give low,high with low < high.")
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.spacing is not None:
            self.spacing = tuple(float(v) for v in self.spacing)
        self._check_schedule()
        if not 0.0 <= self.prior_noise <= 1.0:
            raise RSTNError(f"--prior-noise {self.prior_noise}: give a share in [0, 1].")
        if self.prior_noise > 0 and not any(m == "N" for m, _ in self.schedule):
            raise RSTNError("--prior-noise acts in the noisy stage only: add --noisy-steps N.")
        if self.samples_per_step < 1:
            raise RSTNError(f"--samples-per-step {self.samples_per_step}: give 1 or more.")
        if self.optimizer not in ("sgd", "adamw"):
            raise RSTNError(f"Unknown optimizer '{self.optimizer}': use sgd or adamw.")
        for v in self.views:
            view_axis(v)
        joint_weights(self.T)
        get_loss(self.loss)

    def _check_schedule(self) -> None:
        """Known modes, non-negative lengths, and modes that belong to the method."""
        for m, n in self.schedule:
            if m not in MODES:
                raise RSTNError(f"Unknown training mode '{m}': use S, I, J, N (noisy fine-tuning) or C2F.")
            if n < 0:
                raise RSTNError(f"Stage {m} has {n} steps; steps must be >= 0.")
        if self.method not in METHOD_MODES:
            raise RSTNError(f"Unknown method '{self.method}': use one of {', '.join(METHOD_MODES)}.")
        allowed = METHOD_MODES[self.method]
        wrong = [m for m, _ in self.schedule if m not in allowed]
        if wrong:
            raise RSTNError(f"Mode {wrong[0]} does not belong to --method {self.method}: its stages are "
                            f"{', '.join(allowed)} (e.g. --steps {','.join(f'{m}:500' for m in allowed)}).")
        if self.method in ("cai", "rstn+biclstm"):
            self._check_refiner()

    def _check_refiner(self) -> None:
        if self.refiner_direction not in ("bi", "forward"):
            raise RSTNError(f"--direction {self.refiner_direction}: use bi or forward.")
        if self.refiner_window is not None and (self.refiner_direction != "forward" or self.refiner_window < 1):
            raise RSTNError("--window is the forward CLSTM's span of previous slices (MICCAI: 3): use it with "
                            "--direction forward and a value >= 1.")
        if self.sequence_length < 2 or self.crop_size < 0 or self.batch_size < 1 or not 0 < self.unit_share < 0.25:
            raise RSTNError("--sequence-length must be >= 2, --crop >= 0, --batch-size >= 1 and --unit-share in "
                            "(0, 0.25).")

    @property
    def total_steps(self) -> int:
        return sum(n for _, n in self.schedule)

    @property
    def window(self) -> HUWindow:
        return HUWindow(*self.hu_window)

    def rstn_config(self) -> RSTNConfig:
        return RSTNConfig(backbone=self.backbone, saliency=SaliencyConfig(tuple(self.saliency_kernels)),
                          backbone_kwargs=dict(self.backbone_kwargs))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["views"] = list(self.views)
        d["schedule"] = [[m, n] for m, n in self.schedule]
        d["saliency_kernels"] = list(self.saliency_kernels)
        d["c2f_frame"] = list(self.c2f_frame)
        d["hu_window"] = list(self.hu_window)
        d["augment"] = None if self.augment is None else self.augment.to_dict()
        d["spacing"] = None if self.spacing is None else list(self.spacing)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["schedule"] = tuple((m, n) for m, n in d.get("schedule", ()))
        for k in ("views", "saliency_kernels", "c2f_frame", "hu_window"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)
