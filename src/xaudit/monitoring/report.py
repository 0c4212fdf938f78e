"""report.png: baseline vs window class histograms and confidence distributions."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .baseline import CONF_BINS


def save_report(result, baseline, path, max_windows: int = 6) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    wins = [w for w in result.windows if w["status"] == "ok"]
    # show violating windows first, then the most populated ones
    wins = sorted(wins, key=lambda w: (-w.get("violations", 0), -w["total"]))[:max_windows]
    wins = sorted(wins, key=lambda w: w["index"])
    rows = max(1, len(wins))
    fig, axes = plt.subplots(rows, 2, figsize=(12, 2.8 * rows + 0.6), dpi=90, squeeze=False)
    centers = (CONF_BINS[:-1] + CONF_BINS[1:]) / 2
    if not wins:
        for ax in axes.ravel():
            ax.axis("off")
        axes[0, 0].text(0.5, 0.5, "no data in any window", ha="center", va="center", transform=axes[0, 0].transAxes)
    for r, w in enumerate(wins):
        ax = axes[r, 0]
        shares = np.asarray(w["class_shares"])
        x = np.arange(len(shares))
        width = 0.4 if baseline is not None else 0.8
        if baseline is not None:
            ax.bar(x - 0.2, baseline.shares, width, color="#999999", label="baseline")
        ax.bar(x + (0.2 if baseline is not None else 0), shares, width, color="#d62728" if w["violations"] else "#1f77b4",
               label=f"window (n={w['total']})")
        thr = w["checks"]["class_share"]["threshold"]
        ax.axhline(thr, color="k", lw=0.8, ls="--")
        ax.set_title(f"{w['window_start']} .. {w['window_end']}: {w['violations']} violation(s)", fontsize=9)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("share")
        ax.legend(fontsize=7)
        ax = axes[r, 1]
        h = np.asarray(w["confidence_histogram"], float)
        ax.step(centers, h / max(h.sum(), 1), where="mid", label="window", color="#1f77b4")
        if baseline is not None:
            b = baseline.conf_hist
            ax.step(centers, b / max(b.sum(), 1), where="mid", label="baseline", color="#999999")
        ax.set_xlabel("max probability")
        ax.set_ylabel("fraction")
        ax.set_title("confidence distribution", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
