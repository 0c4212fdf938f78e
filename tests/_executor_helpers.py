"""Task functions and fixtures shared by the executor tests (importable by spawned workers
and Ray actors, which is why they live in a module and not in the test files)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def slow_task(model, task):
    """Sleeps ``task.params['sleep']`` seconds, returns (key, pid, a prediction)."""
    time.sleep(float(task.params.get("sleep", 0.2)))
    x = np.full(tuple(model.input_size) + (3,), (task.seed or 0) / 100.0, np.float32)
    return task.key, os.getpid(), model.predict(x[None])[0]


def kill_self_task(model, task):
    """The poison task: kills its own worker process."""
    import signal
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(5)


def raising_task(model, task):
    if task.params.get("fail"):
        raise ValueError(f"task {task.key} was told to fail")
    return task.key


def write_sign_pngs(directory, n: int, seed: int = 5, size: int = 64) -> list[Path]:
    """n generated sign images as PNG files (a real image folder)."""
    from PIL import Image

    from xaudit.data.generate import make_signs
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ims, _, _ = make_signs(n, seed=seed, size=size)
    paths = []
    for i, im in enumerate(ims):
        p = d / f"sign{i:03d}.png"
        Image.fromarray(im).save(p)
        paths.append(p)
    return paths


def attributions(out_dir) -> dict:
    """{relative folder: attribution array} of every explanation under out_dir."""
    out = {}
    for p in sorted(Path(out_dir).rglob("attribution.npy")):
        out[str(p.parent.relative_to(out_dir))] = np.load(p)
    return out


def ledger_lines(out_dir) -> list[dict]:
    import json
    p = Path(out_dir) / ".xaudit-tasks.jsonl"
    if not p.exists():
        return []
    rows = []
    for ln in p.read_text().splitlines()[1:]:
        try:
            rows.append(json.loads(ln))
        except ValueError:
            pass
    return rows
