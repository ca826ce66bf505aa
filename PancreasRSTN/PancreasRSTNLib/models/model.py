"""RSTN: coarse network, saliency transformation g, fine network (Yu et al., CVPR 2018).

The default configuration has exactly the reference's state_dict (82 keys, FCN-8s coarse and fine models,
saliency 3x3+ReLU then 5x5), so a reference checkpoint loads with ``load_reference_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import ModelPackageError
from .backbones import build_backbone

_SALIENCY_KERNELS = (1, 3, 5)


@dataclass(frozen=True)
class SaliencyConfig:
    """The saliency transformation module g: one or two 3->3 conv layers of kernel 1, 3 or 5.

    The paper compares these; the reference ships two layers, 3x3 + ReLU then 5x5 (the default).
    """

    kernels: tuple[int, ...] = (3, 5)

    def __post_init__(self) -> None:
        kernels = tuple(int(k) for k in self.kernels)
        object.__setattr__(self, "kernels", kernels)
        if len(kernels) not in (1, 2) or any(k not in _SALIENCY_KERNELS for k in kernels):
            raise ModelPackageError(
                f"Invalid saliency kernels {kernels}: use one or two layers of kernel size 1, 3 or 5."
            )

    def to_dict(self) -> dict:
        return {"kernels": list(self.kernels)}

    @classmethod
    def from_dict(cls, data: Mapping) -> SaliencyConfig:
        return cls(kernels=tuple(data.get("kernels", (3, 5))))


@dataclass(frozen=True)
class RSTNConfig:
    backbone: str = "fcn8s"
    saliency: SaliencyConfig = field(default_factory=SaliencyConfig)
    backbone_kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["saliency"] = self.saliency.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> RSTNConfig:
        return cls(
            backbone=data.get("backbone", "fcn8s"),
            saliency=SaliencyConfig.from_dict(data.get("saliency", {})),
            backbone_kwargs=dict(data.get("backbone_kwargs", {})),
        )


class RSTN(nn.Module):
    """One view's RSTN. Submodules, in the reference order: coarse_model, saliency1, relu_saliency1,
    saliency2 (absent for a one-layer g), fine_model."""

    def __init__(self, config: RSTNConfig | None = None) -> None:
        super().__init__()
        self.config = config or RSTNConfig()
        kernels = self.config.saliency.kernels
        self.coarse_model = build_backbone(self.config.backbone, **self.config.backbone_kwargs)
        self.saliency1 = nn.Conv2d(3, 3, kernels[0], padding=kernels[0] // 2)
        self.relu_saliency1 = nn.ReLU(inplace=False)
        self.saliency2 = nn.Conv2d(3, 3, kernels[1], padding=kernels[1] // 2) if len(kernels) == 2 else None
        self.fine_model = build_backbone(self.config.backbone, **self.config.backbone_kwargs)
        self.reset_saliency()

    def reset_saliency(self) -> None:
        """The reference init: the first layer Xavier-normal with bias 1, the last layer zero weights with
        biases (1.0, 1.5, 2.0), so g starts as a constant positive weighting of the three slices."""
        last_bias = torch.tensor([1.0, 1.5, 2.0])
        if self.saliency2 is None:
            nn.init.zeros_(self.saliency1.weight)
            with torch.no_grad():
                self.saliency1.bias.copy_(last_bias)
            return
        nn.init.xavier_normal_(self.saliency1.weight)
        nn.init.constant_(self.saliency1.bias, 1.0)
        nn.init.zeros_(self.saliency2.weight)
        with torch.no_grad():
            self.saliency2.bias.copy_(last_bias)

    @property
    def saliency_radius(self) -> int:
        """How far (pixels) the saliency transformation looks around a pixel; crops padded by this much
        give exactly the full-slice result inside the crop."""
        return sum(k // 2 for k in self.config.saliency.kernels)

    def saliency(self, prob: torch.Tensor) -> torch.Tensor:
        """g(prob): the weights that multiply the fine network's input, one channel per slice."""
        if self.saliency2 is None:
            return self.saliency1(prob)
        return self.saliency2(self.relu_saliency1(self.saliency1(prob)))

    def coarse(self, image: torch.Tensor) -> torch.Tensor:
        """Coarse logits of full slice triplets."""
        return self.coarse_model(image)

    def fine(self, weighted_crop: torch.Tensor) -> torch.Tensor:
        """Fine logits of cropped, saliency-weighted triplets."""
        return self.fine_model(weighted_crop)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Coarse probability (the reference's TEST='C' path)."""
        return torch.sigmoid(self.coarse(image))


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that DataParallel / DDP checkpoints carry on every key."""
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise a ModelPackageError that lists missing, unexpected and wrongly shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: {tuple(state_dict[k].shape)} in {source}, {tuple(v.shape)} expected"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        parts.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if mismatched:
        parts.append(f"shape mismatch: {'; '.join(mismatched[:8])}{' ...' if len(mismatched) > 8 else ''}")
    raise ModelPackageError(
        f"The {source} does not fit an RSTN with backbone '{getattr(model, 'config', RSTNConfig()).backbone}' "
        f"({'; '.join(parts)}). Check that the checkpoint is an RSTN state_dict of this backbone and saliency "
        "configuration."
    )


def load_reference_state_dict(model: RSTN, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> RSTN:
    """Load a reference (or our own) state_dict, with or without the ``module.`` prefix, strictly."""
    clean = strip_module_prefix(state_dict)
    check_state_dict(model, clean, source)
    model.load_state_dict(clean, strict=True)
    return model
