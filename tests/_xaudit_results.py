"""Builders of realistic xaudit --out folders for the tracking/report tests (real files,
written with the real Explanation.save and plots helpers)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_explanation(seed=0, method="lime", size=32):
    from xaudit.explainers.base import Explanation
    rng = np.random.default_rng(seed)
    img = rng.random((size, size, 3), dtype=np.float32)
    attr = rng.standard_normal((size, size)).astype(np.float32)
    return Explanation(attribution=attr, target=14, target_label="Stop", target_prob=0.91, method=method,
                       params={"num_samples": 100, "kernel_width": 0.25}, seed=seed, model_calls=100,
                       seconds=0.5, meta={"r2": 0.6, "completeness_error": 0.01},
                       arrays={"segments": rng.integers(0, 10, (size, size))}, image=img,
                       model={"source": "signs.onnx", "format": "onnx"}, source_image="img0.png",
                       top=[{"index": 14, "label": "Stop", "prob": 0.91}, {"index": 1, "label": "x", "prob": 0.05}])


def make_explain_dir(d: Path, n=2) -> Path:
    d = Path(d)
    for i in range(n):
        make_explanation(i).save(d / f"img{i}")
    return d


def make_stability_dir(d: Path) -> Path:
    from xaudit.plots import save_grid, save_overlay
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    seeds = [1, 11, 21]
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3), dtype=np.float32)
    maps = [rng.standard_normal((32, 32)).astype(np.float32) for _ in seeds]
    save_grid(img, maps, [f"seed {s}" for s in seeds], d / "grid.png", suptitle="LIME across seeds")
    save_overlay(img, np.std(maps, axis=0), d / "std.png", title="per-pixel std")
    m = [[1.0, 0.6, 0.5], [0.6, 1.0, 0.7], [0.5, 0.7, 1.0]]
    (d / "stability.json").write_text(json.dumps({
        "method": "lime", "seeds": seeds, "params": {"num_samples": 100},
        "images": [{"image": "img0.png", "pairwise": {"topk_jaccard": m}}],
        "summary": {"topk_jaccard_mean": 0.6, "topk_jaccard_worst": 0.5, "spearman_mean": 0.7,
                    "background_share": 0.8}}))
    return d


def make_monitor_dir(d: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots()
    ax.bar(range(3), [1, 2, 3])
    fig.savefig(d / "report.png")
    plt.close(fig)
    counts = [[10, 5, 5], [8, 2, 30]]
    windows = [{"index": i, "window_start": f"2026-11-23T0{4 + i}:00:00Z", "window_end": f"2026-11-23T0{5 + i}:00:00Z",
                "status": "ok", "total": sum(c), "class_counts": c, "violations": i,
                "checks": {"class_share": {"class_index": 2 if i else 0, "class_label": "Stop" if i else "a",
                                           "share": max(c) / sum(c)}}} for i, c in enumerate(counts)]
    windows.append({"index": 2, "window_start": "2026-11-23T06:00:00Z", "window_end": "2026-11-23T07:00:00Z",
                    "status": "no data", "total": 0, "checks": {}})
    (d / "statistics.json").write_text(json.dumps({"total": 400, "chi2": {"p_value": 1e-9, "statistic": 300.0},
                                                   "windows": windows}))
    (d / "violations.json").write_text(json.dumps([
        {"check": "class_share", "class_index": 14, "class_label": "Stop", "value": 0.805, "threshold": 0.5,
         "count": 322, "total": 400, "window_start": "2026-11-23T04:00:00Z", "window_end": "2026-11-23T05:00:00Z",
         "p_value": 1e-12}]))
    return d
