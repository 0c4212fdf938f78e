"""LIME on superpixels (Ribeiro et al. 2016), native and batched, with ``lime``'s semantics.

Same algorithm as ``lime.lime_image.LimeImageExplainer`` (lime 0.2.0.1):

* superpixels (default quickshift kernel_size=4, max_dist=200, ratio=0.2);
* ``num_samples`` binary on/off vectors drawn uniformly, the first one all ones;
  hidden superpixels take their mean colour (``hide_color=None``) or ``hide_color``;
* distance = cosine distance to the all-ones vector, kernel
  ``sqrt(exp(-d**2 / kernel_width**2))`` with ``kernel_width=0.25``;
* weighted ridge regression (alpha=1, intercept) of the target probability on the
  binary vectors; R^2 (weighted) of that surrogate is reported as ``r2``;
* feature selection ``auto``: all superpixels when ``num_features`` is None (lime_image's
  default 100000), ``forward_selection`` when ``num_features <= 6``,
  ``highest_weights`` otherwise.

Differences (all about speed and reproducibility): the model is fed in large batches
(``batch_size``, default ``default_batch(model)``: the adapter's batch size capped at
~2**16 pixels per batch; lime uses 10), the masks are composed vectorised, and both
the segmentation and the sampling are seeded from one ``seed`` through explicit
generators (the sampling generator is a private ``numpy.random.RandomState(seed)``, the
same stream lime draws from when given ``random_state=seed``, so same segmentation +
same seed gives the same samples as lime). ``vary`` chooses what the seed drives:
``"both"`` (default), ``"segmentation"`` (sampling fixed at ``fixed_seed``) or
``"sampling"`` (segmentation fixed at ``fixed_seed``).
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import XauditError
from .base import Attribution, Explainer, Explanation, _jsonable, model_summary
from .segmentation import compose, default_batch, mean_colour_image, paint, predict_masks, segment, segmentation_params

VARY = ("both", "segmentation", "sampling")


def seeds_for(seed, vary: str, fixed_seed: int = 0) -> tuple[int, int]:
    """(segmentation seed, sampling seed) for ``seed`` under ``vary``."""
    if vary not in VARY:
        raise XauditError(f"--vary must be one of {', '.join(VARY)}, got {vary!r}")
    s = 0 if seed is None else int(seed)
    return (s if vary in ("both", "segmentation") else int(fixed_seed),
            s if vary in ("both", "sampling") else int(fixed_seed))


def kernel(d, width=0.25):
    return np.sqrt(np.exp(-(d ** 2) / width ** 2))


def cosine_to_ones(data: np.ndarray) -> np.ndarray:
    """Cosine distance of each binary row to the all-ones row (as sklearn computes it)."""
    data = np.asarray(data, dtype=np.float64)
    k = data.shape[1]
    norms = np.sqrt((data ** 2).sum(1))
    dots = data.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = dots / (norms * np.sqrt(k))
    sim = np.where(norms == 0, 0.0, sim)
    return np.clip(1.0 - sim, 0.0, 2.0)


def weighted_ridge(X, y, w, alpha=1.0):
    """Ridge with intercept and sample weights (sklearn ``Ridge(alpha).fit(X, y, w)``).
    Returns (coef, intercept, weighted R^2)."""
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    w = np.asarray(w, np.float64)
    sw = w.sum()
    xm = (w[:, None] * X).sum(0) / sw
    ym = (w * y).sum() / sw
    Xc = X - xm
    yc = y - ym
    # einsum (no BLAS thread pool: on a busy machine its hand-offs cost more than the maths)
    A = np.einsum("ni,n,nj->ij", Xc, w, Xc, optimize=False) + alpha * np.eye(X.shape[1])
    coef = np.linalg.solve(A, np.einsum("ni,n->i", Xc, w * yc, optimize=False)) if X.shape[1] else np.zeros(0)
    intercept = ym - xm @ coef
    pred = X @ coef + intercept
    ss_res = (w * (y - pred) ** 2).sum()
    ss_tot = (w * (y - ym) ** 2).sum()
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return coef, float(intercept), float(r2)


def select_features(X, y, w, num_features, method="auto"):
    k = X.shape[1]
    if num_features is None or num_features >= k or method == "none":
        return np.arange(k)
    if method == "auto":
        method = "forward_selection" if num_features <= 6 else "highest_weights"
    if method == "highest_weights":
        coef, _, _ = weighted_ridge(X, y, w, alpha=0.01)
        order = np.argsort(-np.abs(coef * X[0]), kind="stable")
        return np.sort(order[:num_features])
    if method == "forward_selection":
        used: list[int] = []
        for _ in range(num_features):
            best, best_score = None, -np.inf
            for f in range(k):
                if f in used:
                    continue
                _, _, score = weighted_ridge(X[:, used + [f]], y, w, alpha=0.0 + 1e-12)
                if score > best_score:
                    best, best_score = f, score
            used.append(best)
        return np.array(sorted(used))
    raise XauditError(f"unknown feature_selection {method!r}: auto, none, highest_weights, forward_selection")


class Lime(Explainer):
    """LIME. Parameters: ``num_samples`` (1000), ``num_features`` (None = all),
    ``segmentation`` (quickshift|slic|felzenszwalb), ``segmentation_params`` (dict),
    ``hide_color`` (None = superpixel mean, or a number / RGB triple in [0,1]),
    ``kernel_width`` (0.25), ``alpha`` (1.0), ``feature_selection`` (auto),
    ``batch_size`` (None = ``segmentation.default_batch(model)``), ``seed`` (0), ``vary`` (both), ``fixed_seed`` (0)."""

    name = "lime"
    uses_seed = True
    DEFAULTS = dict(num_samples=1000, num_features=None, segmentation="quickshift", segmentation_params=None,
                    hide_color=None, kernel_width=0.25, alpha=1.0, feature_selection="auto",
                    batch_size=None, seed=0, vary="both", fixed_seed=0)

    def __init__(self, **params):
        unknown = set(params) - set(self.DEFAULTS)
        if unknown:
            raise XauditError(f"lime has no parameter(s) {', '.join(sorted(unknown))}")
        p = dict(self.DEFAULTS)
        p.update(params)
        super().__init__(**p)

    # ------------------------------------------------------------------ pieces
    def segments_for(self, x, seed=None):
        p = self._params
        seg_seed, _ = seeds_for(p["seed"] if seed is None else seed, p["vary"], p["fixed_seed"])
        return segment(x, p["segmentation"], seg_seed, **(p["segmentation_params"] or {}))

    def masks_for(self, k: int, seed=None) -> np.ndarray:
        p = self._params
        n = int(p["num_samples"])
        if n < 2:
            raise XauditError("lime needs --num-samples >= 2")
        _, samp_seed = seeds_for(p["seed"] if seed is None else seed, p["vary"], p["fixed_seed"])
        rs = np.random.RandomState(samp_seed)   # private generator (lime-compatible stream)
        data = rs.randint(0, 2, n * k).reshape((n, k))
        data[0, :] = 1
        return data

    def hidden_image(self, x, segments):
        hc = self._params["hide_color"]
        if hc is None:
            return mean_colour_image(x, segments)
        out = np.empty_like(x)
        out[:] = np.asarray(hc, dtype=x.dtype)
        return out

    def images(self, x, segments, data):
        return compose(x, self.hidden_image(x, segments), segments, data.astype(bool))

    def fit(self, data, probs, target, segments):
        p = self._params
        y = probs[:, target].astype(np.float64)
        d = cosine_to_ones(data)
        w = kernel(d, float(p["kernel_width"]))
        X = data.astype(np.float64)
        used = select_features(X, y, w, p["num_features"], p["feature_selection"])
        coef, intercept, r2 = weighted_ridge(X[:, used], y, w, alpha=float(p["alpha"]))
        weights = np.zeros(data.shape[1])
        weights[used] = coef
        local_pred = float(intercept + coef.sum())
        att = paint(weights, segments)
        order = [int(i) for i in np.argsort(-weights, kind="stable")]
        meta = {"r2": r2, "intercept": intercept, "local_pred": local_pred,
                "num_superpixels": int(data.shape[1]), "top_superpixels": order[:10],
                "segmentation": p["segmentation"],
                "segmentation_params": segmentation_params(p["segmentation"], p["segmentation_params"], segments.shape),
                "seeds": dict(zip(("segmentation", "sampling"), seeds_for(p["seed"], p["vary"], p["fixed_seed"])))}
        return Attribution(att, meta=meta, arrays={"weights": weights.astype(np.float32),
                                                   "segments": segments.astype(np.int32)})

    def _attribute(self, model, x, target, probs):
        segments = self.segments_for(x)
        data = self.masks_for(int(segments.max()) + 1)
        preds = np.empty((len(data), probs.shape[0]), np.float32)
        preds[0] = probs                          # the all-ones sample is the input itself
        preds[1:] = predict_masks(model, x, self.hidden_image(x, segments), segments, data[1:].astype(bool),
                                  int(self._params["batch_size"] or default_batch(model)))
        return self.fit(data, preds, target, segments)

    # ------------------------------------------------------------------ sweeps
    def explain_seeds(self, model, image, seeds, target=None) -> list[Explanation]:
        """One explanation per seed, with the model fed all seeds' samples in large batches
        and the segmentation computed once per distinct segmentation seed."""
        from ..images import to_canonical
        from pathlib import Path
        src = str(image) if isinstance(image, (str, Path)) else None
        x = to_canonical(image, model.input_size, model.preprocessing.resize)
        t0 = time.perf_counter()
        before = model.counter.samples
        probs = model.predict(x[None])[0]
        tgt = int(np.argmax(probs)) if target is None else model.target_index(target)
        jobs = []
        for s in seeds:
            ex = self.clone(seed=int(s))
            segs = ex.segments_for(x)
            data = ex.masks_for(int(segs.max()) + 1)
            jobs.append((ex, segs, data))
        bs = int(self._params["batch_size"] or default_batch(model))
        preds = np.concatenate([predict_masks(model, x, ex.hidden_image(x, segs), segs, data[1:].astype(bool), bs)
                                for ex, segs, data in jobs])
        shared = (time.perf_counter() - t0) / max(len(jobs), 1)
        calls = (model.counter.samples - before) / max(len(jobs), 1)
        out, i = [], 0
        for ex, segs, data in jobs:
            t1 = time.perf_counter()
            n = len(data) - 1
            pr = np.concatenate([probs[None], preds[i:i + n]])
            i += n
            res = ex.fit(data, pr, tgt, segs)
            out.append(finish(ex, model, x, tgt, probs, res, shared + time.perf_counter() - t1,
                              int(round(calls)), src))
        return out


def finish(explainer, model, x, tgt, probs, res: Attribution, seconds, calls, src) -> Explanation:
    """Build an Explanation like ``Explainer.explain`` does (for batched multi-seed runs)."""
    order = np.argsort(-probs)[:5]
    return Explanation(
        attribution=np.asarray(res.attribution, np.float32), target=tgt, target_label=model.label_of(tgt),
        target_prob=float(probs[tgt]), method=explainer.name, params=_jsonable(explainer.get_params()),
        seed=explainer.seed, model_calls=int(calls), seconds=float(seconds), meta=_jsonable(res.meta),
        arrays=res.arrays, image=x, model=model_summary(model), source_image=src,
        top=[{"index": int(i), "label": model.label_of(int(i)), "prob": float(probs[i])} for i in order])
