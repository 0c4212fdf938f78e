"""Seeded simulation of the monitor's false-alarm rate and power (uses the real
``evaluate_window`` on windows drawn from a synthetic 43-class baseline)."""
from __future__ import annotations

import numpy as np

from . import synthetic as sy
from .baseline import Baseline, build_baseline
from .monitor import MonitorConfig, WindowAcc, evaluate_window


def make_baseline(c: int = 43, n: int = 5000, seed: int = 0, imbalanced: bool = False):
    """Baseline of ``n`` reference predictions over ``c`` classes: uniform shares, or
    GTSRB-like imbalanced ones (about 10x between common and rare classes)."""
    rng = np.random.default_rng(seed)
    shares = sy.base_shares(c, seed) if imbalanced else np.full(c, 1.0 / c)
    _, probs = sy.draw(n, shares, rng)
    return Baseline(build_baseline(probs, model_info={"source": "synthetic"}, source={"kind": "synthetic"})), shares


def alarm_rate(baseline, shares, n: int, windows: int, seed: int, cfg=None) -> dict:
    cfg = cfg or MonitorConfig()
    rng = np.random.default_rng(seed)
    c = len(shares)
    hits, by_check = 0, {}
    for w in range(windows):
        _, probs = sy.draw(n, shares, rng)
        acc = WindowAcc(c, seed=w)
        acc.add(probs, cfg.low_confidence)
        _, viol = evaluate_window(acc, ("", ""), cfg, baseline)
        hits += bool(viol)
        for ch in {v["check"] for v in viol}:
            by_check[ch] = by_check.get(ch, 0) + 1
    return {"n": n, "windows": windows, "rate": hits / windows,
            "by_check": {k: v / windows for k, v in sorted(by_check.items())}}


def simulate(sizes=(50, 100, 500, 1000), power_sizes=(100, 200), windows: int = 400, target: int = 14,
             shift: float = 0.1, seed: int = 0, imbalanced: bool = False) -> dict:
    baseline, shares = make_baseline(seed=seed, imbalanced=imbalanced)
    far = [alarm_rate(baseline, shares, n, windows, seed + 1 + i) for i, n in enumerate(sizes)]
    shifted = sy.shifted(shares, target, shift)
    power = [alarm_rate(baseline, shifted, n, windows, seed + 100 + i) for i, n in enumerate(power_sizes)]
    return {"classes": len(shares), "baseline": "imbalanced" if imbalanced else "uniform", "target": target, "shift": shift, "target_base_share": float(shares[target]),
            "false_alarm": far, "power": power}
