"""Anchors: model calls of xaudit's native Anchors vs alibi's AnchorImage at equal threshold.

Same model (exported to ONNX, NHWC RGB [0,1] input, run by onnxruntime on both sides),
same images, same superpixels (alibi gets them through a custom segmentation_fn), same
parameters (threshold 0.95, delta 0.1, tau 0.15, batch_size 100, beam_size 1,
p_sample 0.5, 10 000 coverage samples, mean-colour perturbation). alibi pins numpy<2,
so it runs in its own venv (default /work/alibi-venv, override with ALIBI_PYTHON) through
a subprocess. Target: xaudit needs >= 5x fewer model calls. Two xaudit configurations: ``default`` and
``alibi_like`` (theory KL-LUCB rate, 100-sample pulls, no extra candidates), every anchor's
precision re-estimated on 1 000 fresh samples (alibi's too).

    python benchmarks/bench_anchors.py [--quick] [--images N]
Result: benchmarks/results/bench_anchors.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

ALIBI_SCRIPT = r'''
import json, sys, time
import numpy as np, onnxruntime as ort
from alibi.explainers import AnchorImage
d = np.load(sys.argv[1]); onnx_path = sys.argv[2]; params = json.loads(sys.argv[3])
sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
calls = [0]
def predict(x):
    x = np.asarray(x, np.float32); calls[0] += len(x)
    return sess.run(None, {name: x})[0]
out = []
for i in range(len(d["images"])):
    img = d["images"][i].astype(np.float32); segs = d["segments"][i]
    ex = AnchorImage(predict, img.shape, segmentation_fn=lambda _im, s=segs: s, seed=params["seed"] + i)
    calls[0] = 0; t0 = time.perf_counter()
    e = ex.explain(img, threshold=params["threshold"], delta=params["delta"], tau=params["tau"],
                   batch_size=params["batch_size"], p_sample=0.5, coverage_samples=10000, beam_size=1)
    out.append({"calls": calls[0], "seconds": time.perf_counter() - t0, "precision": float(np.atleast_1d(e.precision)[0]) if e.precision is not None else None,
                "coverage": float(e.coverage) if e.coverage is not None else None,
                "features": [int(f) for f in e.raw["feature"]]})
print(json.dumps(out))
'''


def build(t0):
    """A hand-built black box whose anchors need several superpixels (see _pertnets.TextureCentre)."""
    from _pertnets import TextureCentre, TorchBlackBox, make_noise_images
    model = TorchBlackBox(TextureCentre(t0=t0), labels=("textured", "plain"))
    model.output_kind = "probabilities"
    return model, TextureCentre(t0=t0, nhwc=True).eval(), make_noise_images


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--segments", type=int, default=25)
    ap.add_argument("--t0", type=float, default=0.7, help="share of centre texture the model needs")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from xaudit.explainers.anchors import Anchors, precision_of
    from xaudit.explainers.segmentation import segment
    n = args.images or (3 if args.quick else 10)
    model, wrapped, make = build(args.t0)
    imgs = make(n, seed=123)
    segs = np.stack([segment(im, "slic", 0, n_segments=args.segments) for im in imgs])
    params = dict(threshold=0.95, delta=0.1, tau=0.15, batch_size=100, seed=0)
    ours = {}
    configs = {"default": {}, "alibi_like": {"lucb_rate": "theory", "lucb_pull": None, "extra_candidates": 0}}
    for rate, extra in configs.items():
        ours[rate] = []
        for i, im in enumerate(imgs):
            t0 = time.perf_counter()
            e = Anchors(seed=i, segmentation="slic", segmentation_params={"n_segments": args.segments},
                        threshold=0.95, delta=0.1, tau=0.15, batch_size=100, **extra).explain(model, im)
            fresh = precision_of(model, e.image, e.meta["anchor"], e.arrays["segments"], e.target, n=1000,
                                 seed=777 + i)
            ours[rate].append({"calls": e.model_calls, "seconds": time.perf_counter() - t0,
                               "precision": e.meta["precision"], "fresh_precision": fresh,
                               "coverage": e.meta["coverage"], "anchor_size": len(e.meta["anchor"]),
                               "superpixels": e.meta["num_superpixels"]})
            print(f"xaudit ({rate}) image {i}: {ours[rate][-1]}", file=sys.stderr)
    py = os.environ.get("ALIBI_PYTHON", "/work/alibi-venv/bin/python")
    result = {"images": n, "params": params, "segments": args.segments, "xaudit": ours}
    with tempfile.TemporaryDirectory() as td:
        onnx_path = Path(td) / "m.onnx"
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, (torch.zeros(1, 32, 32, 3),), str(onnx_path), dynamo=False, opset_version=13,
                              input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        np.savez(Path(td) / "d.npz", images=imgs, segments=segs)
        if not Path(py).exists():
            result["alibi"] = None
            result["alibi_error"] = f"{py} not found (python3 -m venv /work/alibi-venv && pip install alibi onnxruntime)"
        else:
            r = subprocess.run([py, "-c", ALIBI_SCRIPT, str(Path(td) / "d.npz"), str(onnx_path), json.dumps(params)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                result["alibi"] = None
                result["alibi_error"] = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"
            else:
                result["alibi"] = json.loads(r.stdout.strip().splitlines()[-1])
                for i, row in enumerate(result["alibi"]):   # re-estimate alibi's anchors on our side
                    tgt = int(model.predict(imgs[i][None])[0].argmax())
                    row["fresh_precision"] = precision_of(model, imgs[i], row["features"], segs[i], tgt, n=1000,
                                                          seed=777 + i)
                    row["anchor_size"] = len(row["features"])
    for rate, rows in ours.items():
        xs = np.array([o["calls"] for o in rows], float)
        result[f"xaudit_{rate}_calls_median"] = float(np.median(xs))
        result[f"xaudit_{rate}_fresh_precision_min"] = float(min(o["fresh_precision"] for o in rows))
        result[f"xaudit_{rate}_coverage_mean"] = float(np.mean([o["coverage"] for o in rows]))
        result[f"xaudit_{rate}_fresh_precision_mean"] = float(np.mean([o["fresh_precision"] for o in rows]))
        if result.get("alibi"):
            al = np.array([o["calls"] for o in result["alibi"]], float)
            result["alibi_calls_median"] = float(np.median(al))
            result["alibi_coverage_mean"] = float(np.mean([o["coverage"] or 0 for o in result["alibi"]]))
            result["alibi_fresh_precision_min"] = float(min(o["fresh_precision"] for o in result["alibi"]))
            result["alibi_fresh_precision_mean"] = float(np.mean([o["fresh_precision"] for o in result["alibi"]]))
            result[f"ratio_{rate}_per_image"] = [float(a / x) for a, x in zip(al, xs)]
            result[f"ratio_{rate}_median"] = float(np.median(al / xs))
            result[f"ratio_{rate}_total"] = float(al.sum() / xs.sum())
    if result.get("alibi"):
        result["target_met"] = result["ratio_default_median"] >= 5
    out = HERE / "results" / "bench_anchors.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("xaudit", "alibi") and "per_image" not in k}, indent=2))


if __name__ == "__main__":
    main()
