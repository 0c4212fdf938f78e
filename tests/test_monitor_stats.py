"""The vectorised simulation (xaudit.monitoring.simulation.evaluate_batch) decides exactly
like the monitor's per-window evaluate_window, so the simulated false-alarm rates and power
are those of the real monitor; plus the statistical building blocks against scipy."""
import numpy as np
import pytest
from scipy import stats as st

from xaudit.monitoring import stats as S
from xaudit.monitoring import synthetic as sy
from xaudit.monitoring.monitor import MonitorConfig, WindowAcc, evaluate_window
from xaudit.monitoring.simulation import draw_windows, evaluate_batch, make_baseline

CHECKS = ("class_share", "low_confidence", "class_shift", "chi_square", "bbsd")


@pytest.mark.parametrize("n,target,mass", [(50, 14, 0.0), (100, 14, 0.1), (300, 3, 0.05), (40, 2, 0.5)])
def test_batch_decisions_equal_evaluate_window(n, target, mass):
    base, shares = make_baseline(seed=1)
    rng = np.random.default_rng(n)
    probs = draw_windows(30, n, sy.shifted(shares, target, mass) if mass else shares, rng)
    batch = evaluate_batch(probs, base)
    cfg = MonitorConfig()
    fired = 0
    for w in range(len(probs)):
        acc = WindowAcc(probs.shape[2], seed=w)
        acc.add(probs[w], cfg.low_confidence)
        _, viol = evaluate_window(acc, ("a", "b"), cfg, base)
        got = {v["check"] for v in viol}
        for c in CHECKS:
            assert (c in got) == bool(batch[c][w]), (w, c, got)
        assert bool(viol) == bool(batch["any"][w])
        fired += bool(viol)
    if mass >= 0.1:
        assert fired > 0


def test_ks_pvalues_match_scipy():
    rng = np.random.default_rng(0)
    base = np.sort(rng.random((2000, 3)) ** 1.1, axis=0)
    for n in (50, 200, 1000):
        win = rng.random((n, 3))
        d, p = S.ks_pvalues(win, base)
        db, pb = S.ks_pvalues_batch(win[None], base)
        for j in range(3):
            ref = st.ks_2samp(win[:, j], base[:, j])
            assert d[j] == pytest.approx(ref.statistic) and db[0, j] == pytest.approx(ref.statistic)
            assert p[j] == pytest.approx(ref.pvalue, rel=0.1, abs=2e-3)


def test_clopper_pearson_and_three_of_four():
    lo, hi = S.clopper_pearson(3, 4, 0.05)
    ref = st.binomtest(3, 4).proportion_ci(0.95, method="exact")
    assert (float(lo), float(hi)) == pytest.approx((ref.low, ref.high))
    assert lo < 0.5  # 3 of 4 is not an alarm at threshold 0.5
    lo, _ = S.clopper_pearson(322, 400, 0.05)
    assert lo > 0.5


def test_bbsd_quiet_on_clean_traffic_of_a_confident_model():
    """Regression: the baseline stores softmax samples on a 1e-6 grid, capture files keep tiny
    probabilities (6 significant digits); KS on the raw values flagged clean traffic of the
    shipped sign model (D = 0.45 at 0). Both sides are compared on the baseline's grid."""
    import xaudit
    from xaudit.data import model_path
    from xaudit.data.generate import make_signs
    from xaudit.monitoring.baseline import Baseline, build_baseline
    m = xaudit.load_model(str(model_path("signs.pt")))
    ref = make_signs(300, seed=1)[0].astype(np.float32) / 255
    cur = make_signs(200, seed=0)[0].astype(np.float32) / 255
    base = Baseline(build_baseline(m.predict(ref), model_info={"num_classes": 43}, source={}))
    p = m.predict(cur).astype(np.float32)
    served = np.array([[float(f"{v:g}") for v in row] for row in p])   # what a capture line holds
    assert (served[served > 0] < 5e-7).mean() > 0.1       # the tiny values that used to trip KS
    for probs in (served, p):
        acc = WindowAcc(43, seed=0)
        acc.add(probs, MonitorConfig().low_confidence)
        res, viol = evaluate_window(acc, ("a", "b"), MonitorConfig(), base)
        assert not res["checks"]["bbsd"]["violation"], res["checks"]["bbsd"]
        assert viol == [], viol
