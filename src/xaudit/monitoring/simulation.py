"""Seeded simulation of the monitor's false-alarm rate and power.

Windows are drawn from a synthetic 43-class baseline (false alarms) or from the same
distribution with 10 points of mass moved to one class (power). :func:`evaluate_batch`
applies the decision rules of :func:`xaudit.monitoring.monitor.evaluate_window` to many
windows at once (numpy, vectorised); ``tests/test_monitor_stats.py`` checks that both
agree window by window, so the simulated rates are the rates of the real monitor.
"""
from __future__ import annotations

import numpy as np
from scipy import stats as st

from . import stats as S
from . import synthetic as sy
from .baseline import Baseline, build_baseline, low_confidence_mask
from .monitor import WEIGHTS, MonitorConfig, WindowAcc, evaluate_window


def make_baseline(c: int = 43, n: int = 5000, seed: int = 0, imbalanced: bool = False):
    """Baseline of ``n`` reference predictions over ``c`` classes: uniform shares, or
    GTSRB-like imbalanced ones (about 10x between common and rare classes)."""
    rng = np.random.default_rng(seed)
    shares = sy.base_shares(c, seed) if imbalanced else np.full(c, 1.0 / c)
    _, probs = sy.draw(n, shares, rng)
    return Baseline(build_baseline(probs, model_info={"source": "synthetic"}, source={"kind": "synthetic"})), shares


def draw_windows(w: int, n: int, shares: np.ndarray, rng):
    """-> probs (w, n, C) of ``w`` windows of ``n`` predictions."""
    _, probs = sy.draw(w * n, shares, rng)
    return probs.reshape(w, n, len(shares))


def evaluate_batch(probs: np.ndarray, baseline: Baseline, cfg: MonitorConfig | None = None) -> dict:
    """Decisions of every check for windows ``probs`` (W, n, C) against ``baseline``
    (same rules as evaluate_window). -> {check: bool (W,)} plus "any"."""
    cfg = cfg or MonitorConfig()
    W, n, c = probs.shape
    a = cfg.alpha
    pred = probs.argmax(2)
    counts = np.zeros((W, c), np.int64)
    np.add.at(counts, (np.repeat(np.arange(W), n), pred.ravel()), 1)
    out = {}
    # class_share: lower bound of the two-sided (1-alpha) Clopper-Pearson interval of the top class
    k = counts.max(1)
    lo, _ = S.clopper_pearson(k, np.full(W, n), a)
    out["class_share"] = lo > cfg.threshold
    # low confidence vs the baseline's rate
    low = low_confidence_mask(probs.reshape(-1, c), cfg.low_confidence).reshape(W, n).sum(1)
    rate = min(max(baseline.low_conf_rate, 1e-4), 1 - 1e-9)
    out["low_confidence"] = S.binom_greater_p(low, n, rate) < a * WEIGHTS["low_confidence"]
    # class_shift: conditional exact test per class, Bonferroni
    b = baseline.counts
    m = b.sum()
    pc = st.binom.sf(counts - 1, counts + b[None], n / (n + m))
    pc = np.where(counts / n > baseline.shares[None], pc, 1.0)
    padj = S.minp_adjust(pc, b, n)
    out["class_shift"] = ((padj < a * WEIGHTS["class_shift"]) & (counts / n > baseline.shares[None])).any(1)
    # chi-square homogeneity (bins depend on the baseline and n only)
    bins = S.merge_bins(n * b / m, 5.0)
    if len(bins) >= 2:
        ow = np.stack([counts[:, x].sum(1) for x in bins], 1).astype(np.float64)
        ob = np.array([b[x].sum() for x in bins])[None]
        tot = ow + ob
        ew, eb = n * tot / (n + m), m * tot / (n + m)
        stat = ((ow - ew) ** 2 / ew).sum(1) + ((ob - eb) ** 2 / eb).sum(1)
        out["chi_square"] = st.chi2.sf(stat, len(bins) - 1) < a * WEIGHTS["chi_square"]
    else:
        out["chi_square"] = np.zeros(W, bool)
    # BBSD: KS per softmax dimension, Bonferroni
    _, pks = S.ks_pvalues_batch(S.quantize_probs(probs.astype(np.float32)), baseline.samples_sorted)
    out["bbsd"] = (np.minimum(1.0, pks * c)).min(1) < a * WEIGHTS["bbsd"]
    out["any"] = np.logical_or.reduce([out[x] for x in ("class_share", "low_confidence", "class_shift",
                                                        "chi_square", "bbsd")])
    return out


def alarm_rate_batch(baseline, shares, n: int, windows: int, seed: int, cfg=None, chunk_rows: int = 200_000) -> dict:
    """Share of ``windows`` windows of size ``n`` drawn from ``shares`` that raise any violation."""
    rng = np.random.default_rng(seed)
    per = max(1, chunk_rows // n)
    hits = {}
    done = 0
    while done < windows:
        w = min(per, windows - done)
        res = evaluate_batch(draw_windows(w, n, shares, rng), baseline, cfg)
        for k, v in res.items():
            hits[k] = hits.get(k, 0) + int(v.sum())
        done += w
    return {"n": n, "windows": windows, "rate": hits["any"] / windows,
            "by_check": {k: v / windows for k, v in sorted(hits.items()) if k != "any" and v}}


def alarm_rate(baseline, shares, n: int, windows: int, seed: int, cfg=None) -> dict:
    """Same as alarm_rate_batch through the real per-window ``evaluate_window`` (slow)."""
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


def simulate(sizes=(50, 100, 500, 1000), power_sizes=(100, 200), windows: int = 2000, target: int = 14,
             shift: float = 0.1, seed: int = 0, imbalanced: bool = False, baseline_n: int = 5000,
             power_windows: int | None = None) -> dict:
    baseline, shares = make_baseline(n=baseline_n, seed=seed, imbalanced=imbalanced)
    far = [alarm_rate_batch(baseline, shares, n, windows, seed + 1 + i) for i, n in enumerate(sizes)]
    shifted = sy.shifted(shares, target, shift)
    power = [alarm_rate_batch(baseline, shifted, n, power_windows or windows, seed + 100 + i)
             for i, n in enumerate(power_sizes)]
    return {"classes": len(shares), "baseline": "imbalanced" if imbalanced else "uniform",
            "baseline_n": baseline_n, "alpha": MonitorConfig().alpha, "target": target, "shift": shift,
            "target_base_share": float(shares[target]), "false_alarm": far, "power": power}


if __name__ == "__main__":  # python -m xaudit.monitoring.simulation
    import json
    import sys
    out = {"uniform": simulate(), "imbalanced": simulate(imbalanced=True)}
    json.dump(out, sys.stdout, indent=1)
