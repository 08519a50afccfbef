"""Training-progress figures (matplotlib, Agg: no display needed), framework-neutral."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def attention(path, a, title: str) -> Path:
    """An attention matrix (N text positions, T frames); a good one is a monotonic diagonal."""
    fig, ax = plt.subplots(figsize=(6, 4))
    im = ax.imshow(a, aspect="auto", origin="lower", interpolation="none", vmin=0, vmax=1)
    ax.set(xlabel="frame", ylabel="text position", title=title)
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def compare(path, predicted, target, title: str, ylabel: str) -> Path:
    """Predicted (top) above target (bottom) spectrogram-like arrays (bins, frames), values in [0, 1]."""
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for ax, data, name in zip(axes, (predicted, target), ("predicted", "target")):
        im = ax.imshow(data, aspect="auto", origin="lower", interpolation="none", vmin=0, vmax=1)
        ax.set(ylabel=ylabel, title=f"{title}: {name}")
        fig.colorbar(im, ax=ax)
    axes[1].set_xlabel("frame")
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
