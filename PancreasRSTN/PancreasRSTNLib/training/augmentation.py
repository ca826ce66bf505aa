"""Training augmentations that real scanners need: in-plane scale and rotation, intensity shift and contrast,
noise, and contrast phases (unenhanced scans, a fatty organ), applied to one slice triplet and its label.

Why: the real data are few (two NIH volumes and single slices of 61 patients), while users' CTs differ in
pixel size, patient size, contrast phase, kernel and dose. Every draw comes from the step's own RNG (seeded by
seed, view, step and rank in the trainer), so a resumed run replays the same augmentations bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import RSTNError
from .scanner_augmentation import REAL_CT_SCANNER_AUGMENT, ScannerAugmentConfig, scanner_augment


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms (each drawn uniformly per training step)."""

    probability: float = 0.85  # of applying the spatial transform at all
    scale: float = 0.2  # in-plane zoom in [1 - scale, 1 + scale]
    rotation_deg: float = 15.0  # in-plane rotation in [-rotation_deg, rotation_deg]
    shift_hu: float = 25.0  # intensity shift in [-shift_hu, shift_hu] HU
    contrast: float = 0.12  # intensity scale in [1 - contrast, 1 + contrast] around 100 HU (soft tissue)
    noise_hu: float = 20.0  # Gaussian noise with a standard deviation drawn in [0, noise_hu] HU
    #: with this probability, as if unenhanced: every voxel lowered by a draw in [unenhanced_hu / 3, unenhanced_hu]
    #: HU (enhanced soft tissue and vessels drop toward unenhanced values; fat and air stay below the window)
    unenhanced_probability: float = 0.0
    unenhanced_hu: float = 80.0
    #: with this probability, a fatty organ: the organ's voxels (edges softened over 3 pixels) lowered by a draw
    #: in [0, fatty_organ_hu] HU, as fatty infiltration shows a pancreas near 0 HU in many older patients'
    #: unenhanced CTs (the enhanced NIH pancreas lies near 100-130 HU)
    fatty_organ_probability: float = 0.0
    fatty_organ_hu: float = 120.0
    #: nnU-Net-style transforms and the contrast-phase simulation (scanner_augmentation.py); None: off
    scanner: ScannerAugmentConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scanner, dict):
            object.__setattr__(self, "scanner", ScannerAugmentConfig(**self.scanner))
        if not 0.0 <= self.probability <= 1.0:
            raise RSTNError(f"Augmentation probability {self.probability} must be in [0, 1].")
        if not 0.0 <= self.scale < 1.0 or self.rotation_deg < 0 or self.shift_hu < 0 or not 0 <= self.contrast < 1 \
                or self.noise_hu < 0 or not 0.0 <= self.fatty_organ_probability <= 1.0 or self.fatty_organ_hu < 0:
            raise RSTNError("Augmentation ranges must be >= 0 (scale and contrast below 1).")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scanner"] = None if self.scanner is None else self.scanner.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict | None) -> AugmentConfig | None:
        return None if data is None else cls(**data)


CONTRAST_CENTRE_HU = 100.0
FILL_HU = -1024.0  # what the rotated and zoomed slice shows outside the original field of view: air


def augment_triplet(image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig,
                    hu_per_unit: float = 1.0, hu_offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a (3, H, W) float image (in HU, or in units with ``hu = value * hu_per_unit + hu_offset``) and
    its (3, H, W) label. Returns new tensors; the label stays binary (bilinear, then >= 0.5)."""
    spatial = rng.random() < cfg.probability
    zoom = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
    angle = math.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    shift = rng.uniform(-cfg.shift_hu, cfg.shift_hu)
    contrast = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    sigma = rng.uniform(0.0, cfg.noise_hu)
    noise_seed = int(rng.integers(0, 2**31 - 1))
    if cfg.unenhanced_probability > 0 and rng.random() < cfg.unenhanced_probability:
        shift -= rng.uniform(cfg.unenhanced_hu / 3.0, cfg.unenhanced_hu)
    fatty = 0.0  # drawn last, and only when enabled, so runs without it replay their old draws
    if cfg.fatty_organ_probability > 0 and rng.random() < cfg.fatty_organ_probability:
        fatty = rng.uniform(0.0, cfg.fatty_organ_hu)

    if fatty > 0:
        soft = F.avg_pool2d(label[None].float(), 3, stride=1, padding=1, count_include_pad=False)[0]
        image = image - soft.to(image.dtype) * (fatty / hu_per_unit)
    if spatial and (zoom != 1.0 or angle != 0.0):
        fill = (FILL_HU - hu_offset) / hu_per_unit
        image, label = _affine(image, label, zoom, angle, fill)
    if cfg.scanner is not None and cfg.scanner.enabled:  # its draws come after all of the above
        image, label = scanner_augment(image, label, rng, cfg.scanner, hu_per_unit, hu_offset)
    centre = (CONTRAST_CENTRE_HU - hu_offset) / hu_per_unit
    image = (image - centre) * contrast + centre + shift / hu_per_unit
    if sigma > 0:
        generator = torch.Generator().manual_seed(noise_seed)
        noise = torch.randn(image.shape, generator=generator, dtype=image.dtype)
        image = image + noise * (sigma / hu_per_unit)
    return image, label


def _affine(image: torch.Tensor, label: torch.Tensor, zoom: float, angle: float, fill: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoom by ``zoom`` (>1 enlarges the anatomy) and rotate by ``angle`` about the slice centre."""
    h, w = image.shape[-2:]
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    # affine_grid works in normalised coordinates; scale x/y so that the rotation is isotropic in pixels
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, (1, 1, h, w), align_corners=False)
    moved = F.grid_sample((image - fill)[None].float(), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)[0] + fill
    moved_label = F.grid_sample(label[None].float(), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)[0] >= 0.5
    return moved.to(image.dtype), moved_label.to(label.dtype)


#: the shipped real-CT model's augmentations (``train --augment real-ct``; docs/models.md): the basic ones, a fatty
#: organ, and the scanner and contrast-phase simulation
REAL_CT_AUGMENT = AugmentConfig(fatty_organ_probability=0.2, scanner=REAL_CT_SCANNER_AUGMENT)
