"""Figures (matplotlib, Agg backend: no display needed): the RSTN Figure-5-style round strip of the demo, and
the evaluation plots (DSC box plot, inter-round DSC against round)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported on first use (Slicer installs it only on demand)
    from matplotlib.figure import Figure


def _pyplot() -> ModuleType:
    try:
        import matplotlib
    except ImportError as exc:  # a dependency, but Slicer installs it only on demand
        from ..errors import RSTNError

        raise RSTNError("Plots need matplotlib: pip install matplotlib "
                        "(in Slicer: slicer.util.pip_install(\"matplotlib\")).") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt: ModuleType, fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG (creating its folder) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _window(ct: np.ndarray, low: float = -160.0, high: float = 240.0) -> np.ndarray:
    return np.clip((ct.astype(np.float32) - low) / (high - low), 0, 1)


def round_figure(ct: np.ndarray, truth: np.ndarray | None, masks: Sequence[np.ndarray], titles: Sequence[str],
                 saliency: Sequence[np.ndarray] | None, saliency_title: str, path: str | Path,
                 aspect: float = 1.0) -> Path:
    """Top row: the input slice (ground truth in green), then each round's mask (red) over it. Bottom row:
    the three saliency weight channels of one view (slices j-1, j, j+1), like Figure 5 of Yu et al. 2018.

    Canonical axial slices have row 0 posterior and column 0 at the patient's right: drawn with origin "lower"
    they appear as radiologists read them (anterior up, patient's right on the viewer's left)."""
    plt = _pyplot()
    n = 1 + len(masks)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.8), squeeze=False)
    img = _window(ct)
    axes[0, 0].imshow(img, cmap="gray", aspect=aspect, origin="lower")
    if truth is not None and truth.any():
        axes[0, 0].contour(truth, levels=[0.5], colors="lime", linewidths=0.8)
    axes[0, 0].set_title("input (truth)", fontsize=8)
    for k, (m, t) in enumerate(zip(masks, titles, strict=True)):
        ax = axes[0, k + 1]
        ax.imshow(img, cmap="gray", aspect=aspect, origin="lower")
        overlay = np.zeros(m.shape + (4,), dtype=np.float32)
        overlay[m > 0] = (1.0, 0.1, 0.1, 0.55)
        ax.imshow(overlay, aspect=aspect, origin="lower")
        ax.set_title(t, fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    if saliency is not None:
        vmax = max(float(np.max(s)) for s in saliency) or 1.0
        for c, s in enumerate(saliency[:3]):
            ax = axes[1, c]
            im = ax.imshow(s, cmap="viridis", vmin=0, vmax=vmax, aspect=aspect, origin="lower")
            ax.set_title(f"saliency ch{c} (slice j{c - 1:+d})".replace("j+0", "j"), fontsize=8)
        fig.colorbar(im, ax=axes[1, :3].tolist(), fraction=0.05)
        axes[1, min(3, n - 1)].text(0.0, 0.5, saliency_title, fontsize=8, va="center", wrap=True)
    return _save(plt, fig, path)


def dsc_boxplot(values: Mapping[str, Sequence[float]], path: str | Path, title: str = "DSC per case") -> Path:
    """Box plot (with the points) of per-case DSC, one box per series (e.g. coarse, final, oracle)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(values), 4))
    names = list(values)
    data = [np.asarray(values[k], dtype=float) for k in names]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    for i, d in enumerate(data, start=1):
        ax.scatter(np.full(len(d), i) + np.linspace(-0.08, 0.08, len(d)), d, s=10, color="k", alpha=0.6)
    ax.set_ylabel("DSC")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def round_curves(series: Mapping[str, Sequence[Sequence[float]]], path: str | Path, ylabel: str,
                 title: str) -> Path:
    """Per-case curves of a per-round quantity (e.g. inter-round DSC, DSC to truth), with the mean in bold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, curves in series.items():
        curves = [np.asarray(c, dtype=float) for c in curves if len(c)]
        for c in curves:
            ax.plot(np.arange(1, len(c) + 1) if name == "inter-round" else np.arange(len(c)), c, alpha=0.3, lw=0.8)
        if curves:
            n = max(len(c) for c in curves)
            padded = np.array([np.pad(c, (0, n - len(c)), mode="edge") for c in curves])
            x = np.arange(1, n + 1) if name == "inter-round" else np.arange(n)
            ax.plot(x, padded.mean(axis=0), lw=2.2, label=f"{name} (mean; finished cases held)")
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)
