"""Occlusion (Zeiler & Fergus 2014): slide a window over the image, replace it by a
baseline, and record the drop of the target probability.

Parameters: ``window`` (size in pixels, default 8), ``stride`` (default window // 2),
``baseline``: ``"black"`` (0), ``"mean"`` (the image's mean colour), ``"blur"`` (a Gaussian
blur of the image, sigma = window / 2) or a number; ``batch_size`` (None = ``segmentation.default_batch(model)``).
Attribution of a pixel = mean drop ``p(target | x) - p(target | occluded)`` over the
windows covering it (positive = evidence for the target). Deterministic (no seed).
"""
from __future__ import annotations

import numpy as np

from ..errors import XauditError
from .base import Attribution, Explainer
from .segmentation import default_batch

BASELINES = ("black", "mean", "blur")


class Occlusion(Explainer):
    name = "occlusion"
    DEFAULTS = dict(window=8, stride=None, baseline="mean", batch_size=None, seed=None)  # seed: accepted, unused

    def __init__(self, **params):
        unknown = set(params) - set(self.DEFAULTS)
        if unknown:
            raise XauditError(f"occlusion has no parameter(s) {', '.join(sorted(unknown))}")
        p = dict(self.DEFAULTS)
        p.update(params)
        super().__init__(**p)

    def _baseline(self, x):
        b = self._params["baseline"]
        if b == "black":
            return np.zeros_like(x)
        if b == "mean":
            return np.broadcast_to(x.mean((0, 1), keepdims=True), x.shape).astype(x.dtype)
        if b == "blur":
            from scipy.ndimage import gaussian_filter
            s = max(float(self._params["window"]) / 2, 0.5)
            return gaussian_filter(x, sigma=(s, s, 0), mode="nearest").astype(x.dtype)
        if isinstance(b, (int, float)):
            return np.full_like(x, float(b))
        raise XauditError(f"occlusion baseline must be one of {', '.join(BASELINES)} or a number, got {b!r}")

    def windows(self, h, w):
        win = int(self._params["window"])
        stride = int(self._params["stride"] or max(win // 2, 1))
        if win < 1 or stride < 1:
            raise XauditError("occlusion window and stride must be >= 1")
        win_h, win_w = min(win, h), min(win, w)
        ys = list(range(0, max(h - win_h, 0) + 1, stride))
        xs = list(range(0, max(w - win_w, 0) + 1, stride))
        if ys[-1] != h - win_h:
            ys.append(h - win_h)
        if xs[-1] != w - win_w:
            xs.append(w - win_w)
        return [(y, x, win_h, win_w) for y in ys for x in xs]

    def _attribute(self, model, x, target, probs):
        h, w = x.shape[:2]
        base = self._baseline(x)
        wins = self.windows(h, w)
        bs = int(self._params["batch_size"] or default_batch(model))
        total = np.zeros((h, w), np.float64)
        count = np.zeros((h, w), np.float64)
        p0 = float(probs[target])
        for i in range(0, len(wins), bs):
            chunk = wins[i:i + bs]
            batch = np.repeat(x[None], len(chunk), axis=0)
            for j, (y0, x0, wh, ww) in enumerate(chunk):
                batch[j, y0:y0 + wh, x0:x0 + ww] = base[y0:y0 + wh, x0:x0 + ww]
            pr = model.predict(batch, batch_size=bs)[:, target]
            for j, (y0, x0, wh, ww) in enumerate(chunk):
                total[y0:y0 + wh, x0:x0 + ww] += p0 - float(pr[j])
                count[y0:y0 + wh, x0:x0 + ww] += 1
        att = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        return Attribution(att.astype(np.float32), meta={"windows": len(wins), "window": int(self._params["window"]),
                                                         "stride": int(self._params["stride"] or max(int(self._params["window"]) // 2, 1)),
                                                         "baseline": self._params["baseline"]})
