"""Seed-stability sweeps: explain the same image with several seeds and measure agreement.

``stability_sweep(model, images, method, seeds=(1, 11, ..., 81), vary="both", **params)``
returns a :class:`StabilityReport`. Per image and per pair of seeds:

* ``topk_jaccard``: Jaccard of the k = 5 most positive superpixels (LIME; by weight) or of the
  anchors (Anchors), as superpixel ids when both seeds share the segmentation, else as
  pixel regions; for pixel maps (occlusion, gradients) of the top 5 % pixels;
* ``spearman``: Spearman rank correlation of the attribution maps;
* ``sign_agreement``: share of superpixels whose LIME weight has the same sign (only when
  the segmentation is shared, i.e. ``vary="sampling"`` or a deterministic segmentation);
* Anchors also: ``anchor_jaccard`` (pixel Jaccard of anchor masks) and the precision /
  coverage spread across seeds.

Each metric is summarised by its mean over pairs and its worst pair. ``save(dir)`` writes
``stability.json`` (seeds, pairwise matrices, summary), ``grid.png`` (one overlay per
seed), ``std.png`` (per-pixel standard deviation across seeds) and one explanation folder
per seed.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._json import json_default
from .errors import XauditError

DEFAULT_SEEDS = (1, 11, 21, 31, 41, 51, 61, 71, 81)
TOP_K = 5
TOP_PIXELS = 0.05


# ----------------------------------------------------------------------- metrics
def _jaccard(a: set | np.ndarray, b: set | np.ndarray) -> float:
    if isinstance(a, np.ndarray):
        inter, union = np.logical_and(a, b).sum(), np.logical_or(a, b).sum()
        return 1.0 if union == 0 else float(inter / union)
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def top_pixels(att: np.ndarray, frac: float = TOP_PIXELS) -> np.ndarray:
    a = np.asarray(att, np.float64).ravel()
    n = max(1, int(round(frac * a.size)))
    idx = np.argsort(-a, kind="stable")[:n]
    m = np.zeros(a.size, bool)
    m[idx] = True
    return m.reshape(np.shape(att))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata
    ra, rb = rankdata(np.ravel(a)), rankdata(np.ravel(b))
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return 1.0 if (sa == 0 and sb == 0) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _top_superpixels(exp, k=TOP_K) -> list[int]:
    w = np.asarray(exp.arrays["weights"])
    order = np.argsort(-w, kind="stable")
    return [int(i) for i in order[:k] if w[i] > 0] or [int(order[0])]


def pair_metrics(e1, e2) -> dict:
    out = {"spearman": spearman(e1.attribution, e2.attribution)}
    s1, s2 = e1.arrays.get("segments"), e2.arrays.get("segments")
    same_seg = s1 is not None and s2 is not None and np.array_equal(s1, s2)
    if "weights" in e1.arrays and "weights" in e2.arrays:
        t1, t2 = _top_superpixels(e1), _top_superpixels(e2)
        if same_seg:
            out["topk_jaccard"] = _jaccard(set(t1), set(t2))
            w1, w2 = np.sign(e1.arrays["weights"]), np.sign(e2.arrays["weights"])
            out["sign_agreement"] = float((w1 == w2).mean())
        else:
            out["topk_jaccard"] = _jaccard(np.isin(s1, t1), np.isin(s2, t2))
    elif "anchor_mask" in e1.arrays and "anchor_mask" in e2.arrays:
        a1, a2 = e1.arrays["anchor_mask"].astype(bool), e2.arrays["anchor_mask"].astype(bool)
        if same_seg:
            out["topk_jaccard"] = _jaccard(set(e1.meta.get("anchor", [])), set(e2.meta.get("anchor", [])))
        else:
            out["topk_jaccard"] = _jaccard(a1, a2)
        out["anchor_jaccard"] = _jaccard(a1, a2)
    else:
        out["topk_jaccard"] = _jaccard(top_pixels(e1.attribution), top_pixels(e2.attribution))
    return out


def _summarise(mat: np.ndarray, seeds) -> dict:
    n = len(seeds)
    iu = np.triu_indices(n, 1)
    vals = mat[iu]
    ok = ~np.isnan(vals)
    if not ok.any():
        return {"mean": None, "worst": None, "worst_pair": None}
    j = int(np.nanargmin(np.where(ok, vals, np.inf)))
    return {"mean": float(np.nanmean(vals)), "worst": float(vals[j]),
            "worst_pair": [int(seeds[iu[0][j]]), int(seeds[iu[1][j]])]}


@dataclass
class ImageStability:
    name: str
    explanations: list
    pairwise: dict = field(default_factory=dict)      # metric -> (n_seeds, n_seeds) matrix
    summary: dict = field(default_factory=dict)

    def to_dict(self):
        return {"image": self.name, "target": self.explanations[0].target,
                "target_label": self.explanations[0].target_label,
                "pairwise": {k: [[None if np.isnan(v) else float(v) for v in row] for row in m]
                             for k, m in self.pairwise.items()},
                "summary": self.summary,
                "per_seed": [{"seed": e.seed, "model_calls": e.model_calls, "seconds": e.seconds,
                              **{k: e.meta[k] for k in ("r2", "precision", "coverage", "anchor", "intercept")
                                 if k in e.meta}} for e in self.explanations]}


@dataclass
class StabilityReport:
    method: str
    seeds: list
    vary: str
    params: dict
    images: list
    summary: dict = field(default_factory=dict)
    seconds: float = 0.0
    model_calls: int = 0
    failed: list = field(default_factory=list)     # [{"key", "image", "error"}] (executor runs)

    def to_dict(self):
        return {"method": self.method, "seeds": [int(s) for s in self.seeds], "vary": self.vary,
                "params": self.params, "seconds": self.seconds, "model_calls": self.model_calls,
                "top_k": TOP_K, "top_pixels": TOP_PIXELS,
                "summary": self.summary, "images": [im.to_dict() for im in self.images],
                "failed": self.failed}

    def metrics(self) -> dict:
        """Flat numeric summary (for tracking)."""
        out = {}
        for k, v in self.summary.items():
            if isinstance(v, dict):
                for kk in ("mean", "worst"):
                    if isinstance(v.get(kk), (int, float)):
                        out[f"{k}_{kk}"] = float(v[kk])
            elif isinstance(v, (int, float)):
                out[k] = float(v)
        return out

    def seed_dirs(self, directory) -> dict:
        d = Path(directory)
        multi = len(self.images) > 1
        out = {}
        for i, im in enumerate(self.images):
            base = d / _safe(f"{i:02d}-{im.name}") if multi else d
            for e in im.explanations:
                out[(i, e.seed)] = base / f"seed-{e.seed}"
        return out

    def save(self, directory, explanations: bool = True, max_images: int | None = None) -> Path:
        """``explanations=False``: the seed folders are already written (streamed by the
        executors); ``max_images``: grid.png / std.png show the first images only."""
        from .plots import _plt, draw_overlay
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for (i, s), sd in (self.seed_dirs(d).items() if explanations else ()):
            exp = next(e for e in self.images[i].explanations if e.seed == s)
            exp.save(sd)
        (d / "stability.json").write_text(json.dumps(self.to_dict(), indent=2, default=json_default))
        plt = _plt()
        shown = self.images[:max_images] if max_images else self.images
        n, m = len(self.seeds), len(shown)
        # grid.png: one row per image, one overlay per seed
        fig, axes = plt.subplots(m, n, figsize=(2.2 * n, 2.4 * m + 0.4), dpi=90, squeeze=False)
        for r, im in enumerate(shown):
            for c, e in enumerate(im.explanations):
                att = e.attribution
                signed = bool(att.min() < 0 < att.max())
                draw_overlay(axes[r, c], e.image, att, title=f"{im.name[:14]} seed {e.seed}" if m > 1 else f"seed {e.seed}",
                             signed=signed, colorbar=False)
        fig.suptitle(f"{self.method}: {n} seeds, vary={self.vary}", fontsize=10)
        fig.tight_layout()
        fig.savefig(d / "grid.png")
        plt.close(fig)
        # std.png: per-pixel std across seeds
        fig, axes = plt.subplots(1, m, figsize=(3.6 * m, 3.4), dpi=90, squeeze=False)
        for r, im in enumerate(shown):
            stack = np.stack([e.attribution for e in im.explanations]).astype(np.float64)
            std = stack.std(0)
            ax = axes[0, r]
            ax.imshow(np.clip(im.explanations[0].image, 0, 1))
            mp = ax.imshow(std, cmap="magma", alpha=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            tj = im.summary.get("topk_jaccard", {}).get("mean")
            ax.set_title(f"{im.name[:20]}\nstd across seeds" + (f" (top-k J={tj:.2f})" if tj is not None else ""),
                         fontsize=8)
            plt.colorbar(mp, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        fig.savefig(d / "std.png")
        plt.close(fig)
        return d


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]


def analyse(name: str, explanations: list) -> ImageStability:
    seeds = [e.seed for e in explanations]
    n = len(explanations)
    mats: dict = {}
    for i in range(n):
        for j in range(i + 1, n):
            for k, v in pair_metrics(explanations[i], explanations[j]).items():
                mats.setdefault(k, np.full((n, n), np.nan))
                mats[k][i, j] = mats[k][j, i] = v
    for k in mats:
        np.fill_diagonal(mats[k], 1.0)
    summary = {k: _summarise(m, seeds) for k, m in mats.items()}
    if explanations and "precision" in explanations[0].meta:
        prec = np.array([e.meta["precision"] for e in explanations], float)
        cov = np.array([e.meta.get("coverage", np.nan) for e in explanations], float)
        summary["precision_spread"] = float(np.nanmax(prec) - np.nanmin(prec))
        summary["precision_std"] = float(np.nanstd(prec))
        summary["precision_min"] = float(np.nanmin(prec))
        summary["coverage_spread"] = float(np.nanmax(cov) - np.nanmin(cov))
    if explanations and "r2" in explanations[0].meta:
        summary["r2_mean"] = float(np.mean([e.meta["r2"] for e in explanations]))
    return ImageStability(name=name, explanations=explanations, pairwise=mats, summary=summary)


def _overall(images: list) -> dict:
    out = {}
    keys = sorted({k for im in images for k in im.summary})
    for k in keys:
        vals = [im.summary[k] for im in images if k in im.summary]
        if isinstance(vals[0], dict):
            means = [v["mean"] for v in vals if v.get("mean") is not None]
            worsts = [(v["worst"], im.name, v["worst_pair"]) for v, im in zip(vals, images)
                      if v.get("worst") is not None]
            if means:
                w = min(worsts, key=lambda t: t[0])
                out[k] = {"mean": float(np.mean(means)), "worst": float(w[0]), "worst_image": w[1],
                          "worst_pair": w[2]}
        else:
            out[k] = float(np.mean(vals)) if "spread" not in k and "min" not in k else \
                float(np.max(vals) if "spread" in k else np.min(vals))
    return out


def _image_name(im, i):
    if isinstance(im, (str, Path)):
        return Path(im).stem
    return f"image{i}"


def stability_sweep(model, images, method: str, seeds=DEFAULT_SEEDS, vary: str = "both", target=None,
                    progress=None, **params) -> StabilityReport:
    """Explain every image with every seed (``vary``: both|segmentation|sampling) and
    compare. ``progress``: optional callable(iterable) -> iterable (e.g. tqdm)."""
    from .explainers.lime import VARY
    seeds = [int(s) for s in seeds]
    if len(seeds) < 2:
        raise XauditError("a stability sweep needs at least 2 seeds")
    if len(set(seeds)) != len(seeds):
        raise XauditError(f"duplicate seeds in {seeds}")
    if vary not in VARY:
        raise XauditError(f"--vary must be one of {', '.join(VARY)}, got {vary!r}")
    if isinstance(images, (str, Path, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
        images = [images]
    images = list(images)
    if not images:
        raise XauditError("no images to explain")
    base, seeded = sweep_explainer(method, vary, **params)
    t0 = time.perf_counter()
    before = model.counter.samples
    results = []
    it = list(enumerate(images))
    for i, im in (progress(it) if progress else it):
        results.append(analyse(_image_name(im, i), explain_seeds(model, base, seeded, im, seeds, target)))
    return finish_report(base, seeded, seeds, vary, results, time.perf_counter() - t0,
                         int(model.counter.samples - before))


def sweep_explainer(method: str, vary: str = "both", **params):
    """-> (explainer, seeded): the sweep's base explainer (``vary`` applied when the
    method uses a seed)."""
    from .explainers import get_explainer
    base = get_explainer(method, **params)
    seeded = getattr(base, "uses_seed", False)
    if seeded:
        base = base.clone(vary=vary)
    return base, seeded


def explain_seeds(model, base, seeded, image, seeds, target=None) -> list:
    """One image, every seed (one explanation per seed, in seed order)."""
    if hasattr(base, "explain_seeds"):
        return base.explain_seeds(model, image, seeds, target)
    if seeded:
        return [base.clone(seed=s).explain(model, image, target) for s in seeds]
    e = base.explain(model, image, target)   # deterministic method: the seeds cannot change it
    exps = []
    for s in seeds:
        c = _copy_exp(e)
        c.seed = s
        exps.append(c)
    return exps


def finish_report(base, seeded, seeds, vary, results, seconds, model_calls) -> StabilityReport:
    """Per-image results -> StabilityReport (summary over images, cost)."""
    rep = StabilityReport(method=base.name, seeds=[int(s) for s in seeds], vary=vary if seeded else "none",
                          params=_jsonable_params(base), images=results)
    rep.summary = _overall(results)
    rep.seconds = seconds
    rep.model_calls = int(model_calls)
    rep.summary["model_calls"] = rep.model_calls
    rep.summary["seconds"] = rep.seconds
    return rep


def _copy_exp(e):
    import copy
    return copy.copy(e)


def _jsonable_params(ex):
    from .explainers.base import _jsonable
    p = ex.get_params()
    p.pop("seed", None)
    return _jsonable(p)
