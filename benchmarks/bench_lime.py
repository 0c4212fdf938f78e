"""LIME overhead over pure model time at 1 000 samples: xaudit (batched, vectorised) vs
``lime_image`` defaults (batch_size=10), side by side, same model, same superpixels.

overhead = (total explanation time - time inside model.predict) / time inside model.predict
(model.predict = the black-box predict function: adapter preprocessing + runtime).
Models: a small 64 px CNN (the shipped sign model when present, else a small ResNet) and a
ResNet18-sized network at 224 px (random weights; cost is what matters). Median of >= 3
repetitions. Target for xaudit: <= 5 %.

    python benchmarks/bench_lime.py [--quick]
Result: benchmarks/results/bench_lime.json
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
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.sc = None if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (x if self.sc is None else self.sc(x)))


class ResNet18(nn.Module):
    def __init__(self, n=43):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [Basic(cin, cout, s), Basic(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, n)

    def forward(self, x):
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))


class Timed:
    """Wraps a Model: accumulates the seconds spent inside ``model.predict`` (the black-box
    predict function both LIMEs call: adapter preprocessing + runtime)."""

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


def small_model():
    from _pertnets import TorchBlackBox
    try:
        from xaudit.data import model_path
        from xaudit.loader import load_model
        return load_model(model_path("signs.onnx")), "signs.onnx (shipped)"
    except Exception:  # noqa: BLE001
        from _gradnets import ResNet
        net = ResNet(n=43, w=16, seed=0)
        return TorchBlackBox(net, input_size=(64, 64), labels=[str(i) for i in range(43)]), "small ResNet 64px"


def run_one(model, timed, img, samples, which, segs_kw):
    from lime import lime_image
    from xaudit.explainers.lime import Lime
    timed.t = 0.0
    t0 = time.perf_counter()
    if which == "xaudit":
        Lime(num_samples=samples, seed=0, **segs_kw).explain(model, img)
    else:
        from xaudit.explainers.segmentation import segment, segmentation_params
        segs = segment(img, segs_kw["segmentation"], 0, **segmentation_params(segs_kw["segmentation"],
                                                                               segs_kw.get("segmentation_params")))
        probs = model.predict(img[None])[0]
        lime_image.LimeImageExplainer(random_state=0).explain_instance(
            img.astype(np.float64), lambda b: model.predict(np.asarray(b, np.float32)), labels=(int(probs.argmax()),),
            top_labels=None, num_samples=samples, segmentation_fn=lambda _i: segs, random_seed=0)
    total = time.perf_counter() - t0
    return total, timed.t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", default="small,big", help="which models: small,big (results merged into the JSON)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import os
    os.environ.setdefault("TQDM_DISABLE", "1")
    from _pertnets import TorchBlackBox
    samples = 1000
    rng = np.random.default_rng(0)
    small, small_name = small_model()
    wanted = set(args.cases.split(","))
    cases = [(small_name, small)] if "small" in wanted else []
    if "big" in wanted:
        big = TorchBlackBox(ResNet18().eval(), input_size=(224, 224), labels=[str(i) for i in range(43)])
        cases.append(("ResNet18 224px", big))
    if args.quick:
        samples = 200
    seg = {"segmentation": "quickshift", "segmentation_params": None}
    out = HERE / "results" / "bench_lime.json"
    res = {"samples": samples, "reps": args.reps, "cases": {}}
    if out.exists() and wanted != {"small", "big"}:
        try:
            res["cases"] = json.loads(out.read_text()).get("cases", {})
        except ValueError:
            pass
    for name, model in cases:
        h, w = model.input_size
        img = np.clip(rng.random((8, 8, 3)).repeat(h // 8, 0).repeat(w // 8, 1)
                      + rng.normal(0, 0.05, (h, w, 3)), 0, 1).astype(np.float32)
        timed = Timed(model)
        row = {}
        runs = {"xaudit": [], "lime_image": []}
        for _ in range(args.reps):          # interleaved, so both see the same machine load
            for which in ("xaudit", "lime_image"):
                runs[which].append(run_one(model, timed, img, samples, which, seg))
        for which, rr in runs.items():
            row[which] = {"total_s": float(np.median([t for t, _ in rr])),
                          "model_s": float(np.median([m for _, m in rr])),
                          "overhead": float(np.median([(t - m) / m for t, m in rr]))}
            print(name, which, row[which], file=sys.stderr)
        row["total_time_ratio_xaudit_over_lime"] = row["xaudit"]["total_s"] / row["lime_image"]["total_s"]
        row["target_met"] = row["xaudit"]["overhead"] <= 0.05
        res["cases"][name] = row
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
