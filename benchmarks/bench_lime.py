"""LIME: xaudit vs ``lime_image`` (lime 0.2.0.1) with its defaults, at equal samples (1 000),
side by side on the same model, image and superpixels.

``lime_image`` runs ``LimeImageExplainer(random_state=0).explain_instance(image, predict,
num_samples=1000)`` with its defaults (``batch_size=10``, ``top_labels=5``,
``hide_color=None``, kernel width 0.25) except ``segmentation_fn``, which returns xaudit's
quickshift superpixels (computed inside the timed call, segmentation cache cleared), so
both explain over the same superpixels and the top-5 agreement is meaningful (``random_seed=0``
too: without it lime draws a segmentation seed from ``random_state`` first and its perturbation
samples differ from xaudit's seed-0 samples). xaudit runs
``Lime(num_samples=1000, seed=0)``. "Model" = time inside ``model.predict`` (the black-box
predict function both call: adapter preprocessing + runtime). overhead = (total - model) /
model, per repetition; median of the repetitions; the two tools alternate within each
repetition. Models: the shipped sign model (``signs.onnx``, 64 px, onnxruntime) and a
ResNet18-sized net at 224 px (eager torch, random weights). Target: xaudit overhead <= 5 %.

    python benchmarks/bench_lime.py [--quick] [--repeats N]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

if __name__ != "__main__":
    from . import _common as C


class Timed:
    """Accumulates the seconds spent inside ``model.predict``."""

    def __init__(self, model):
        self.model, self.t = model, 0.0
        orig = model.predict

        def predict(batch, batch_size=None):
            t0 = time.perf_counter()
            try:
                return orig(batch, batch_size=batch_size)
            finally:
                self.t += time.perf_counter() - t0
        model.predict = predict


def top5(weights) -> list[int]:
    return [int(i) for i in np.argsort(-np.asarray(weights, np.float64), kind="stable")[:5]]


def contenders(model, img, samples):
    from lime import lime_image

    from xaudit.explainers.lime import Lime
    from xaudit.explainers.segmentation import _CACHE, segment
    timed = Timed(model)

    def xaudit_fn(n=samples):
        _CACHE.clear()
        timed.t = 0.0
        c0 = model.counter.samples
        e = Lime(num_samples=n, seed=0).explain(model, img)
        return {"model_s": timed.t, "model_calls": model.counter.samples - c0, "target": e.target,
                "top5": top5(e.arrays["weights"])}

    def lime_fn(n=samples):
        _CACHE.clear()
        timed.t = 0.0
        c0 = model.counter.samples
        exp = lime_image.LimeImageExplainer(random_state=0).explain_instance(
            img.astype(np.float64), model.predict, num_samples=n, random_seed=0,
            segmentation_fn=lambda _im: segment(img, "quickshift", 0))
        tgt = int(exp.top_labels[0])
        w = np.zeros(int(exp.segments.max()) + 1)
        for f, v in exp.local_exp[tgt]:
            w[f] = v
        return {"model_s": timed.t, "model_calls": model.counter.samples - c0, "target": tgt, "top5": top5(w)}

    return xaudit_fn, lime_fn


def run(quick: bool = False, repeats: int = 3) -> dict:
    from benchmarks import _nets
    cases = []
    signs = _nets.shipped("signs.onnx")
    if signs is not None:
        cases.append(("shipped signs.onnx (64 px)", signs, _nets.sign_image(0), 1000))
    else:
        from _gradnets import ResNet
        from _pertnets import TorchBlackBox
        cases.append(("small ResNet 64 px (shipped model absent)",
                      TorchBlackBox(ResNet(n=43, w=16, seed=0), input_size=(64, 64),
                                    labels=[str(i) for i in range(43)]), _nets.textured_image(64, 0), 1000))
    cases.append(("ResNet18-sized (224 px)", _nets.resnet18_model(0), _nets.textured_image(224, 0),
                  50 if quick else 1000))
    rows, targets, raw = [], [], {}
    for name, model, img, samples in cases:
        xa, li = contenders(model, img, samples)
        xa(20), li(20)                                    # warm-up (small, same code paths)
        r = C.side_by_side({"xaudit": xa, "lime_image": li}, repeats, warmup=False)
        out = {}
        for who, d in r.items():
            tot, mod = d["seconds"]["values"], d["model_s"]["values"]
            out[who] = {"total_s": d["seconds"], "model_s": d["model_s"],
                        "overhead": C.stats([(t - m) / m for t, m in zip(tot, mod)]),
                        "model_calls": d["model_calls"]["median"], "target_class": int(d["target"]["values"][0]),
                        "top5": d["top5"][0]}
        agree = len(set(out["xaudit"]["top5"]) & set(out["lime_image"]["top5"])) / 5
        ratio = C.ratio_stats(r["xaudit"]["seconds"]["values"], r["lime_image"]["seconds"]["values"])
        raw[name] = {"samples": samples, **out, "top5_agreement": agree, "total_ratio_xaudit_over_lime": ratio}
        x, lm = out["xaudit"], out["lime_image"]
        rows.append({"model": name, "samples": samples,
                     "xaudit total s": x["total_s"]["median"], "xaudit model s": x["model_s"]["median"],
                     "xaudit overhead": f"{100 * x['overhead']['median']:.1f} %",
                     "lime total s": lm["total_s"]["median"], "lime model s": lm["model_s"]["median"],
                     "lime overhead": f"{100 * lm['overhead']['median']:.1f} %",
                     "total xaudit / lime": ratio["median"],
                     "model calls xaudit / lime": f"{int(x['model_calls'])} / {int(lm['model_calls'])}",
                     "top-5 agreement": agree})
        per_img_ms = 1e3 * x["model_s"]["median"] / max(x["model_calls"], 1)
        own_ms = 1e3 * (x["total_s"]["median"] - x["model_s"]["median"])
        targets.append(C.target("LIME overhead <= 5 %", 100 * x["overhead"]["median"], "<=", 5.0, case=name, unit="%",
                                why=f"the model's forward pass costs only {per_img_ms:.2f} ms per image, so "
                                f"xaudit's own work ({own_ms:.0f} ms per explanation: segmentation, composing "
                                f"{samples} perturbed images, the ridge fit, i.e. "
                                f"{1e3 * own_ms / samples:.0f} µs per sample) is more than 5 % of it; "
                                f"lime_image's overhead on the same model is "
                                f"{100 * lm['overhead']['median']:.0f} %"))
        C.log(f"lime {name}: xaudit {x['total_s']['median']:.2f}s (overhead {100 * x['overhead']['median']:.1f} %), "
              f"lime {lm['total_s']['median']:.2f}s ({100 * lm['overhead']['median']:.1f} %), top-5 agree {agree}")
    notes = ["Both tools get the same superpixels and sampling seed; lime_image keeps its defaults otherwise "
             "(batch_size 10, top_labels 5). Model calls count images sent to the model."]
    if quick:
        notes.append("quick mode: the ResNet18-sized case uses 50 samples (the full run uses 1 000).")
    return {"description": __doc__.split("\n\n")[0].replace("\n", " "), "cases": raw, "table": rows,
            "targets": targets, "notes": notes}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.__main__ import script_main
    script_main("lime")
