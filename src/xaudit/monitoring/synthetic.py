"""Seeded synthetic predictions and captures (tests, simulation, benchmarks)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from ..capture.schema import dumps_line, make_record
from ..capture.writer import CaptureWriter


def base_shares(c: int = 43, seed: int = 0) -> np.ndarray:
    """Imbalanced class shares like GTSRB's (about 10x between common and rare classes)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.3, 3.0, size=c)
    return w / w.sum()


def sample_softmax(classes: np.ndarray, c: int, rng, sharpness=(2.5, 9.0)) -> np.ndarray:
    """Softmax rows whose argmax is ``classes`` (logit margin drawn per row)."""
    n = len(classes)
    z = rng.normal(0, 1, size=(n, c))
    z[np.arange(n), classes] += rng.uniform(*sharpness, size=n)
    z = z - z.max(1, keepdims=True)
    # make sure the intended class wins
    z[np.arange(n), classes] = np.maximum(z[np.arange(n), classes], 0) + 1e-3
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float64)


def draw(n: int, shares: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    cls = rng.choice(len(shares), size=n, p=shares)
    return cls, sample_softmax(cls, len(shares), rng)


def shifted(shares: np.ndarray, target: int, mass: float = 0.1) -> np.ndarray:
    """Raise class ``target``'s share by ``mass`` (others scaled down proportionally)."""
    s = shares.astype(np.float64).copy()
    rest = 1 - s[target]
    s = s * (rest - mass) / rest
    s[target] = shares[target] + mass
    return s


def write_capture(root, probs: np.ndarray, start: datetime | None = None, step_seconds: float = 1.0,
                  endpoint: str = "synthetic", variant: str = "AllTraffic", payload: bytes = b"\x89PNG",
                  max_bytes: int = 64 * 1024 * 1024):
    """Write one record per row of ``probs`` at start + i*step through the real writer."""
    import json
    start = start or datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
    w = CaptureWriter(root, endpoint, variant, max_bytes=max_bytes)
    for i, row in enumerate(probs):
        t = start + timedelta(seconds=i * step_seconds)
        out = json.dumps({"probabilities": [round(float(v), 6) for v in row], "predicted_index": int(np.argmax(row))},
                         separators=(",", ":"))
        w.write_record(make_record(payload, "image/png", out, inference_time=t), t)
    w.close()
    return w


def write_capture_fast(path, n: int, c: int, seed: int = 0, start: datetime | None = None,
                       step_seconds: float = 0.01, chunk: int = 10000):
    """Large synthetic capture in one hour-folder file per hour (benchmarks)."""
    import json
    from pathlib import Path
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 11, 22, 0, 0, 0, tzinfo=timezone.utc)
    shares = base_shares(c, seed)
    files = {}
    done = 0
    payload = b"x" * 64
    try:
        while done < n:
            m = min(chunk, n - done)
            _, probs = draw(m, shares, rng)
            for i in range(m):
                t = start + timedelta(seconds=(done + i) * step_seconds)
                d = Path(path) / "bench" / "AllTraffic" / t.strftime("%Y/%m/%d/%H")
                f = files.get(d)
                if f is None:
                    d.mkdir(parents=True, exist_ok=True)
                    f = files[d] = open(d / "bench.jsonl", "ab")
                out = json.dumps([round(float(v), 5) for v in probs[i]], separators=(",", ":"))
                f.write(dumps_line(make_record(payload, "image/png", out, inference_time=t)))
            done += m
    finally:
        for f in files.values():
            f.close()
