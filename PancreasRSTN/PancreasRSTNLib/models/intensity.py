"""The reference's intensity normalisation: clip HU to [low, high], then map linearly to [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import numpy as np
import torch


@dataclass(frozen=True)
class HUWindow:
    """HU window of the reference (OrganSegRSTN: low_range -100, high_range 240). No mean subtraction."""

    low: float = -100.0
    high: float = 240.0

    @overload
    def apply(self, hu: torch.Tensor) -> torch.Tensor: ...
    @overload
    def apply(self, hu: np.ndarray) -> np.ndarray: ...

    def apply(self, hu: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Return the windowed float32 image in [0, 1]. Works on numpy arrays and torch tensors."""
        if isinstance(hu, torch.Tensor):
            return (hu.float().clamp(self.low, self.high) - self.low) / (self.high - self.low)
        out = np.clip(np.asarray(hu, dtype=np.float32), self.low, self.high)
        out -= np.float32(self.low)
        out /= np.float32(self.high - self.low)
        return out

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high}


DEFAULT_WINDOW = HUWindow()
