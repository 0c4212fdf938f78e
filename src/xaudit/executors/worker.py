"""Worker-side state: the model is loaded ONCE per worker (process, Ray actor, or the
driver itself for the local executor) from a picklable :class:`ModelSpec`, torch runs
with a fixed intra-op thread count, and every task runs through :func:`run_one`, which
never raises (a failing task returns its error as text).

Determinism: torch's intra-op thread count changes how float reductions are split, so
the same explanation computed with 1 and 2 threads can differ in the last bits
(measured here: LIME weights on ``signs.pt`` differ by ~2e-9). Every executor therefore
runs tasks with the same thread count (``threads``, default 1) -- results are then
bit-identical whichever executor runs them.
"""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass

# per-process state (one model per worker)
_STATE: dict = {"spec": None, "model": None, "loads": 0, "threads": None}


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load the model itself: the source (path or
    ``module:factory``) and the load overrides (``xaudit.loader.load_model`` keywords).
    Picklable; never holds the model. The model files can be shipped to remote workers as
    bytes: :meth:`packed` / :func:`unpack`."""

    source: str
    overrides: tuple = ()          # sorted (key, value) pairs, hashable

    @classmethod
    def of(cls, source, overrides: dict | None = None) -> "ModelSpec":
        ov = tuple(sorted((k, _hashable(v)) for k, v in (overrides or {}).items()))
        return cls(str(source), ov)

    @classmethod
    def from_args(cls, args, source=None) -> "ModelSpec":
        from ..cli.common import model_overrides
        return cls.of(source or args.model, model_overrides(args))

    @property
    def kwargs(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.overrides}

    def load(self):
        from ..loader import load_model
        return load_model(self.source, **self.kwargs)

    # ------------------------------------------------------------- shipping the files
    def packed(self) -> dict:
        """``{"files": {arcname: bytes}, "source": arcname, "overrides": {k: arcname}}``:
        the model files as bytes, to ship through Ray's object store to workers that do
        not share the driver's file system. A file source travels with its sidecars
        (siblings named ``<stem>.*`` and ``labels.txt``), a bundle folder whole, plus the
        override files (``labels``, factory ``weights``). A ``module:factory`` source is
        not a file: that module must be importable on the workers."""
        from pathlib import Path
        src = Path(self.source)
        files, ov, source = {}, {}, self.source
        if src.is_dir():
            for p in sorted(src.rglob("*")):
                if p.is_file():
                    files[f"model/{src.name}/{p.relative_to(src).as_posix()}"] = p.read_bytes()
            source = f"model/{src.name}"
        elif src.is_file():
            stem = src.name.split(".")[0]
            for p in sorted(src.parent.iterdir()):
                if p.is_file() and (p.name == src.name or p.name.startswith(stem + ".") or p.name == "labels.txt"):
                    files[f"model/{p.name}"] = p.read_bytes()
            source = f"model/{src.name}"
        for i, k in enumerate(("labels", "weights")):
            v = self.kwargs.get(k)
            if v and Path(v).is_file():
                arc = f"extra{i}/{Path(v).name}"
                files[arc] = Path(v).read_bytes()
                ov[k] = arc
        return {"files": files, "source": source, "overrides": ov}


def unpack(bundle: dict, spec: "ModelSpec") -> "ModelSpec":
    """Write a packed bundle into a private temp folder -> a spec pointing there."""
    import tempfile
    from pathlib import Path
    root = Path(tempfile.mkdtemp(prefix="xaudit-model-"))
    for arc, data in bundle["files"].items():
        p = root / arc
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    kw = spec.kwargs
    for k, arc in bundle["overrides"].items():
        kw[k] = str(root / arc)
    src = str(root / bundle["source"]) if bundle["files"] and (root / bundle["source"]).exists() else spec.source
    return ModelSpec.of(src, kw)


def _hashable(v):
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def set_threads(threads: int | None):
    """Fix torch's intra-op thread count for this process (None: leave it)."""
    if threads is None:
        return
    import torch
    if torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
    _STATE["threads"] = int(threads)


def init_worker(spec: ModelSpec | None, threads: int | None = 1, model=None):
    """Called once in each worker (before the first task). ``model``: an already loaded
    model (the local executor reuses the driver's)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads or 1))
    set_threads(threads)
    if model is not None:
        _STATE.update(spec=spec, model=model)
    elif spec is not None and _STATE["spec"] != spec:
        _STATE.update(spec=spec, model=None)


def get_model():
    """The worker's model, loaded on first use (exactly once per worker and spec)."""
    if _STATE["model"] is None:
        spec = _STATE["spec"]
        if spec is None:
            raise RuntimeError("worker has no model spec")
        _STATE["model"] = spec.load()
        _STATE["loads"] += 1
    return _STATE["model"]


def loads() -> int:
    """How many times this process loaded a model (tests check: once per worker)."""
    return int(_STATE["loads"])


def worker_id() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


@dataclass
class Outcome:
    """What a worker sends back for one task."""

    ok: bool
    value: object = None
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""
    loads: int = 0
    user_error: bool = False    # an XauditError (bad input the user can fix), not a crash


def run_one(fn, task) -> Outcome:
    """Run ``fn(model, task)`` on this worker's model; never raises."""
    t0 = time.perf_counter()
    try:
        model = get_model()
        value = fn(model, task)
        return Outcome(True, value, None, time.perf_counter() - t0, worker_id(), loads())
    except BaseException as e:  # noqa: BLE001 - reported per task
        if isinstance(e, KeyboardInterrupt):
            raise
        from ..errors import XauditError
        user = isinstance(e, XauditError)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        err = msg if (user and msg) else (f"{type(e).__name__}: {msg}" if msg else type(e).__name__)
        if os.environ.get("XAUDIT_DEBUG"):
            err += "\n" + traceback.format_exc()
        return Outcome(False, None, err, time.perf_counter() - t0, worker_id(), loads(), user)
