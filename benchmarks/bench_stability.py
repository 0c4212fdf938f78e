"""Cost of a 9-seed stability sweep divided by the cost of one explanation (same image,
same method, wall time, median of >= 3). Target: <= 9.5x (the sweep reuses the
segmentation when it is fixed and feeds all seeds' samples to the model in large batches).

    python benchmarks/bench_stability.py [--quick]
Result: benchmarks/results/bench_stability.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from _gradnets import ResNet
    from _pertnets import TorchBlackBox
    from xaudit.explainers.lime import Lime
    from xaudit.explainers.segmentation import _CACHE
    from xaudit.stability import DEFAULT_SEEDS, stability_sweep
    model = TorchBlackBox(ResNet(n=43, w=16, seed=0), input_size=(64, 64), labels=[str(i) for i in range(43)])
    rng = np.random.default_rng(0)
    img = np.clip(rng.random((8, 8, 3)).repeat(8, 0).repeat(8, 1) + rng.normal(0, 0.05, (64, 64, 3)), 0, 1).astype(np.float32)
    samples = 300 if args.quick else 1000
    res = {"samples": samples, "seeds": list(DEFAULT_SEEDS), "cases": {}}
    for vary in ("sampling", "both"):
        one, sweep = [], []
        for r in range(args.reps):
            _CACHE.clear()
            t0 = time.perf_counter()
            Lime(num_samples=samples, seed=1, vary=vary).explain(model, img)
            one.append(time.perf_counter() - t0)
            _CACHE.clear()
            t0 = time.perf_counter()
            stability_sweep(model, img, "lime", seeds=DEFAULT_SEEDS, vary=vary, num_samples=samples)
            sweep.append(time.perf_counter() - t0)
        ratio = float(np.median(sweep) / np.median(one))
        res["cases"][f"lime vary={vary}"] = {"one_s": float(np.median(one)), "sweep_s": float(np.median(sweep)),
                                             "ratio": ratio, "target_met": ratio <= 9.5}
        print(vary, res["cases"][f"lime vary={vary}"], file=sys.stderr)
    out = HERE / "results" / "bench_stability.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
