"""Perturbed prior masks for the noisy stage N: the fine stage learns to start from a person's rough mask.

Why: at refinement time (``segment --prior``, the panel's "Refine from segment") round 0 is a mask a person drew,
corrected or interpolated from a few slices, not the coarse network's output. Its errors differ from the coarse
net's: a contour drawn a few millimetres wide or tight, a mask shifted by a registration, a box, a soft blob. In
stage N, with probability ``prior_noise``, the fine rounds start from such a corruption of the truth instead of
the coarse prediction, so a person's rough mask is in the model's experience. Every draw comes from the step's
own RNG (resume-safe); the corruption runs on the device in torch (no per-pixel Python).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: the corruption kinds, drawn uniformly (the refinement benchmark's kinds, in 2-D pixels of the training grid)
PRIOR_KINDS = ("dilate", "erode", "shift", "box", "soft", "dilate+shift")
MAX_RADIUS_PX = 4  # 6 mm at the 1.5 mm training pixel
MAX_SHIFT_PX = 5


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius) if radius > 0 else mask


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return -F.max_pool2d(-mask, 2 * radius + 1, stride=1, padding=radius) if radius > 0 else mask


def _shift(mask: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift without wrap-around (what enters from the border is background)."""
    h, w = mask.shape[-2:]
    padded = F.pad(mask, (MAX_SHIFT_PX,) * 4)
    y0, x0 = MAX_SHIFT_PX - dy, MAX_SHIFT_PX - dx
    return padded[..., y0:y0 + h, x0:x0 + w]


def _box(mask: torch.Tensor) -> torch.Tensor:
    """Each channel's 2-D bounding box, filled."""
    rows, cols = mask.amax(dim=-1) > 0, mask.amax(dim=-2) > 0  # (1, C, H), (1, C, W)
    return (rows[..., :, None] & cols[..., None, :]).to(mask.dtype)


def _soft(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """A blurred mask: a probability map with wide, uncertain edges."""
    radius = int(np.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=mask.dtype, device=mask.device)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    c = mask.shape[1]
    out = F.conv2d(F.pad(mask, (radius, radius, 0, 0)), kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, radius, radius)), kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def corrupt_prior(label: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A perturbed copy of a (1, 3, H, W) binary label triplet, as a probability map in [0, 1]; the kind and its
    size are drawn from ``rng``. An erosion that would erase the organ falls back to the label itself."""
    kind = PRIOR_KINDS[int(rng.integers(len(PRIOR_KINDS)))]
    radius = int(rng.integers(1, MAX_RADIUS_PX + 1))
    dy, dx = (int(v) for v in rng.integers(-MAX_SHIFT_PX, MAX_SHIFT_PX + 1, size=2))
    mask = (label > 0.5).to(torch.float32)
    if kind == "dilate":
        out = _dilate(mask, radius)
    elif kind == "erode":
        out = _erode(mask, radius)
        out = out if out.sum() > 0 else mask
    elif kind == "shift":
        out = _shift(mask, dy, dx)
    elif kind == "box":
        out = _dilate(_box(mask), int(rng.integers(0, 3)))
    elif kind == "soft":
        out = _soft(mask, float(rng.uniform(1.0, 3.0)))
    else:
        out = _shift(_dilate(mask, radius), dy, dx)
    return out.clamp_(0.0, 1.0)
