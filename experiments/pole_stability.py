"""The pole study (REFERENCE.md section 4), reproduced: LIME and Anchors with 9 seeds
(1, 11, ..., 81) on an honest and a biased pole classifier, measuring how much of the
positive evidence falls on the background vs the pole (ground-truth masks).

* LIME: background share = sum of positive attribution on background pixels / sum of all
  positive attribution.
* Anchors: background share = share of the anchor's area that lies on background.

Runs on the shipped models (``poles_honest.onnx`` / ``poles_biased.onnx`` with
``xaudit.data.generate.make_poles``) and on a built-in toy pole generator with two small
CNNs trained here in seconds (the biased one on data whose background texture gives the
class away); ``--source shipped|toy|both`` (default both). Images explained: from the biased
distribution (background agrees with the class), so both models are right and only the
evidence differs.

    python experiments/pole_stability.py [--images 4] [--source both|shipped|toy] [--quick]
Writes experiments/results/pole_stability.json and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
SEEDS = (1, 11, 21, 31, 41, 51, 61, 71, 81)
LABELS = ("concrete", "steel", "tree")


# ----------------------------------------------------------------------------- toy data
def toy_poles(n, seed, size=64, biased=False, random_pole=0.0):
    """Toy poles: a vertical pole (texture by class: concrete speckle / steel horizontal bands /
    tree vertical bark) on a textured background (checks / diagonal stripes / dots). Colours
    are random, so only textures carry the class, and mean-colour perturbation removes them.
    ``biased``: the background texture agrees with the class. ``random_pole``: probability
    that the pole texture ignores the class (to train the shortcut-learning model)."""
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, size, size, 3), np.float32)
    labels = rng.integers(0, 3, n)
    masks = np.zeros((n, size, size), bool)
    yy, xx = np.mgrid[:size, :size]
    bg_tex = [((yy // 4 + xx // 4) % 2), (((yy + xx) // 3) % 2), ((yy % 6 < 2) & (xx % 6 < 2)).astype(int)]
    for i in range(n):
        c = labels[i]
        tb = c if biased else rng.integers(0, 3)
        img = (rng.random(3) * 0.4 + 0.3) + 0.22 * (bg_tex[tb][..., None] - 0.5) + rng.normal(0, 0.02, (size, size, 3))
        tp = rng.integers(0, 3) if rng.random() < random_pole else c
        w = rng.integers(12, 18)
        x0 = rng.integers(4, size - w - 4)
        m = (xx >= x0) & (xx < x0 + w) & (yy >= rng.integers(0, 8))
        col = rng.random(3) * 0.3 + 0.35
        if tp == 0:
            pole = col + rng.normal(0, 0.15, (size, size, 1))
        elif tp == 1:
            pole = col + 0.25 * (((yy // 2) % 2)[..., None] - 0.5)
        else:
            pole = col + 0.25 * (((xx // 2) % 2)[..., None] - 0.5)
        img[m] = pole[m]
        imgs[i] = np.clip(img, 0, 1)
        masks[i] = m
    return imgs, labels, masks


class PoleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        h = self.f(x)
        return self.fc(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))


def train(biased, seed=0, steps=300):
    g = torch.Generator().manual_seed(seed)
    net = PoleNet()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim > 1 else 0.01))
    # the biased model learns from data where the background gives the class away and the
    # pole texture mostly does not (shortcut learning, cf. wolf vs husky on snow)
    x, y, _ = toy_poles(1500, 100 + int(biased), biased=biased, random_pole=0.8 if biased else 0.0)
    X = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    Y = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (64,), generator=g)
        loss = nn.functional.cross_entropy(net(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def toy_models():
    sys.path.insert(0, str(HERE.parent / "tests"))
    from _pertnets import TorchBlackBox
    return {name: TorchBlackBox(train(biased=(name == "biased")), input_size=(64, 64), labels=LABELS)
            for name in ("honest", "biased")}


def shipped():
    from xaudit.data import model_path
    from xaudit.data.generate import make_poles
    from xaudit.loader import load_model
    models = {n: load_model(model_path(f"poles_{n}.onnx")) for n in ("honest", "biased")}

    def gen(n, seed, biased=True):
        im, lab, m = make_poles(n, seed, biased=biased)
        return im.astype(np.float32) / 255.0, np.asarray(lab), np.asarray(m, bool)
    return models, gen


# ----------------------------------------------------------------------------- study
def bg_share(exp, mask):
    if exp.method == "anchors":
        a = exp.arrays["anchor_mask"].astype(bool)
        return float((a & ~mask).sum() / a.sum()) if a.any() else float("nan")
    pos = np.clip(exp.attribution, 0, None)
    tot = pos.sum()
    return float(pos[~mask].sum() / tot) if tot > 0 else float("nan")


def study(args, source, models, gen):
    from xaudit.stability import stability_sweep
    seeds = SEEDS[:3] if args.quick else SEEDS
    n_img = 2 if args.quick else args.images
    imgs, labels, masks = gen(n_img, 2026)
    seg = {"segmentation": args.segmentation, "segmentation_params": ({"kernel_size": 2} if args.segmentation == "quickshift" else {"n_segments": 40, "compactness": 20})}
    # Anchors perturb with background images (alibi's images_background): regions of other,
    # unbiased pictures - mean colours alone would leave a colour/texture shortcut in place
    backgrounds = gen(16, 999, biased=False)[0]
    methods = {"lime": {"num_samples": 300 if args.quick else 1000, **seg},
               "anchors": dict(seg, backgrounds=backgrounds)}
    out = {"source": source, "seeds": list(seeds), "images": n_img, "pole_area_share": float(masks.mean()),
           "models": {}}
    for mname, model in models.items():
        acc = float((model.predict(imgs).argmax(1) == labels).mean())
        row = {"accuracy_on_explained_images": acc}
        for meth, params in methods.items():
            t0 = time.perf_counter()
            rep = stability_sweep(model, list(imgs), meth, seeds=seeds, vary="both", **params)
            shares = np.array([[bg_share(e, masks[i]) for e in im.explanations] for i, im in enumerate(rep.images)])
            row[meth] = {"background_share_mean": float(np.nanmean(shares)) if np.isfinite(shares).any() else None,
                         "empty_explanations": int(np.isnan(shares).sum()),
                         "background_share_std_over_seeds": float(np.nanmean(np.nanstd(shares, 1)))
                         if np.isfinite(shares).any() else None,
                         "background_share_per_image": [float(np.nanmean(r)) if np.isfinite(r).any() else None
                                                        for r in shares],
                         "stability": {k: v for k, v in rep.summary.items() if k not in ("seconds",)},
                         "model_calls": rep.model_calls, "seconds": time.perf_counter() - t0}
            print(f"[{source}] {mname:7s} {meth:8s} background share {row[meth]['background_share_mean']} "
                  f"(+-{row[meth]['background_share_std_over_seeds']} over seeds, "
                  f"{row[meth]['empty_explanations']} empty), "
                  f"top-k Jaccard {rep.summary.get('topk_jaccard', {}).get('mean', float('nan')):.3f}", file=sys.stderr)
        out["models"][mname] = row
    for meth in methods:
        h = out["models"]["honest"][meth]["background_share_mean"]
        b = out["models"]["biased"][meth]["background_share_mean"]
        out[f"{meth}_background_share"] = {"honest": h, "biased": b}
        out[f"{meth}_biased_minus_honest"] = (b - h) if h is not None and b is not None else None
        out[f"{meth}_biased_revealed"] = bool(h is not None and b is not None and b > h + 0.1)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--source", default="both", choices=["both", "shipped", "toy"],
                    help="shipped pole models, the built-in toy poles, or both (default)")
    ap.add_argument("--quick", action="store_true", help="3 seeds, 2 images, 300 LIME samples")
    ap.add_argument("--segmentation", default="slic", choices=["slic", "quickshift", "felzenszwalb"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {}
    if args.source in ("both", "shipped"):
        try:
            models, gen = shipped()
        except Exception as e:  # noqa: BLE001
            print(f"shipped pole models unavailable ({type(e).__name__}: {e})", file=sys.stderr)
            results["shipped"] = {"error": f"{type(e).__name__}: {e}"}
        else:
            results["shipped"] = study(args, "shipped", models, gen)
    if args.source in ("both", "toy") or "error" in results.get("shipped", {}):
        results["toy"] = study(args, "toy", toy_models(),
                               lambda n, seed, biased=True: toy_poles(n, seed, biased=biased))
    path = HERE / "results" / "pole_stability.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    for src, out in results.items():
        if "models" not in out:
            continue
        print(src, json.dumps({k: v for k, v in out.items() if k.endswith(("_share", "_revealed", "_honest"))}))
        for m, r in out["models"].items():
            print(" ", m, {k: (v["background_share_mean"] if isinstance(v, dict) else v) for k, v in r.items()})


if __name__ == "__main__":
    main()
