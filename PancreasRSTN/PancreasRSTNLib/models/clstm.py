"""Recurrent refinement across axial slices (Cai et al.): convolutional LSTMs over the CNN's probability maps.

Cai et al. (IEEE TMI) refine the per-slice probability maps of a 2-D CNN with a convolutional LSTM that walks the
axial slices, one layer per direction (top-down and bottom-up, "BiCLSTM"), hidden state of one channel, 3x3
kernels; the two directions' hidden outputs are fused (here a 1x1 convolution) and a sigmoid gives the refined
probability. Their MICCAI 2017 version runs one direction only, and regularises slice t with slices t-3 .. t-1
(``SliceRefiner("forward", window=3)``).

Volumes are ``(slices, H, W)`` or ``(B, slices, H, W)``: the slice axis comes first. The engine's canonical arrays
(``RoundResult.probability``) are ``(rows, cols, slices)`` with the axial slice axis last (head to feet):
``refine_canonical`` moves it first and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

_DIRECTIONS = ("bi", "forward", "backward")
LOGIT_CLAMP = 1e-4
#: What a refiner was trained on: the CNN's probability (Cai et al.'s system) or a frozen RSTN's final one.
REFINER_INPUTS = ("cnn", "rstn")


@dataclass(frozen=True)
class RefinerConfig:
    """How a package's refiner is built (model.json ``refiner``): direction, window, and what it refines."""

    direction: str = "bi"
    window: int | None = None
    refines: str = "cnn"

    def __post_init__(self) -> None:
        if self.direction not in _DIRECTIONS:
            raise ValueError(f"Unknown direction '{self.direction}': use one of {', '.join(_DIRECTIONS)}.")
        if self.refines not in REFINER_INPUTS:
            raise ValueError(f"A refiner refines one of {', '.join(REFINER_INPUTS)} (got '{self.refines}').")

    def build(self) -> SliceRefiner:
        return SliceRefiner(self.direction, self.window)

    def to_dict(self) -> dict:
        return {"direction": self.direction, "window": self.window, "refines": self.refines}

    @classmethod
    def from_dict(cls, data: Mapping) -> RefinerConfig:
        window = data.get("window")
        return cls(str(data.get("direction", "bi")), None if window is None else int(window),
                   str(data.get("refines", "cnn")))


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell: one convolution over ``concat(input, hidden)`` gives the four gates (input,
    forget, output, candidate). With 1 input channel, 1 hidden channel and a 3x3 kernel it has
    4 x (1 + 1) x 9 = 72 weights and 4 biases."""

    def __init__(self, input_channels: int = 1, hidden_channels: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden_channels = int(hidden_channels)
        self.gates = nn.Conv2d(input_channels + hidden_channels, 4 * hidden_channels, kernel_size,
                               padding=kernel_size // 2)
        with torch.no_grad():  # forget gate bias 1: the usual start, remembering the previous slices
            self.gates.bias.zero_()
            self.gates.bias[hidden_channels : 2 * hidden_channels] = 1.0

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x`` (N, C_in, H, W) and ``(h, c)`` (N, C_hidden, H, W), zeros when None; returns the new
        ``(h, c)``."""
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = torch.chunk(self.gates(torch.cat([x, h], dim=1)), 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class SliceRefiner(nn.Module):
    """Refines a probability volume ``(slices, H, W)`` or ``(B, slices, H, W)`` (same shape out, in [0, 1]).

    ``direction``: "forward" (top-down: the output at slice t depends on slices <= t only), "backward" (bottom-up:
    slices >= t only), or "bi" (both, fused). ``window``: None runs each direction over the whole volume; an integer
    w restricts slice t to slices t-w .. t (forward) or t .. t+w (backward) by running the LSTM afresh over that
    window (the MICCAI 2017 version: forward, w = 3).

    The output is ``sigmoid(logit(p) + fuse(hidden outputs))``: ``fuse``, a 1x1 convolution over the one (or two)
    directions' hidden channels, gives a correction of the input's logit and starts at zero, so an untrained refiner
    returns its input and training learns only what the neighbouring slices change (our choice: the papers do not
    say how the refined map is read out; 0 and 1 are clamped to 1e-4 from the ends before the logit).
    """

    def __init__(self, direction: str = "bi", window: int | None = None, hidden_channels: int = 1,
                 kernel_size: int = 3) -> None:
        super().__init__()
        if direction not in _DIRECTIONS:
            raise ValueError(f"Unknown direction '{direction}': use one of {', '.join(_DIRECTIONS)}.")
        if window is not None and int(window) < 1:
            raise ValueError(f"Window {window}: use None (the whole volume) or at least 1 previous slice.")
        self.direction = direction
        self.window = None if window is None else int(window)
        self.forward_cell = ConvLSTMCell(1, hidden_channels, kernel_size) if direction != "backward" else None
        self.backward_cell = ConvLSTMCell(1, hidden_channels, kernel_size) if direction != "forward" else None
        n_dirs = 2 if direction == "bi" else 1
        self.fuse = nn.Conv2d(n_dirs * hidden_channels, 1, 1)
        nn.init.zeros_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)

    def forward(self, probability: torch.Tensor) -> torch.Tensor:
        """The refined probability volume, shaped as ``probability`` (slice axis first, see the class docstring)."""
        if probability.dim() not in (3, 4):
            raise ValueError(f"Expected (slices, H, W) or (B, slices, H, W), got shape {tuple(probability.shape)}.")
        vol = probability if probability.dim() == 4 else probability.unsqueeze(0)
        hidden = []
        if self.forward_cell is not None:
            hidden.append(self._run(self.forward_cell, vol))
        if self.backward_cell is not None:
            hidden.append(self._run(self.backward_cell, vol.flip(1)).flip(1))
        b, s, hgt, wid = vol.shape
        h = torch.stack(hidden, dim=2).reshape(b, s, -1, hgt, wid)  # (B, S, dirs * C_hidden, H, W)
        # the 1x1 fusion as a weighted sum over the hidden channels: the same as self.fuse, without the conv's
        # blocked CPU memory layout, which pads the 1-2 channels to 8-16 (measured on a 293x293x160 volume:
        # 1.87 GB extra peak with the conv, 0.40 GB with the sum, and half the time)
        weight = self.fuse.weight.view(1, 1, -1, 1, 1)
        correction = (h * weight).sum(dim=2) + self.fuse.bias
        out = torch.sigmoid(torch.logit(vol.clamp(LOGIT_CLAMP, 1 - LOGIT_CLAMP)) + correction)
        return out if probability.dim() == 4 else out[0]

    def _run(self, cell: ConvLSTMCell, vol: torch.Tensor) -> torch.Tensor:
        """Top-down hidden outputs (B, S, C_hidden, H, W) of ``cell`` over ``vol`` (B, S, H, W)."""
        b, s, hgt, wid = vol.shape
        if self.window is None:
            state = None
            outputs = []
            for t in range(s):
                state = cell(vol[:, t, None], state)
                outputs.append(state[0])
            return torch.stack(outputs, dim=1)
        # every slice t at once (as a batch of B * S sequences): steps t-w .. t; the steps before slice 0 leave the
        # state at zero, so slice t < w sees exactly slices 0 .. t
        w = self.window
        padded = torch.cat([vol.new_zeros(b, w, hgt, wid), vol], dim=1)
        valid = torch.arange(-w, s, device=vol.device) >= 0
        zeros = vol.new_zeros(b * s, cell.hidden_channels, hgt, wid)
        state = (zeros, zeros)
        for step in range(w + 1):
            x = padded[:, step : step + s].reshape(b * s, 1, hgt, wid)
            keep = valid[step : step + s].repeat(b).view(b * s, 1, 1, 1)
            state = tuple(torch.where(keep, new, old) for new, old in zip(cell(x, state), state))
        return state[0].reshape(b, s, -1, hgt, wid)


def refine_canonical(refiner: SliceRefiner, probability: np.ndarray) -> np.ndarray:
    """Refine a canonical ``(rows, cols, slices)`` probability volume (e.g. ``RoundResult.probability``, the axial
    slice axis last): moved to ``(slices, rows, cols)``, refined, moved back; float32 out."""
    tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(probability, 2, 0), dtype=np.float32))
    param = next(refiner.parameters())
    with torch.no_grad():
        refined = refiner(tensor.to(param.device, param.dtype))
    return np.ascontiguousarray(np.moveaxis(refined.float().cpu().numpy(), 0, 2))
