"""Augmentations of the nnU-Net kind and a contrast-phase simulation per tissue, for CTs of other hospitals.

Why: the NIH data are portal-venous CTs of one institution. Other hospitals give other contrast phases (a pancreas
at 40 HU unenhanced, 150 HU arterial), thicker slices, other kernels and doses. Each transform here is drawn with
its own probability from the training step's RNG, and only when enabled (probability > 0), so runs that do not
use them replay their earlier draws bit for bit.

All transforms take a (C, H, W) image in HU units (``hu = value * hu_per_unit + hu_offset``) and its label.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import RSTNError

#: the contrast phases drawn by the phase simulation: the pancreas's mean HU range and how vessels and other
#: enhancing soft tissue move (vessels' target HU range; soft tissue's gain around 40 HU)
PHASES = {
    "unenhanced": {"organ": (25.0, 55.0), "vessel": (30.0, 55.0), "soft_gain": (0.2, 0.5)},
    "arterial": {"organ": (110.0, 170.0), "vessel": (250.0, 400.0), "soft_gain": (1.0, 1.5)},
    "portal": {"organ": (80.0, 130.0), "vessel": (140.0, 220.0), "soft_gain": (0.8, 1.2)},
    "late": {"organ": (60.0, 90.0), "vessel": (90.0, 140.0), "soft_gain": (0.5, 0.8)},
}
VESSEL_HU = 160.0  # enhanced vessels and kidney cortex: above this (outside the organ)
SOFT_TISSUE_HU = (10.0, 160.0)  # other soft tissue


@dataclass(frozen=True)
class ScannerAugmentConfig:
    """Probabilities and ranges; every probability 0 (off) by default."""

    gamma_probability: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)  # on the -100 .. 300 HU range
    blur_probability: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.5)  # pixels
    lowres_probability: float = 0.0
    lowres_zoom: tuple[float, float] = (0.5, 1.0)  # down by this factor, then back up
    elastic_probability: float = 0.0
    elastic_alpha: float = 8.0  # peak displacement, pixels
    elastic_grid: int = 6  # control points across the slice (smooth field)
    phase_probability: float = 0.0  # per tissue: organ, vessels, other soft tissue (PHASES)

    def __post_init__(self) -> None:
        for name in ("gamma", "blur", "lowres", "elastic", "phase"):
            p = getattr(self, f"{name}_probability")
            if not 0.0 <= p <= 1.0:
                raise RSTNError(f"{name} augmentation probability {p} must be in [0, 1].")
        object.__setattr__(self, "gamma_range", tuple(float(v) for v in self.gamma_range))
        object.__setattr__(self, "blur_sigma", tuple(float(v) for v in self.blur_sigma))
        object.__setattr__(self, "lowres_zoom", tuple(float(v) for v in self.lowres_zoom))
        if not (0 < self.gamma_range[0] <= self.gamma_range[1] and 0 <= self.blur_sigma[0] <= self.blur_sigma[1]
                and 0 < self.lowres_zoom[0] <= self.lowres_zoom[1] <= 1 and self.elastic_alpha >= 0
                and self.elastic_grid >= 2):
            raise RSTNError("Augmentation ranges must be ordered (low <= high), gamma > 0, zoom in (0, 1].")

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f"{n}_probability") > 0 for n in ("gamma", "blur", "lowres", "elastic", "phase"))

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _draw(rng: np.random.Generator, probability: float) -> bool:
    """Draws only when enabled: a disabled transform consumes nothing from the step's RNG."""
    return probability > 0 and rng.random() < probability


def scanner_augment(image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator, cfg: ScannerAugmentConfig,
                    hu_per_unit: float = 1.0, hu_offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the enabled transforms in a fixed order (phase, elastic, low resolution, blur, gamma)."""
    if _draw(rng, cfg.phase_probability):
        phase = list(PHASES)[int(rng.integers(len(PHASES)))]
        image = simulate_phase(image * hu_per_unit + hu_offset, label, PHASES[phase], rng)
        image = (image - hu_offset) / hu_per_unit
    if _draw(rng, cfg.elastic_probability):
        image, label = elastic(image, label, rng, cfg.elastic_alpha, cfg.elastic_grid, fill=(-1024.0 - hu_offset)
                               / hu_per_unit)
    if _draw(rng, cfg.lowres_probability):
        image = low_resolution(image, rng.uniform(*cfg.lowres_zoom))
    if _draw(rng, cfg.blur_probability):
        image = gaussian_blur(image, rng.uniform(*cfg.blur_sigma))
    if _draw(rng, cfg.gamma_probability):
        image = gamma(image * hu_per_unit + hu_offset, rng.uniform(*cfg.gamma_range))
        image = (image - hu_offset) / hu_per_unit
    return image, label


def simulate_phase(hu: torch.Tensor, label: torch.Tensor, phase: dict, rng: np.random.Generator) -> torch.Tensor:
    """Another contrast phase, tissue by tissue: the organ's mean moved to the phase's value (edges softened over
    3 pixels, its texture kept), enhanced vessels and cortex (> 160 HU) to the phase's vessel range, other soft
    tissue (10-160 HU) scaled around 40 HU by the phase's gain; fat, air and bone below 10 HU stay."""
    organ_target = rng.uniform(*phase["organ"])
    vessel_target = rng.uniform(*phase["vessel"])
    gain = rng.uniform(*phase["soft_gain"])
    soft = F.avg_pool2d(label[None].float(), 3, stride=1, padding=1, count_include_pad=False)[0].to(hu.dtype)
    inside = label > 0.5
    organ_mean = float(hu[inside].mean()) if bool(inside.any()) else organ_target
    outside = 1.0 - soft
    vessel = (hu > VESSEL_HU).to(hu.dtype) * outside
    tissue = ((hu >= SOFT_TISSUE_HU[0]) & (hu <= SOFT_TISSUE_HU[1])).to(hu.dtype) * outside
    vessel_shift = vessel_target - float(hu[(hu > VESSEL_HU) & ~inside].median()) if bool(
        ((hu > VESSEL_HU) & ~inside).any()) else 0.0
    out = hu + soft * (organ_target - organ_mean)
    out = out + vessel * vessel_shift
    out = out + tissue * ((hu - 40.0) * (gain - 1.0))
    return out


def elastic(image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator, alpha: float, grid: int,
            fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random displacement (a coarse grid of draws, bicubically upsampled) of up to ``alpha`` pixels."""
    h, w = image.shape[-2:]
    coarse = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(1, 2, grid, grid)).astype(np.float32))
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0].permute(1, 2, 0)
    field = field * torch.tensor([2.0 * alpha / max(w, 1), 2.0 * alpha / max(h, 1)])
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
    sample_grid = (base + field)[None]
    moved = F.grid_sample((image - fill)[None].float(), sample_grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)[0] + fill
    moved_label = F.grid_sample(label[None].float(), sample_grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)[0] >= 0.5
    return moved.to(image.dtype), moved_label.to(label.dtype)


def low_resolution(image: torch.Tensor, zoom: float) -> torch.Tensor:
    """Down by ``zoom`` (nearest), back up (bilinear): what a coarser pixel grid or a thick slice's blur leaves."""
    h, w = image.shape[-2:]
    small = F.interpolate(image[None].float(), size=(max(1, round(h * zoom)), max(1, round(w * zoom))),
                          mode="nearest")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0].to(image.dtype)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel (a smoother reconstruction kernel)."""
    if sigma <= 0:
        return image
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    out = image[None].float()
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                   groups=c)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
                   groups=c)
    return out[0].to(image.dtype)


GAMMA_RANGE_HU = (-100.0, 300.0)


def gamma(hu: torch.Tensor, g: float) -> torch.Tensor:
    """Gamma on the -100..300 HU range (soft tissue contrast); values outside it are unchanged."""
    low, high = GAMMA_RANGE_HU
    v = ((hu - low) / (high - low)).clamp(0.0, 1.0)
    inside = (hu > low) & (hu < high)
    return torch.where(inside, v.pow(g) * (high - low) + low, hu)


#: the real-CT recipe's probabilities (issue 20's validation, docs/models.md): ``train --augment scanner``
REAL_CT_SCANNER_AUGMENT = ScannerAugmentConfig(gamma_probability=0.3, blur_probability=0.2, lowres_probability=0.25,
                                               elastic_probability=0.2, phase_probability=0.5)
