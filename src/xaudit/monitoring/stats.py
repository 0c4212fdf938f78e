"""Vectorised statistics of the monitor (numpy/scipy only)."""
from __future__ import annotations

from functools import lru_cache

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


def chi_square_homogeneity(counts, base_counts, min_expected: float = 5.0) -> dict:
    """Chi-square test of homogeneity of the window's class counts and the baseline's
    (2 x bins table; accounts for the baseline's own sampling noise). Classes are pooled
    (rarest first) until every bin's expected window count under the baseline shares is
    >= min_expected."""
    w = np.asarray(counts, dtype=np.float64)
    b = np.asarray(base_counts, dtype=np.float64)
    n, m = w.sum(), b.sum()
    if n == 0 or m == 0:
        return {"statistic": None, "df": 0, "p_value": None, "bins": 0}
    # bins from the baseline alone (binning on the window's own counts would make the
    # test anti-conservative): expected window count n * b / m >= min_expected
    bins = merge_bins(n * b / m, min_expected)
    if len(bins) < 2:
        return {"statistic": None, "df": 0, "p_value": None, "bins": len(bins)}
    ow = np.array([w[x].sum() for x in bins])
    ob = np.array([b[x].sum() for x in bins])
    tot = ow + ob
    ew, eb = n * tot / (n + m), m * tot / (n + m)
    stat = float(((ow - ew) ** 2 / ew).sum() + ((ob - eb) ** 2 / eb).sum())
    df = len(bins) - 1
    return {"statistic": stat, "df": df, "p_value": float(st.chi2.sf(stat, df)), "bins": len(bins)}


def class_excess_pvalues(counts, base_counts) -> np.ndarray:
    """Per class, exact conditional one-sided test that the class is predicted more often
    in the window than in the baseline: given the class's total k_w + k_b over both
    samples, k_w ~ Binomial(k_w + k_b, n / (n + N)) under H0 (two Poisson rates equal)."""
    w = np.asarray(counts, dtype=np.float64)
    b = np.asarray(base_counts, dtype=np.float64)
    n, m = w.sum(), b.sum()
    if n == 0:
        return np.ones_like(w)
    return st.binom.sf(w - 1, w + b, n / (n + m))


def ks_sf(d, n: int, m: int) -> np.ndarray:
    """Two-sample KS p-value: Kolmogorov limit with Stephens' correction,
    Q_KS((sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) D), ne = n m / (n + m) (Numerical Recipes'
    probks; accurate for ne >= 4, and ~100x faster than scipy's exact kstwo)."""
    d = np.asarray(d, dtype=np.float64)
    en = n * m / (n + m) if n and m else 0.0
    if en <= 0:
        return np.ones_like(d)
    se = np.sqrt(en)
    return np.clip(st.kstwobign.sf((se + 0.12 + 0.11 / se) * d), 0.0, 1.0)


# BBSD compares softmax values on one grid: the baseline stores its samples rounded to 6
# decimals, while capture files keep 6 *significant* digits (1e-9 survives). Compared raw, a
# confident model's tiny probabilities (stored 0.0 in the baseline, 3e-11 in the window) made KS
# flag clean traffic (D = 0.45 on a class at p ~ 1e-23). Both sides are rounded to this grid.
BBSD_DECIMALS = 6


def quantize_probs(p: np.ndarray) -> np.ndarray:
    """Softmax values on the BBSD grid (``BBSD_DECIMALS`` decimals), float64."""
    return np.round(np.asarray(p, np.float64), BBSD_DECIMALS)


def ks_pvalues(window: np.ndarray, base_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample KS per column. window (n, C), base_sorted (m, C) sorted per column.
    Returns (D (C,), p (C,)), p from the asymptotic Kolmogorov distribution with
    Stephens' small-sample correction (see :func:`ks_sf`)."""
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
    return d, ks_sf(d, n, m)


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
    return d, ks_sf(d, n, m)


# --------------------------------------------------------------------------- class_shift, minP
MINP_DRAWS = 2000
# minP is OFF (0): it raised the power at n = 100 from 0.81 to 0.90 but its predictive null is
# calibrated only on average over baselines; for a fixed baseline the simulated false-alarm
# rate reached 0.06 at n = 200 (alpha 0.05). Bonferroni is used for every window size.
MINP_MAX_N = 0


def class_excess_pvalues_2d(counts, base_counts, n, m) -> np.ndarray:
    """:func:`class_excess_pvalues` for rows of windows (and baselines): counts (B, C),
    base_counts (B, C) or (C,); classes not above their baseline share get p = 1."""
    w = np.asarray(counts, dtype=np.float64)
    b = np.broadcast_to(np.asarray(base_counts, dtype=np.float64), w.shape)
    p = st.binom.sf(w - 1, w + b, n / (n + m))
    return np.where(w / n > b / m, p, 1.0)


@lru_cache(maxsize=512)
def _minp_null(base_key: tuple, n: int, draws: int, seed: int) -> np.ndarray:
    b = np.asarray(base_key, dtype=np.float64)
    m = int(b.sum())
    rng = np.random.default_rng([seed, n, len(b)])
    # null windows given the observed baseline: shares from their posterior given the baseline
    # counts (Dirichlet(b + 1/2), Jeffreys), window counts multinomial (Dirichlet-multinomial)
    p = rng.dirichlet(b + 0.5, size=draws)
    ws = np.stack([rng.multinomial(n, q) for q in p])
    return np.sort(class_excess_pvalues_2d(ws, b, n, m).min(1))


def minp_adjust(pvalues, base_counts, n: int, draws: int = MINP_DRAWS, seed: int = 0) -> np.ndarray:
    """Single-step minP (Westfall-Young) adjustment of the per-class p-values of
    :func:`class_excess_pvalues`: adjusted p_i = P[min_j P*_j <= p_i] under the null that
    the window comes from the baseline's distribution, given the observed baseline counts
    (window counts drawn from the posterior predictive: shares ~ Dirichlet(baseline + 1/2),
    counts ~ Multinomial(n, shares); ``draws`` seeded draws, cached per (baseline, n)),
    with the +1 correction
    (1 + #{min P* <= p_i}) / (draws + 1). Unlike Bonferroni it accounts for the discreteness
    of the exact tests (most classes cannot reach tiny p-values at small n), which gives
    more power at the same family-wise level. Applied to windows of at most MINP_MAX_N
    predictions (currently 0 = disabled, see MINP_MAX_N); Bonferroni otherwise. Never above
    the Bonferroni adjustment."""
    pv = np.asarray(pvalues, dtype=np.float64)
    bonf = np.minimum(1.0, pv * pv.shape[-1])
    if n <= 0:
        return np.ones_like(pv)
    if n > MINP_MAX_N:
        return bonf
    key = tuple(int(x) for x in np.asarray(base_counts).ravel())
    null = _minp_null(key, int(n), int(draws), int(seed))
    adj = (1.0 + np.searchsorted(null, pv, side="right")) / (draws + 1.0)
    return np.minimum(bonf, adj)
