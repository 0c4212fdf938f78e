"""Gradient explainers: seconds per explanation / seconds of one forward pass.

    python benchmarks/bench_gradients.py [--quick] [--threads N]

Models: the shipped sign model (``signs.pt`` via ``xaudit.load_model``, 64 px; skipped if
absent) through its adapter, the same model as ONNX (``signs.onnx``), and a ResNet18-sized
BatchNorm net at 224 px written here (BasicBlock x [2,2,2,2], widths 64..512, random
weights), as an eager module and exported to ONNX (loaded by the ONNX adapter: onnxruntime
for the forward pass, the native ONNX->torch executor for gradients). One forward pass = ``model.predict`` on one image. Each explainer time is the
full ``explainer.explain(model, image)`` call (it includes the prediction that picks the
target). Median of ``--repeats`` (>= 3) runs, side by side in one process. Results:
``benchmarks/results/gradients.json``. Target: FullGrad <= 3x one forward pass.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from xaudit.model import Model, Preprocessing


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for i, w in enumerate((64, 128, 256, 512)):
            layers.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ModuleModel(Model):
    """Minimal in-script adapter for the ResNet18-sized net."""
    format = "torch"

    def __init__(self, module, size):
        self.module = module.eval()
        self._setup(source="resnet18-sized", labels=[str(i) for i in range(1000)], input_size=(size, size),
                    preprocessing=Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
                    output_kind="logits")
        self._d = None

    def _forward_native(self, native):
        with torch.no_grad():
            return self.module(torch.from_numpy(native)).numpy()

    def _check_gradients(self):
        from xaudit.white_box import for_torch_module
        self._d = for_torch_module(self.module, self.preprocessing, self.input_size)
        return True, self._d.notes

    def _differentiable(self):
        return self._d


def timeit(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_model(name, model, repeats, ig_steps):
    from xaudit.explainers import get_explainer
    rng = np.random.default_rng(0)
    img = rng.random((*model.input_size, 3), dtype=np.float32)
    fwd = timeit(lambda: model.predict(img[None]), max(repeats, 5))
    row = {"model": name, "input_size": list(model.input_size), "forward_s": fwd, "methods": {}}
    for method, kw in (("fullgrad", {}), ("gradcam", {}), ("ig", {"steps": ig_steps})):
        ex = get_explainer(method, **kw)
        t = timeit(lambda: ex.explain(model, img), repeats)
        row["methods"][method] = {"seconds": t, "ratio_to_forward": t / fwd, **({"steps": ig_steps} if kw else {})}
    e = get_explainer("fullgrad").explain(model, img)
    row["fullgrad_completeness_error"] = e.meta["completeness_error"]
    print(f"{name:28s} fwd {fwd * 1e3:8.2f} ms | " + " | ".join(
        f"{m} {v['seconds'] * 1e3:8.1f} ms ({v['ratio_to_forward']:.2f}x)" for m, v in row["methods"].items()),
        flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats, IG with 16 steps")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable ratios on a shared box)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gradients.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    repeats = a.repeats or (3 if a.quick else 7)
    ig_steps = 16 if a.quick else 50
    rows = []
    try:
        from xaudit import data as xdata
        from xaudit.loader import load_model
        for fname in ("signs.pt", "signs.onnx"):
            try:
                p = xdata.model_path(fname)
            except Exception:  # noqa: BLE001
                p = None
            if p and Path(p).exists():
                rows.append(bench_model(f"shipped {fname}", load_model(str(p)), repeats, ig_steps))
            else:
                print(f"(shipped {fname} not available: skipped)", file=sys.stderr)
    except ImportError as e:
        print(f"(shipped models not available: {e})", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    net = ResNet18()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    rows.append(bench_model("resnet18-sized 224px", ModuleModel(net, 224), repeats, ig_steps))
    try:  # the same net as an ONNX file, through the ONNX adapter and the native executor
        import io
        import tempfile
        import warnings

        from xaudit.loader import load_model
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), buf, dynamo=False, opset_version=13,
                              input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "resnet18.onnx"
            f.write_bytes(buf.getvalue())
            m = load_model(str(f), mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
            rows.append(bench_model("resnet18-sized 224px ONNX", m, repeats, ig_steps))
    except ImportError as e:
        print(f"(ONNX row skipped: {e})", file=sys.stderr)
    out = {"threads": a.threads, "repeats": repeats, "torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "quick": a.quick, "results": rows,
           "target": "fullgrad ratio_to_forward <= 3"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
