"""Pictures people look at: overlays, grids (matplotlib, Agg backend, no display)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def draw_overlay(ax, image, attribution, title=None, cmap="jet", alpha=0.5, signed=False, colorbar=True):
    """Heatmap of ``attribution`` over ``image`` on a matplotlib axis; returns the mappable."""
    plt = _plt()
    a = np.asarray(attribution, dtype=np.float32)
    ax.imshow(np.clip(image, 0, 1))
    if signed:
        lim = float(np.abs(a).max()) or 1.0
        m = ax.imshow(a, cmap="bwr", alpha=alpha, vmin=-lim, vmax=lim)
    else:
        m = ax.imshow(a, cmap=cmap, alpha=alpha)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        plt.colorbar(m, ax=ax, fraction=0.046, pad=0.04)
    return m


def save_overlay(image, attribution, path, title=None, signed=None) -> Path:
    """PNG: the input, and the heatmap over the input with a colour bar and a title."""
    plt = _plt()
    a = np.asarray(attribution)
    if signed is None:
        signed = bool(a.min() < 0 < a.max())
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.6), dpi=100)
    axes[0].imshow(np.clip(image, 0, 1))
    axes[0].set_title("input", fontsize=9)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    draw_overlay(axes[1], image, a, title="attribution", signed=signed)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_grid(images, attributions, titles, path, suptitle=None, ncols=None, signed=False) -> Path:
    """One overlay per panel (e.g. one per seed)."""
    plt = _plt()
    n = len(attributions)
    ncols = ncols or min(n, 5)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows + 0.4), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        img = images[i] if isinstance(images, (list, tuple)) else images
        draw_overlay(axes.ravel()[i], img, attributions[i], title=titles[i] if titles else None,
                     signed=signed, colorbar=False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
