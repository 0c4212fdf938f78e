"""Windowed drift monitor over a capture (streaming, memory flat).

Checks and alarm rules (``alpha`` = --alpha, default 0.05)
---------------------------------------------------------
Without a baseline:

* ``class_share``: the top class of the window, share k/n with a two-sided (1-alpha)
  Clopper-Pearson interval; **violation when the interval's lower bound exceeds
  --threshold** (3 of 4 = 75 % has CI [19 %, 99 %]: no alarm). p_value = exact one-sided
  binomial P[X >= k | n, threshold].
* ``low_confidence``: share of predictions whose top-3 probabilities are all below
  --low-confidence; violation when its CI lower bound exceeds --max-low-confidence-rate
  (default 0.2).

With a baseline, the drift tests share ``alpha`` by Bonferroni weights so that the
family-wise false-alarm rate stays <= alpha (see docs/monitoring.md for the simulation):

* ``class_shift`` (0.8 alpha): per class, exact conditional one-sided test of "predicted
  more often than in the baseline" (k_w ~ Binomial(k_w + k_b, n / (n + N)) given the
  class's total over window and baseline), Bonferroni over classes (``stats.minp_adjust``;
  its minP option is disabled, see stats.MINP_MAX_N). This is the test that localises an
  adversarial push to one class.
* ``chi_square`` (0.1 alpha): chi-square test of homogeneity of window and baseline class
  counts (2 x bins; classes pooled until every expected window count is >= 5).
* ``bbsd`` (0.05 alpha): two-sample KS per softmax dimension against the baseline's
  softmax sample, Bonferroni over dimensions (window rows are a seeded reservoir sample
  of at most 5 000 per window).
* ``low_confidence`` (0.05 alpha): exact binomial test of the low-confidence rate against
  the baseline's rate (one-sided, higher).
* ``class_share`` keeps its absolute rule (it is the user's threshold, not a drift test).
* ``cbpe`` (when the baseline is calibrated): estimated accuracy = mean calibrated
  max-probability; violation when it is more than --max-accuracy-drop (0.1) below the
  baseline's reference accuracy (n >= 30).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from ..capture.reader import ReadStats, iter_records, list_files
from ..capture.schema import format_time, parse_duration, parse_time
from ..errors import BaselineError, CaptureFormatError, XauditError
from . import stats as S
from .baseline import CONF_BINS, Baseline, calibrated_confidence

WEIGHTS = {"class_shift": 0.8, "chi_square": 0.1, "bbsd": 0.05, "low_confidence": 0.05}
RESERVOIR = 5000
BUFFER = 256
MAX_WINDOWS = 100_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class MonitorConfig:
    threshold: float = 0.5
    low_confidence: float = 0.5
    alpha: float = 0.05
    max_low_confidence_rate: float = 0.2
    max_accuracy_drop: float = 0.1
    seed: int = 0


@dataclass
class WindowAcc:
    num_classes: int
    seed: int = 0
    counts: np.ndarray = None
    low: int = 0
    n: int = 0
    conf_hist: np.ndarray = None
    cbpe_sum: float = 0.0
    reservoir: np.ndarray = None
    seen: int = 0
    rng: np.random.Generator = None

    def __post_init__(self):
        self.counts = np.zeros(self.num_classes, np.int64)
        self.conf_hist = np.zeros(len(CONF_BINS) - 1, np.int64)
        self.rng = np.random.default_rng(self.seed)

    def add(self, probs: np.ndarray, low_level: float, calibration=None):
        pred = probs.argmax(1)
        np.add.at(self.counts, pred, 1)
        maxp = probs.max(1)
        k = min(3, probs.shape[1])
        top = -np.sort(-probs, axis=1)[:, :k]
        self.low += int(np.all(top < low_level, axis=1).sum())
        self.n += len(pred)
        self.conf_hist += np.histogram(maxp, CONF_BINS)[0]
        if calibration is not None:
            self.cbpe_sum += float(calibrated_confidence(calibration, maxp).sum())
        if self.reservoir is None:
            self.reservoir = np.zeros((min(RESERVOIR, max(64, len(probs))), self.num_classes), np.float32)
        fill = max(0, min(len(probs), RESERVOIR - self.seen))
        if fill:  # reservoir not full yet: bulk copy
            need = self.seen + fill
            if need > len(self.reservoir):
                grow = np.zeros((min(RESERVOIR, max(need, 2 * len(self.reservoir))), self.num_classes), np.float32)
                grow[: len(self.reservoir)] = self.reservoir
                self.reservoir = grow
            self.reservoir[self.seen:need] = probs[:fill]
            self.seen = need
        rest = probs[fill:]
        if len(rest):  # Algorithm R (seeded), vectorised draws; sequential replacement order kept
            js = self.rng.integers(0, self.seen + 1 + np.arange(len(rest)))
            for row, j in zip(rest[js < RESERVOIR], js[js < RESERVOIR]):
                self.reservoir[j] = row
            self.seen += len(rest)

    def sample(self) -> np.ndarray:
        return self.reservoir[: min(self.seen, RESERVOIR)] if self.reservoir is not None else \
            np.zeros((0, self.num_classes), np.float32)


def label(labels, i) -> str | None:
    if i is None:
        return None
    if labels and 0 <= i < len(labels) and labels[i] is not None:
        return str(labels[i])
    return None


def _v(check, window, cls=None, labels=None, value=None, threshold=None, count=None, total=None,
       p_value=None, **extra):
    d = {"check": check, "class_index": None if cls is None else int(cls),
         "class_label": label(labels, cls), "value": value, "threshold": threshold,
         "count": None if count is None else int(count), "total": None if total is None else int(total),
         "window_start": window[0], "window_end": window[1], "p_value": p_value}
    d.update(extra)
    return d


def evaluate_window(acc: WindowAcc | None, window: tuple, cfg: MonitorConfig, baseline: Baseline | None,
                    labels=None):
    """-> (result dict, violations list) for one window."""
    res = {"window_start": window[0], "window_end": window[1]}
    if acc is None or acc.n == 0:
        res.update({"status": "no data", "total": 0, "checks": {}})
        return res, []
    n = acc.n
    counts = acc.counts
    a = cfg.alpha
    viol = []
    checks = {}
    top = int(counts.argmax())
    k = int(counts[top])
    lo, hi = S.clopper_pearson(k, n, a)
    p = float(S.binom_greater_p(k, n, cfg.threshold))
    share_v = bool(lo > cfg.threshold)
    checks["class_share"] = {"class_index": top, "class_label": label(labels, top), "count": k, "total": n,
                             "share": k / n, "ci": [float(lo), float(hi)], "threshold": cfg.threshold,
                             "p_value": p, "violation": share_v,
                             "rule": f"violation when the lower bound of the two-sided {100 * (1 - a):g} % "
                                     "Clopper-Pearson interval exceeds the threshold"}
    if share_v:
        viol.append(_v("class_share", window, top, labels, k / n, cfg.threshold, k, n, p,
                       ci=[float(lo), float(hi)]))
    # low confidence
    lc = acc.low
    llo, lhi = S.clopper_pearson(lc, n, a)
    if baseline is None:
        lc_thr = cfg.max_low_confidence_rate
        lc_p = float(S.binom_greater_p(lc, n, lc_thr))
        lc_v = bool(llo > lc_thr)
        rule = "CI lower bound above --max-low-confidence-rate"
    else:
        lc_thr = baseline.low_conf_rate
        lc_p = float(S.binom_greater_p(lc, n, min(max(lc_thr, 1e-4), 1 - 1e-9)))
        lc_v = bool(lc_p < a * WEIGHTS["low_confidence"])
        rule = f"exact binomial test vs the baseline rate, p < {a * WEIGHTS['low_confidence']:g}"
    checks["low_confidence"] = {"count": int(lc), "total": n, "rate": lc / n, "ci": [float(llo), float(lhi)],
                                "level": cfg.low_confidence, "threshold": lc_thr, "p_value": lc_p,
                                "violation": lc_v, "rule": rule}
    if lc_v:
        viol.append(_v("low_confidence", window, None, labels, lc / n, lc_thr, lc, n, lc_p))
    if baseline is not None:
        p0 = baseline.shares
        pc = S.class_excess_pvalues(counts, baseline.counts)
        pc = np.where(counts / n > p0, pc, 1.0)
        padj = S.minp_adjust(pc, baseline.counts, n)
        level = a * WEIGHTS["class_shift"]
        flagged = np.where((padj < level) & (counts / n > p0))[0]
        checks["class_shift"] = {"level": level, "min_p_adjusted": float(padj.min()),
                                 "classes": [int(i) for i in flagged], "violation": bool(len(flagged))}
        for i in flagged:
            viol.append(_v("class_shift", window, i, labels, float(counts[i] / n), float(p0[i]), counts[i], n,
                           float(padj[i]), baseline_share=float(baseline.shares[i])))
        chi = S.chi_square_homogeneity(counts, baseline.counts)
        level = a * WEIGHTS["chi_square"]
        chi_v = chi["p_value"] is not None and chi["p_value"] < level
        checks["chi_square"] = {**chi, "level": level, "violation": bool(chi_v)}
        if chi_v:
            p0s = S.smoothed_shares(baseline.counts)
            resid = (counts - n * p0s) / np.sqrt(n * p0s)
            c = int(resid.argmax())
            viol.append(_v("chi_square", window, c, labels, chi["statistic"], level, counts[c], n, chi["p_value"],
                           df=chi["df"]))
        sample = S.quantize_probs(acc.sample())   # the baseline's grid (see stats.BBSD_DECIMALS)
        if len(sample) >= 2:
            d, pks = S.ks_pvalues(sample, baseline.samples_sorted)
            padj = np.minimum(1.0, pks * len(pks))
            level = a * WEIGHTS["bbsd"]
            j = int(padj.argmin())
            bb_v = bool(padj[j] < level)
            checks["bbsd"] = {"level": level, "min_p_adjusted": float(padj[j]), "dimension": j,
                              "ks_statistic": float(d[j]), "sample": int(len(sample)),
                              "dimensions_flagged": [int(x) for x in np.where(padj < level)[0]],
                              "violation": bb_v}
            if bb_v:
                viol.append(_v("bbsd", window, j, labels, float(d[j]), level, counts[j], n, float(padj[j])))
        cal = baseline.calibration
        if cal:
            est = acc.cbpe_sum / n
            ref = float(cal["reference_accuracy"])
            cb_v = bool(n >= 30 and est < ref - cfg.max_accuracy_drop)
            checks["cbpe"] = {"estimated_accuracy": est, "reference_accuracy": ref,
                              "max_drop": cfg.max_accuracy_drop, "violation": cb_v}
            if cb_v:
                viol.append(_v("cbpe", window, None, labels, est, ref - cfg.max_accuracy_drop, None, n, None))
    res.update({"status": "ok", "total": n, "class_counts": [int(x) for x in counts],
                "class_shares": [float(x) for x in counts / n], "top_class": top,
                "top_class_label": label(labels, top),
                "confidence_histogram": [int(x) for x in acc.conf_hist], "checks": checks,
                "violations": len(viol)})
    return res, viol


@dataclass
class MonitorResult:
    windows: list = field(default_factory=list)
    violations: list = field(default_factory=list)
    read: ReadStats = None
    labels: list | None = None
    num_classes: int = 0
    accs: list = field(default_factory=list)  # WindowAcc per window (None = no data)


def run_monitor(capture, baseline: Baseline | None = None, cfg: MonitorConfig | None = None, start=None,
                end=None, window: str | timedelta | None = None, progress=None) -> MonitorResult:
    cfg = cfg or MonitorConfig()
    start = parse_time(start, "--start") if start is not None else None
    end = parse_time(end, "--end") if end is not None else None
    if start and end and end <= start:
        raise XauditError(f"--end ({format_time(end)}) must be after --start ({format_time(start)})")
    width = None
    if window is not None:
        width = window if isinstance(window, timedelta) else parse_duration(window)
    fs, files = list_files(str(capture))
    if not files:
        raise CaptureFormatError(f"capture is empty: no .jsonl files under {capture}")
    stats = ReadStats()
    labels = list(baseline.labels) if baseline is not None and baseline.labels else None
    seen_labels: dict = {}
    accs: dict[int, WindowAcc] = {}
    pending: dict[int, list] = {}
    num_classes = baseline.num_classes if baseline is not None else None
    origin = start or EPOCH
    wsec = width.total_seconds() if width else None
    calibration = baseline.calibration if baseline is not None else None
    it = iter_records(capture, start, end, stats, files=(fs, files))
    if progress:
        it = progress(it)
    for rec in it:
        probs = rec.outputs
        if num_classes is None:
            num_classes = probs.shape[1]
        if probs.shape[1] != num_classes:
            if baseline is not None and not accs:
                raise BaselineError(
                    f"baseline of another model: it has {num_classes} classes, the capture's predictions have "
                    f"{probs.shape[1]}")
            stats.bad("class count mismatch")
            stats.records -= 1
            stats.predictions -= probs.shape[0]
            continue
        idx = 0 if wsec is None else int(math.floor((rec.time - origin).total_seconds() / wsec))
        acc = accs.get(idx)
        if acc is None:
            acc = accs[idx] = WindowAcc(num_classes, seed=cfg.seed + idx)
            pending[idx] = []
        buf = pending[idx]
        buf.append(probs)
        if len(buf) >= BUFFER:  # vectorised accumulation in blocks (memory bounded per window)
            acc.add(np.concatenate(buf), cfg.low_confidence, calibration)
            buf.clear()
        lab = getattr(rec, "labels", None)
        if lab:
            seen_labels.update(lab)
    for idx, buf in pending.items():
        if buf:
            accs[idx].add(np.concatenate(buf), cfg.low_confidence, calibration)
    if stats.lines == 0 and stats.files_pruned == 0:
        raise CaptureFormatError(f"capture is empty: {stats.files} file(s) under {capture} hold no records")
    if stats.records == 0 and stats.outside_window == 0 and stats.files_pruned == 0:
        raise CaptureFormatError(f"capture has no valid records ({stats.malformed} malformed: "
                                 f"{dict(stats.malformed_reasons)})")
    if labels is None and seen_labels and num_classes:
        labels = [seen_labels.get(i) for i in range(num_classes)]
    # window list
    if wsec is None:
        ws = start or (parse_time(stats.first_time) if stats.first_time else None)
        we = end or (parse_time(stats.last_time) + timedelta(seconds=1) if stats.last_time else None)
        spans = [(0, ws, we)]
    else:
        lo = 0 if start else (min(accs) if accs else 0)
        if end:
            hi = int(math.ceil((end - origin).total_seconds() / wsec)) - 1
        else:
            hi = max(accs) if accs else lo
        if hi - lo + 1 > MAX_WINDOWS:
            raise XauditError(f"--window {window} gives {hi - lo + 1} windows (max {MAX_WINDOWS}); use a wider window")
        spans = []
        for i in range(lo, hi + 1):
            s0 = origin + timedelta(seconds=i * wsec)
            s1 = origin + timedelta(seconds=(i + 1) * wsec)
            if start and s0 < start:
                s0 = start
            if end and s1 > end:
                s1 = end
            spans.append((i, s0, s1))
    out = MonitorResult(read=stats, labels=labels, num_classes=num_classes or 0)
    for wi, (i, s0, s1) in enumerate(spans):
        win = (format_time(s0) if s0 else None, format_time(s1) if s1 else None)
        res, viol = evaluate_window(accs.get(i), win, cfg, baseline, labels)
        res["index"] = wi
        out.windows.append(res)
        out.violations.extend(viol)
        out.accs.append(accs.get(i))
    return out


def summary_lines(result: MonitorResult, cfg: MonitorConfig) -> list[str]:
    lines = []
    for w in result.windows:
        head = f"[{w['window_start']} .. {w['window_end']})"
        if w["status"] == "no data":
            lines.append(f"{head} no data")
            continue
        cs = w["checks"]["class_share"]
        lab = f" ('{cs['class_label']}')" if cs["class_label"] else ""
        lo, hi = cs["ci"]
        verdict = "VIOLATION" if cs["violation"] else "ok"
        lines.append(f"{head} Class {cs['class_index']}{lab} predicted in {cs['count']} of {cs['total']} "
                     f"({100 * cs['share']:.1f} %), {100 * (1 - cfg.alpha):g} % CI {100 * lo:.1f}-{100 * hi:.1f} %, "
                     f"threshold {100 * cfg.threshold:g} %: {verdict}")
        lc = w["checks"]["low_confidence"]
        lines.append(f"    low confidence (top-3 all < {cfg.low_confidence:g}): {lc['count']} of {lc['total']} "
                     f"({100 * lc['rate']:.1f} %): {'VIOLATION' if lc['violation'] else 'ok'}")
        for name in ("class_shift", "chi_square", "bbsd", "cbpe"):
            c = w["checks"].get(name)
            if not c:
                continue
            if name == "class_shift":
                txt = f"classes {c['classes']}" if c["classes"] else f"min adjusted p {c['min_p_adjusted']:.3g}"
            elif name == "chi_square":
                txt = "skipped (too few bins)" if c["p_value"] is None else \
                    f"chi2 {c['statistic']:.1f}, df {c['df']}, p {c['p_value']:.3g}"
            elif name == "bbsd":
                txt = f"max KS {c['ks_statistic']:.3f} (dim {c['dimension']}), adjusted p {c['min_p_adjusted']:.3g}"
            else:
                txt = f"estimated accuracy {100 * c['estimated_accuracy']:.1f} % vs reference " \
                      f"{100 * c['reference_accuracy']:.1f} %"
            lines.append(f"    {name}: {txt}: {'VIOLATION' if c['violation'] else 'ok'}")
    r = result.read
    lines.append(f"read {r.records} record(s) ({r.predictions} prediction(s)) from {r.files} file(s); "
                 f"{r.malformed} malformed line(s) skipped"
                 + (f" {dict(r.malformed_reasons)}" if r.malformed else "")
                 + f"; {len(result.violations)} violation(s)")
    return lines
