"""Task functions ``fn(model, task) -> small picklable result`` run on the workers.

Each is a module-level function (picklable by reference). The output files of an
explanation are rendered on the worker (``Explanation.save`` into a private temp folder,
read back as bytes), so the driver only writes bytes: the overlay rendering is spread
over the workers and the driver needs no shared file system with them.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .images import ref_name, resolve_image


def render_files(exp, prefix: str = "") -> dict:
    """``Explanation.save`` into a temp folder -> ``{prefix + name: bytes}``."""
    with tempfile.TemporaryDirectory(prefix="xaudit-task-") as tmp:
        exp.save(tmp)
        out = {}
        for root, _, names in os.walk(tmp):
            for n in names:
                p = Path(root) / n
                out[prefix + p.relative_to(tmp).as_posix()] = p.read_bytes()
    return out


def explain_task(model, task) -> dict:
    """``task.method`` with ``task.params = {"explainer": {...}, "target": t, "meta": {...}}``
    on ``task.image`` -> ``{"explanation": Explanation, "files": {name: bytes}}``."""
    from ..explainers import explainer_class
    p = task.params or {}
    kw = dict(p.get("explainer") or {})
    if task.seed is not None:
        kw["seed"] = int(task.seed)
    exp = explainer_class(task.method)(**kw).explain(model, resolve_image(task.image), p.get("target"))
    exp.meta.update(p.get("meta") or {})
    return {"explanation": exp, "files": render_files(exp)}


def stability_task(model, task) -> dict:
    """All seeds of one image (the seeds share the segmentation work and LIME batches
    their samples together, as in ``stability_sweep``) ->
    ``{"image": ImageStability, "files": {"seed-<s>/<name>": bytes}, "model_calls": n}``.
    ``task.params = {"explainer": {...}, "seeds": [...], "vary": ..., "target": t, "name": str}``."""
    from ..stability import analyse, explain_seeds, sweep_explainer
    p = task.params
    base, seeded = sweep_explainer(task.method, p.get("vary", "both"), **(p.get("explainer") or {}))
    before = model.counter.samples
    exps = explain_seeds(model, base, seeded, resolve_image(task.image), p["seeds"], p.get("target"))
    calls = int(model.counter.samples - before)
    files = {}
    for e in exps:
        files.update(render_files(e, prefix=f"seed-{e.seed}/"))
    return {"image": analyse(p.get("name") or ref_name(task.image), exps), "files": files, "model_calls": calls}


def noop_task(model, task):
    """Does nothing (measures the executor's own overhead per task)."""
    return task.key


def predict_task(model, task):
    """Class probabilities of one image (small work unit for tests)."""
    import numpy as np
    x = model.preprocess(resolve_image(task.image))
    return np.asarray(model.predict(x[None])[0])


def load_count_task(model, task):
    """(worker id, model loads in this process) -- tests check one load per worker."""
    from . import worker
    return worker.worker_id(), worker.loads()


def spin_task(model, task):
    """Pure-Python CPU work (``task.params["n"]`` loop iterations): how much CPU a second
    worker process actually gets on this machine (the ceiling for any executor)."""
    s = 0
    for i in range(int(task.params.get("n", 10**6))):
        s += i * i
    return s
