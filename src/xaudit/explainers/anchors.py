"""Anchors on superpixels (Ribeiro, Singh & Guestrin, AAAI 2018), native implementation.

An *anchor* is a set ``A`` of superpixels such that, when they are kept and every other
superpixel is independently perturbed with probability ``p_sample`` (replaced by its mean
colour, the "fudged" image, or by the same region of a random background image), the
model keeps its prediction with precision ``>= threshold``, with confidence ``1 - delta``.
Among such sets the search maximises *coverage* (share of a fixed pool of
``coverage_samples`` perturbation vectors in which all of ``A`` is kept; no model calls).

Search (as in the paper and alibi's ``anchor_base``): bottom-up beam search; at each
size the candidates (best anchors of the previous size + one superpixel, pruned to those
whose coverage beats the best valid anchor) are ranked by KL-LUCB (Kaufmann &
Kalyanakrishnan 2013) with tolerance ``tau`` and KL confidence bounds
(``beta = log(405.5 K t^1.1 / delta) + log log(...)``), then the ``beam_size`` best are
sampled until their lower bound clears ``threshold - epsilon_stop`` or their upper bound
falls below ``threshold + epsilon_stop``.

Economy of model calls: every labelled sample is stored with the set it was drawn under
(``forced``) and its on/off vector. A sample drawn under ``A`` is an exact draw of the
perturbation distribution of any ``B >= A`` whenever all of ``B`` happens to be on (the
other superpixels stay independent Bernoulli). So each candidate's precision uses every
stored sample with ``forced <= B <= on`` — unbiased reuse across the whole search, not
only along one ancestry chain; the returned example images come from the store too.
"""
from __future__ import annotations

import numpy as np

from ..errors import XauditError
from .base import Attribution, Explainer
from .lime import VARY, seeds_for
from .segmentation import compose, default_batch, mean_colour_image, segment, segmentation_params


# ----------------------------------------------------------------------- KL bounds
def kl_bernoulli(p, q):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    q = np.clip(q, 1e-7, 1 - 1e-7)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def kl_upper(p, level, n_iter=17):
    """Largest q >= p with n * KL(p||q) <= beta (``level = beta / n``), by bisection."""
    p = np.asarray(p, np.float64)
    lo = p.copy()
    hi = np.minimum(p + np.sqrt(np.asarray(level) / 2.0), 1.0)
    for _ in range(n_iter):
        q = (lo + hi) / 2
        over = kl_bernoulli(p, q) > level
        hi = np.where(over, q, hi)
        lo = np.where(over, lo, q)
    return hi


def kl_lower(p, level, n_iter=17):
    """Smallest q <= p with n * KL(p||q) <= beta."""
    p = np.asarray(p, np.float64)
    hi = p.copy()
    lo = np.clip(p - np.sqrt(np.asarray(level) / 2.0), 0.0, 1.0)
    for _ in range(n_iter):
        q = (lo + hi) / 2
        over = kl_bernoulli(p, q) > level
        lo = np.where(over, q, lo)
        hi = np.where(over, hi, q)
    return lo


def lucb_beta(n_arms, t, delta, rate="theory"):
    """KL-LUCB exploration rate. ``theory``: the rate of the paper's analysis (alibi's
    choice); ``practical``: ``log((log t + 1) / delta)``, the rate used in the paper's
    experiments. Only the ranking of candidates uses it; the precision certificate of the
    returned anchor uses ``log(1 / delta')`` either way."""
    if rate == "practical":
        return float(np.log((np.log(t) + 1.0) / delta))
    temp = np.log(405.5 * n_arms * (t ** 1.1) / delta)
    return temp + np.log(temp)


# ----------------------------------------------------------------------- sampler
class _Store:
    """Perturbation sampler + store of labelled samples (on-vector, forced set, label)."""

    def __init__(self, model, x, segments, target, rng, p_sample, backgrounds, batch_size):
        self.model, self.x, self.segments, self.target = model, x, segments, target
        self.rng, self.p_sample, self.backgrounds = rng, float(p_sample), backgrounds
        self.k = int(segments.max()) + 1
        self.fudged = mean_colour_image(x, segments) if backgrounds is None else None
        self.batch_size = batch_size
        self.on = np.zeros((0, self.k), bool)
        self.forced = np.zeros((0, self.k), bool)
        self.labels = np.zeros(0, bool)
        self.bg_idx = np.zeros(0, np.int64)
        self.calls = 0

    def vectors(self, anchor_mask, n):
        on = self.rng.random((n, self.k)) >= self.p_sample
        on[:, anchor_mask] = True
        bg = self.rng.integers(0, len(self.backgrounds), n) if self.backgrounds is not None else np.zeros(n, np.int64)
        return on, bg

    def render(self, on, bg):
        rep = self.fudged if self.backgrounds is None else self.backgrounds[bg]
        return compose(self.x, rep, self.segments, on)

    def draw(self, anchor_mask, n):
        on, bg = self.vectors(anchor_mask, n)
        preds = self.model.predict(self.render(on, bg), batch_size=self.batch_size)
        lab = preds.argmax(1) == self.target
        self.calls += n
        forced = np.zeros((n, self.k), bool)
        forced[:, anchor_mask] = True
        self.on = np.concatenate([self.on, on])
        self.forced = np.concatenate([self.forced, forced])
        self.labels = np.concatenate([self.labels, lab])
        self.bg_idx = np.concatenate([self.bg_idx, bg])
        return lab

    def valid(self, cands: np.ndarray, since: int = 0) -> np.ndarray:
        """(M, N) bool: stored sample n (drawn at position >= ``since``) is a draw of
        candidate m's distribution."""
        C = cands.astype(np.float32)
        bad_forced = self.forced.astype(np.float32) @ (1.0 - C).T   # forced outside B
        bad_off = (~self.on).astype(np.float32) @ C.T                # some of B off
        v = ((bad_forced == 0) & (bad_off == 0)).T
        if since:
            v[:, :since] = False
        return v

    def stats(self, cands, since: int = 0):
        v = self.valid(cands, since)
        n = v.sum(1).astype(np.float64)
        pos = (v & self.labels[None]).sum(1).astype(np.float64)
        return pos, n


class Anchors(Explainer):
    """Anchors. Parameters: ``threshold`` (0.95), ``delta`` (0.1), ``tau`` (0.15, KL-LUCB
    tolerance), ``epsilon_stop`` (0.05), ``batch_size`` (100, samples per arm pull),
    ``beam_size`` (1), ``max_anchor_size`` (None), ``min_samples_start`` (100),
    ``coverage_samples`` (10000), ``p_sample`` (0.5), ``segmentation`` / ``segmentation_params``,
    ``backgrounds`` (None = mean-colour "fudged" image, else an (M,H,W,3) array of canonical
    images), ``n_examples`` (8 holds + 8 fails kept for the grid), ``predict_batch`` (None = ``segmentation.default_batch(model)``),
    ``seed`` (0), ``vary`` (both|segmentation|sampling), ``fixed_seed`` (0)."""

    name = "anchors"
    uses_seed = True
    DEFAULTS = dict(threshold=0.95, delta=0.1, tau=0.15, epsilon_stop=0.05, batch_size=100, beam_size=1,
                    max_anchor_size=None, min_samples_start=100, coverage_samples=10000, p_sample=0.5,
                    segmentation="quickshift", segmentation_params=None, backgrounds=None, n_examples=8,
                    predict_batch=None, lucb_rate="practical", extra_candidates=5, lucb_pull=25, seed=0, vary="both", fixed_seed=0)

    def __init__(self, **params):
        unknown = set(params) - set(self.DEFAULTS)
        if unknown:
            raise XauditError(f"anchors has no parameter(s) {', '.join(sorted(unknown))}")
        p = dict(self.DEFAULTS)
        p.update(params)
        super().__init__(**p)

    def get_params(self):
        p = dict(self._params)
        if p.get("backgrounds") is not None:
            p["backgrounds"] = f"<{len(p['backgrounds'])} background images>"
        return p

    def clone(self, **params):
        p = dict(self._params)
        p.update(params)
        return type(self)(**p)

    def segments_for(self, x, seed=None):
        p = self._params
        seg_seed, _ = seeds_for(p["seed"] if seed is None else seed, p["vary"], p["fixed_seed"])
        return segment(x, p["segmentation"], seg_seed, **(p["segmentation_params"] or {}))

    def _store(self, model, x, target, segments):
        p = self._params
        _, samp_seed = seeds_for(p["seed"], p["vary"], p["fixed_seed"])
        bgs = p["backgrounds"]
        if bgs is not None:
            bgs = np.asarray(bgs, np.float32)
            if bgs.ndim != 4 or bgs.shape[1:] != x.shape:
                raise XauditError(f"anchors backgrounds must be (M, {x.shape[0]}, {x.shape[1]}, 3) canonical images")
        return _Store(model, x, segments, target, np.random.default_rng(samp_seed), p["p_sample"], bgs,
                      p["predict_batch"] or default_batch(model))

    # ------------------------------------------------------------------ search
    def _attribute(self, model, x, target, probs):
        p = self._params
        if p["vary"] not in VARY:
            raise XauditError(f"--vary must be one of {', '.join(VARY)}")
        thr, delta, tau, eps_stop = float(p["threshold"]), float(p["delta"]), float(p["tau"]), float(p["epsilon_stop"])
        bs, beam = int(p["batch_size"]), int(p["beam_size"])
        if not 0 < thr <= 1 or not 0 < delta < 1 or bs < 1 or beam < 1:
            raise XauditError("anchors: need 0 < threshold <= 1, 0 < delta < 1, batch_size >= 1, beam_size >= 1")
        segments = self.segments_for(x)
        st = self._store(model, x, target, segments)
        k = st.k
        max_size = k if p["max_anchor_size"] is None else min(int(p["max_anchor_size"]), k)
        cov_rng = np.random.default_rng([seeds_for(p["seed"], p["vary"], p["fixed_seed"])[1], 1])
        cov_pool = cov_rng.random((int(p["coverage_samples"]), k)) >= st.p_sample

        def coverage(c):
            return float(cov_pool[:, c].all(1).mean()) if c.any() else 1.0

        empty = np.zeros(k, bool)
        st.draw(empty, int(p["min_samples_start"]))
        beta0 = np.log(1.0 / delta)

        def empty_stats():
            pos, n = st.stats(empty[None])
            return pos[0], n[0]

        pos, n = empty_stats()
        mean = pos / n
        lb = kl_lower(mean, beta0 / n)
        while mean > thr and lb < thr - tau:
            st.draw(empty, bs)
            pos, n = empty_stats()
            mean = pos / n
            lb = kl_lower(mean, beta0 / n)
        best, best_cov, cert = None, -1.0, None
        if lb > thr:
            best, best_cov, cert = empty.copy(), 1.0, (float(mean), int(n))
        best_of_size = {0: [empty]}
        size = 1
        while best is None or best_cov < 1.0:
            if size > max_size or best is not None and best.sum() == 0:
                break
            # propose
            seen, cands = set(), []
            for a in best_of_size[size - 1]:
                for f in np.where(~a)[0]:
                    c = a.copy()
                    c[f] = True
                    key = c.tobytes()
                    if key not in seen and coverage(c) > best_cov:
                        seen.add(key)
                        cands.append(c)
            if not cands:
                break
            C = np.stack(cands)
            beta = np.log(1.0 / (delta / (1 + (beam - 1) * k)))
            # candidates of one size share the same expected coverage (p_sample^size): one that
            # the stored samples already certify needs no ranking
            # (Bonferroni over the candidates: picking the best-looking of many is optimistic)
            pos, n = st.stats(C)
            nn = np.maximum(n, 1e-9)
            beta_all = beta + np.log(len(C))
            pre_ok = (n > 0) & (pos / nn >= thr) & (kl_lower(pos / nn, beta_all / nn) > thr - eps_stop)
            if pre_ok.any():
                chosen = np.where(pre_ok)[0]
                chosen = chosen[np.argsort([-coverage(C[i]) for i in chosen], kind="stable")][:max(beam, 1)]
            else:
                chosen = self._kllucb(st, C, tau, delta, bs, min(beam, len(C)))
            best_of_size[size] = [C[i] for i in chosen]
            B = C[chosen]
            ok_i, means, lbs, cert_n = self._certify(st, B, thr, eps_stop, beta, bs)
            covs = np.array([coverage(b) for b in B])
            ok = ok_i & (covs > best_cov)
            if not ok.any() and int(p["extra_candidates"]) > 0:
                # same expected coverage at one size: before going deeper, try the next most
                # promising candidates of this size (by their stored precision)
                pos_c, n_c = st.stats(C)
                m_c = np.where(n_c > 0, pos_c / np.maximum(n_c, 1e-9), 0.0)
                rest = [j for j in np.argsort(-m_c, kind="stable") if j not in set(chosen.tolist())
                        and m_c[j] >= thr - eps_stop][:int(p["extra_candidates"])]
                beta_x = beta + np.log(1 + len(rest))   # Bonferroni over the extra tries
                for j in rest:
                    okj, mj, lj, nj = self._certify(st, C[j:j + 1], thr, eps_stop, beta_x, bs)
                    if okj[0] and coverage(C[j]) > best_cov:
                        B = np.concatenate([B, C[j:j + 1]])
                        means, lbs, cert_n = np.append(means, mj), np.append(lbs, lj), np.append(cert_n, nj)
                        covs = np.append(covs, coverage(C[j]))
                        ok = np.append(ok, True)
                        break
            if ok.any():
                i = int(np.where(ok)[0][np.argmax(covs[ok])])
                best, best_cov = B[i].copy(), float(covs[i])
                cert = (float(means[i]), int(cert_n[i]))
            size += 1
        success = best is not None
        if not success:   # best precision among the beams of every size
            allb = np.stack([b for s in sorted(best_of_size) if s > 0 for b in best_of_size[s]])
            i = self._kllucb(st, allb, tau, delta, bs, 1)[0]
            best = allb[i]
            best_cov = coverage(best)
        pos, n = st.stats(best[None])
        precision_all = float(pos[0] / n[0]) if n[0] else float("nan")
        precision = cert[0] if cert else precision_all
        anchor_mask = best[segments]
        anchor = [int(i) for i in np.where(best)[0]]
        ex_imgs, ex_hold = self._examples(st, best)
        meta = {"precision": precision, "coverage": float(best_cov), "anchor": anchor, "success": bool(success),
                "precision_samples": cert[1] if cert else int(n[0]), "precision_all_samples": precision_all,
                "anchor_samples": int(n[0]), "num_superpixels": k, "threshold": thr,
                "segmentation": p["segmentation"],
                "segmentation_params": segmentation_params(p["segmentation"], p["segmentation_params"], segments.shape),
                "seeds": dict(zip(("segmentation", "sampling"), seeds_for(p["seed"], p["vary"], p["fixed_seed"])))}
        arrays = {"anchor_mask": anchor_mask.astype(bool), "segments": segments.astype(np.int32),
                  "examples": ex_imgs, "examples_hold": ex_hold}
        return Attribution(anchor_mask.astype(np.float32), meta=meta, arrays=arrays)

    MAX_CALLS = 500_000

    def _certify(self, st, B, thr, eps_stop, beta, bs):
        """Sample each candidate of ``B`` until its precision is certified >= thr - eps_stop
        (mean >= thr and KL lower bound above) or shown below thr + eps_stop.

        A candidate is declared valid only on samples drawn *after* it was selected (the
        samples that selected it are optimistic: winner's curse); it may be declared invalid
        on all its samples (their bias only flatters it). -> (valid, means, lower bounds)."""
        fresh_from = len(st.labels)
        while True:
            pos_a, n_a = st.stats(B)
            n_a = np.maximum(n_a, 1e-9)
            means_a = pos_a / n_a
            invalid = (means_a < thr) & (kl_upper(means_a, beta / n_a) < thr + eps_stop)
            pos, n = st.stats(B, since=fresh_from)
            nf = np.maximum(n, 1e-9)
            means = np.where(n > 0, pos / nf, means_a)
            lbs = np.where(n > 0, kl_lower(means, beta / nf), 0.0)
            ubs = np.where(n > 0, kl_upper(means, beta / nf), 1.0)
            invalid |= (n > 0) & (means < thr) & (ubs < thr + eps_stop)
            valid = ~invalid & (n > 0) & (means >= thr) & (lbs > thr - eps_stop)
            more = ~invalid & ~valid
            if not more.any() or st.calls > self.MAX_CALLS:
                return valid, np.where(invalid, np.minimum(means, means_a), means), lbs, n
            for i in np.where(more)[0]:
                st.draw(B[i], self._pull(means[i], n[i], beta, thr, eps_stop, bs))

    @staticmethod
    def _pull(mean, n, beta, thr, eps_stop, bs):
        """Samples to draw for a candidate under verification: about what its current mean
        needs for the bound to clear ``thr -/+ eps_stop`` (at least 10, at most ``bs``)."""
        target = thr - eps_stop if mean >= thr else thr + eps_stop
        m = float(np.clip(mean, 1e-6, 1 - 1e-6))
        kl = float(kl_bernoulli(np.array(m), np.array(target)))
        need = beta / kl if kl > 0 else bs
        return int(np.clip(np.ceil(need - n), 10, bs))

    def _kllucb(self, st, C, eps, delta, bs, top_n):
        m = len(C)
        pos, n = st.stats(C)
        for i in np.where(n == 0)[0]:
            st.draw(C[i], 1)
        if m == top_n:
            return np.arange(m)
        t = 1
        while True:
            pos, n = st.stats(C)
            means = pos / n
            beta = lucb_beta(m, t, delta, self._params["lucb_rate"])
            order = np.argsort(means, kind="stable")
            J, notJ = order[-top_n:], order[:-top_n]
            ub = kl_upper(means[notJ], beta / n[notJ])
            lb = kl_lower(means[J], beta / n[J])
            ut, lt = notJ[np.argmax(ub)], J[np.argmin(lb)]
            if ub.max() - lb.min() <= eps or st.calls > self.MAX_CALLS:
                return order[-top_n:]
            pull = max(1, int(self._params["lucb_pull"] or bs))
            st.draw(C[ut], pull)
            st.draw(C[lt], pull)
            t += 1

    def _examples(self, st, best):
        """Up to n_examples stored samples of the anchor's distribution where the prediction
        holds and as many where it fails (uint8 images, hold flags)."""
        nx = int(self._params["n_examples"])
        v = st.valid(best[None])[0]
        idx_h = np.where(v & st.labels)[0][:nx]
        idx_f = np.where(v & ~st.labels)[0][:nx]
        idx = np.concatenate([idx_h, idx_f]).astype(np.int64)
        if len(idx) == 0:
            return np.zeros((0, *st.x.shape), np.uint8), np.zeros(0, bool)
        imgs = st.render(st.on[idx], st.bg_idx[idx])
        return (np.clip(imgs, 0, 1) * 255).round().astype(np.uint8), st.labels[idx].copy()


def precision_of(model, image, anchor_mask_segments, segments, target, n=1000, seed=12345, p_sample=0.5,
                 backgrounds=None, batch_size=None):
    """Re-estimate an anchor's precision on ``n`` fresh perturbation samples."""
    x = np.asarray(image, np.float32)
    st = _Store(model, x, segments, target, np.random.default_rng(seed), p_sample, backgrounds,
                batch_size or default_batch(model))
    a = np.zeros(st.k, bool)
    a[list(anchor_mask_segments)] = True
    return float(st.draw(a, n).mean())


def save_examples_png(exp, directory):
    """``examples.png``: sampled images where the anchor holds (top row) / fails (bottom)."""
    imgs = exp.arrays.get("examples")
    hold = exp.arrays.get("examples_hold")
    if imgs is None or len(imgs) == 0:
        return None
    from ..plots import _plt
    from pathlib import Path
    plt = _plt()
    h_idx = np.where(hold)[0]
    f_idx = np.where(~hold)[0]
    ncols = max(len(h_idx), len(f_idx), 1)
    fig, axes = plt.subplots(2, ncols, figsize=(1.6 * ncols, 3.8), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    mask = exp.arrays.get("anchor_mask")
    for row, idxs, name in ((0, h_idx, "holds"), (1, f_idx, "fails")):
        for j, i in enumerate(idxs):
            ax = axes[row, j]
            ax.imshow(imgs[i])
            if mask is not None:
                ax.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_title(name, fontsize=7, color="green" if row == 0 else "red")
    fig.suptitle(f"anchors: precision={exp.meta.get('precision', float('nan')):.3f} "
                 f"coverage={exp.meta.get('coverage', float('nan')):.3f}", fontsize=9)
    fig.tight_layout()
    path = Path(directory) / "examples.png"
    fig.savefig(path)
    plt.close(fig)
    return path
