"""Helpers of the capture/serve/monitor tests: a tiny real ONNX model, a real uvicorn
server in a subprocess, free ports."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZE = 16
NCLS = 5


def make_onnx(path, n_classes=NCLS, size=SIZE, seed=0):
    """Colour classifier: per-channel means -> linear -> softmax (ONNX, real onnxruntime)."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.fc = nn.Linear(3, n_classes)
            with torch.no_grad():
                self.fc.weight.copy_(torch.randn(n_classes, 3, generator=g) * 6)
                self.fc.bias.copy_(torch.randn(n_classes, generator=g))

        def forward(self, x):
            return torch.softmax(self.fc(x.mean((2, 3)) - 0.5), 1)

    net = Net().eval()
    buf = io.BytesIO()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, size, size), buf, input_names=["input"], output_names=["probs"],
                          dynamic_axes={"input": {0: "n"}, "probs": {0: "n"}}, opset_version=13, dynamo=False)
    Path(path).write_bytes(buf.getvalue())
    Path(path).with_suffix(".labels.txt").write_text("\n".join(f"class{i}" for i in range(n_classes)) + "\n")
    return Path(path)


def loader_ready() -> bool:
    try:
        from xaudit.loader import load_model  # noqa: F401
        return True
    except ImportError:
        return False


class OnnxFileModel:
    """Fallback Model over an ONNX file while xaudit.load_model is not available."""

    def __new__(cls, path, labels=None):
        import onnxruntime as ort

        from xaudit.model import Model, Preprocessing

        class _M(Model):
            format = "onnx"

            def __init__(self):
                self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                self._in = self.sess.get_inputs()[0].name
                self._setup(source=str(path), labels=labels, input_size=(SIZE, SIZE),
                            preprocessing=Preprocessing(), output_kind="probabilities")

            def _forward_native(self, native):
                return self.sess.run(None, {self._in: native})[0]
        return _M()


def load(path):
    labels = [f"class{i}" for i in range(NCLS)]
    if loader_ready():
        from xaudit.loader import load_model
        return load_model(str(path), labels=labels)
    return OnnxFileModel(path, labels)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


SERVER_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import _monitor_helpers as h
from xaudit.serve import serve
model = h.load({model!r})
serve(model, host="127.0.0.1", port={port}, capture_dir={capture!r}, sampling_percentage={pct},
      endpoint="ep", variant="AllTraffic", seed={seed}, max_bytes={max_bytes})
"""


def start_server(model_path, capture, pct=50.0, seed=0, max_bytes=1 << 20, cli=None):
    """A real uvicorn server in a subprocess; returns (proc, base_url). Uses the
    ``xaudit serve`` command when the loader exists, else the same app from a script."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    if cli is None:
        cli = loader_ready()
    if cli:
        cmd = [sys.executable, "-m", "xaudit", "--no-track", "serve", str(model_path), "--port", str(port),
               "--capture", str(capture), "--sampling-percentage", str(pct), "--endpoint", "ep",
               "--seed", str(seed), "--max-bytes", str(max_bytes),
               "--labels", str(Path(model_path).with_suffix(".labels.txt"))]
    else:
        cmd = [sys.executable, "-c", SERVER_SCRIPT.format(tests=str(Path(__file__).parent), model=str(model_path),
                                                          port=port, capture=str(capture), pct=pct, seed=seed,
                                                          max_bytes=max_bytes)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    import httpx
    t0 = time.time()
    while time.time() - t0 < 60:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/ping", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def images(n, seed=0, size=SIZE):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 1, 1, 3))
    noise = rng.integers(-20, 21, size=(n, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def png(img) -> bytes:
    from PIL import Image
    b = io.BytesIO()
    Image.fromarray(img).save(b, format="PNG")
    return b.getvalue()
