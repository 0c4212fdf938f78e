"""Vectorised statistics of the monitor (numpy/scipy only)."""
from __future__ import annotations

import numpy as np
from scipy import stats as st


def clopper_pearson(k, n, alpha=0.05):
    """Two-sided exact (1 - alpha) binomial interval; vectorised. n == 0 -> (0, 1)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, st.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, st.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    lo = np.where(n > 0, lo, 0.0)
    hi = np.where(n > 0, hi, 1.0)
    return lo, hi


def binom_greater_p(k, n, p0):
    """One-sided exact p-value of H0: share <= p0 against share > p0 (P[X >= k])."""
    k = np.asarray(k)
    return np.where(np.asarray(n) > 0, st.binom.sf(k - 1, n, p0), 1.0)


def smoothed_shares(counts) -> np.ndarray:
    """Baseline class shares with add-1/2 smoothing (no class has share 0)."""
    c = np.asarray(counts, dtype=np.float64)
    return (c + 0.5) / (c.sum() + 0.5 * len(c))


def merge_bins(expected: np.ndarray, min_expected: float = 5.0) -> list[np.ndarray]:
    """Group class indices so every group's expected count is >= min_expected: classes
    with expected >= min_expected keep their own bin; the others are pooled, smallest
    first, into consecutive groups that reach min_expected; a remainder is added to the
    smallest group. Returns a list of index arrays."""
    order = np.argsort(expected, kind="stable")
    big = [np.array([i]) for i in order if expected[i] >= min_expected]
    small = [i for i in order if expected[i] < min_expected]
    groups, cur, acc = [], [], 0.0
    for i in small:
        cur.append(i)
        acc += expected[i]
        if acc >= min_expected:
            groups.append(np.array(cur))
            cur, acc = [], 0.0
    bins = groups + big
    if cur:
        if bins:
            j = int(np.argmin([expected[b].sum() for b in bins]))
            bins[j] = np.concatenate([bins[j], np.array(cur)])
        else:
            bins = [np.array(cur)]
    return bins


def chi_square(counts, probs, min_expected: float = 5.0) -> dict:
    """Chi-square goodness of fit of window counts against baseline shares (merging
    classes with expected count < min_expected)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    exp = n * np.asarray(probs, dtype=np.float64)
    bins = merge_bins(exp, min_expected)
    if n == 0 or len(bins) < 2:
        return {"statistic": None, "df": 0, "p_value": None, "bins": len(bins)}
    o = np.array([counts[b].sum() for b in bins])
    e = np.array([exp[b].sum() for b in bins])
    stat = float(((o - e) ** 2 / e).sum())
    df = len(bins) - 1
    return {"statistic": stat, "df": df, "p_value": float(st.chi2.sf(stat, df)), "bins": len(bins)}


def ks_pvalues(window: np.ndarray, base_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample KS per column. window (n, C), base_sorted (m, C) sorted per column.
    Returns (D (C,), p (C,)), p from the asymptotic Kolmogorov distribution with
    n_eff = n m / (n + m) (scipy's kstwo as ks_2samp's 'asymp' method)."""
    n, c = window.shape
    m = base_sorted.shape[0]
    w = np.sort(window, axis=0)
    allv = np.concatenate([w, base_sorted], axis=0)  # evaluate the ECDF gap at all points
    d = np.zeros(c)
    for j in range(c):
        v = allv[:, j]
        cw = np.searchsorted(w[:, j], v, side="right") / n
        cb = np.searchsorted(base_sorted[:, j], v, side="right") / m
        d[j] = np.abs(cw - cb).max()
    en = n * m / (n + m)
    p = st.kstwo.sf(d, np.round(en)) if en >= 1 else np.ones(c)
    return d, np.clip(p, 0, 1)


def ks_pvalues_batch(windows: np.ndarray, base_sorted: np.ndarray):
    """KS per (window, column): windows (W, n, C) -> D (W, C), p (W, C). Vectorised for
    the simulation tests."""
    W, n, c = windows.shape
    m = base_sorted.shape[0]
    w = np.sort(windows, axis=1)
    d = np.zeros((W, c))
    for j in range(c):
        b = base_sorted[:, j]
        wj = w[:, :, j]  # (W, n)
        # ECDF gap at the window points (both sides) and at the baseline points
        cb_at_w = np.searchsorted(b, wj, side="right") / m
        cb_at_w_left = np.searchsorted(b, wj, side="left") / m
        i = np.arange(1, n + 1) / n
        d1 = np.max(np.abs(i - cb_at_w), axis=1)
        d2 = np.max(np.abs((i - 1 / n) - cb_at_w_left), axis=1)
        d[:, j] = np.maximum(d1, d2)
    en = n * m / (n + m)
    return d, np.clip(st.kstwo.sf(d, np.round(en)), 0, 1)
