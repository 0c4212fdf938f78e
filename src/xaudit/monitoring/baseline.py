"""Baselines: what normal predictions look like (from reference images or a capture window).

A baseline JSON holds the model identity (labels, number of classes, sha256 when the
model is a file), predicted-class counts and shares, the max-probability distribution,
the low-confidence rate, a bounded random sample of softmax rows (for BBSD), a few
example inputs per class, and optionally a calibration map (from labelled reference
images) used for the CBPE-style label-free accuracy estimate.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import BaselineError
from .stats import quantize_probs

FORMAT = "xaudit-baseline/1"
CONF_BINS = np.linspace(0.0, 1.0, 21)
MAX_SAMPLES = 2000
MAX_EXAMPLES = 8
MAX_PER_CLASS = 20


def low_confidence_mask(probs: np.ndarray, level: float = 0.5) -> np.ndarray:
    """The seed's rule: the top-3 classes all below ``level`` (= the top-1 below it)."""
    k = min(3, probs.shape[1])
    top = -np.sort(-probs, axis=1)[:, :k]
    return np.all(top < level, axis=1)


def fit_calibration(max_prob: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    """Histogram-binning calibration of the max probability (equal-mass bins, add-one
    smoothing): confidence -> expected accuracy. CBPE then estimates a window's accuracy
    as the mean calibrated confidence."""
    max_prob = np.asarray(max_prob, np.float64)
    correct = np.asarray(correct, np.float64)
    bins = int(max(1, min(bins, len(max_prob) // 10)))
    edges = np.unique(np.quantile(max_prob, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([0.0, 1.0])
    edges[0], edges[-1] = 0.0, 1.0 + 1e-9
    idx = np.clip(np.searchsorted(edges, max_prob, side="right") - 1, 0, len(edges) - 2)
    acc = [(correct[idx == b].sum() + 0.5) / ((idx == b).sum() + 1.0) for b in range(len(edges) - 1)]
    ece = float(np.abs(max_prob.mean() - correct.mean()))
    return {"method": "histogram", "edges": [float(e) for e in edges], "accuracy": [float(a) for a in acc],
            "n": int(len(max_prob)), "reference_accuracy": float(correct.mean()),
            "uncalibrated_confidence": float(max_prob.mean()), "confidence_gap": ece}


def calibrated_confidence(calibration: dict, max_prob: np.ndarray) -> np.ndarray:
    edges = np.asarray(calibration["edges"])
    acc = np.asarray(calibration["accuracy"])
    idx = np.clip(np.searchsorted(edges, max_prob, side="right") - 1, 0, len(acc) - 1)
    return acc[idx]


def build_baseline(probs: np.ndarray, *, model_info: dict, source: dict, labels=None,
                   examples: dict | None = None, true_labels=None, seed: int = 0,
                   max_samples: int = MAX_SAMPLES, low_confidence: float = 0.5) -> dict:
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise BaselineError("no predictions to build a baseline from")
    n, c = probs.shape
    pred = probs.argmax(1)
    counts = np.bincount(pred, minlength=c)
    maxp = probs.max(1)
    hist, _ = np.histogram(maxp, CONF_BINS)
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(n, size=min(n, max_samples), replace=False))
    per_class_conf = [float(maxp[pred == k].mean()) if counts[k] else None for k in range(c)]
    out = {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "model": {**model_info, "num_classes": int(c),
                  "labels": list(labels) if labels is not None else model_info.get("labels")},
        "n": int(n),
        "class_counts": [int(x) for x in counts],
        "class_shares": [float(x) for x in counts / n],
        "confidence": {"bins": [float(b) for b in CONF_BINS], "histogram": [int(h) for h in hist],
                       "mean": float(maxp.mean()), "per_class_mean": per_class_conf},
        "low_confidence": {"level": float(low_confidence),
                           "rate": float(low_confidence_mask(probs, low_confidence).mean())},
        "softmax_samples": quantize_probs(probs[take]).tolist(),
        "per_class_softmax": {str(k): np.round(probs[np.flatnonzero(pred == k)[:MAX_PER_CLASS]], 5).tolist()
                              for k in range(c) if counts[k]},
        "examples": {str(k): v[:MAX_EXAMPLES] for k, v in (examples or {}).items()},
        "calibration": None,
    }
    if true_labels is not None:
        tl = np.asarray(true_labels)
        ok = tl >= 0
        if ok.sum() >= 10:
            out["calibration"] = fit_calibration(maxp[ok], (pred[ok] == tl[ok]))
    return out


class Baseline:
    """A loaded, validated baseline."""

    def __init__(self, data: dict, path=None):
        self.data = data
        self.path = str(path) if path else None
        try:
            self.counts = np.asarray(data["class_counts"], np.float64)
            self.num_classes = int(data["model"]["num_classes"])
            self.labels = data["model"].get("labels")
            samples = np.asarray(data["softmax_samples"], np.float64)
            self.low_conf_rate = float(data["low_confidence"]["rate"])
            self.conf_hist = np.asarray(data["confidence"]["histogram"], np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise BaselineError(f"malformed baseline {path or ''}: missing or bad field {e}".strip()) from None
        if self.counts.ndim != 1 or len(self.counts) != self.num_classes or self.counts.sum() <= 0:
            raise BaselineError(f"malformed baseline {path or ''}: class_counts do not match num_classes")
        if samples.ndim != 2 or samples.shape[1] != self.num_classes or len(samples) < 2:
            raise BaselineError(f"malformed baseline {path or ''}: softmax_samples must be (n, {self.num_classes})")
        if self.labels is not None and len(self.labels) != self.num_classes:
            self.labels = None
        self.samples_sorted = np.sort(quantize_probs(samples), axis=0)   # same grid as the windows
        self.shares = self.counts / self.counts.sum()
        self.calibration = data.get("calibration")

    @classmethod
    def load(cls, path) -> "Baseline":
        p = Path(path)
        if not p.is_file():
            raise BaselineError(f"baseline not found: {p}")
        try:
            data = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise BaselineError(f"malformed baseline {p}: not JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BaselineError(f"malformed baseline {p}: not an xaudit baseline (format {FORMAT})")
        return cls(data, p)

    def save(self, path):
        Path(path).write_text(json.dumps(self.data))


def save_baseline(data: dict, path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data))
    return p
