"""Helpers shared by the ``benchmarks/bench_*.py`` modules and the runner.

Result shape (what ``run(quick, repeats) -> dict`` returns; every key optional, extra keys
are kept verbatim in the JSON):

* ``table``: list of flat dicts, one Markdown row each (same keys -> same columns);
* ``targets``: list of :func:`target` dicts (``name``, ``case``, ``value``, ``op``,
  ``threshold``, ``met`` True/False/None, ``status`` "met" | "not met" | "skipped: ...",
  ``why``);
* ``notes``: list of strings printed under the benchmark's table;
* ``skipped``: a string when the whole benchmark could not run (e.g. an optional tool is
  missing) -- a skip is not a failure.

Timing: :func:`side_by_side` interleaves the contenders repetition by repetition, so
both see the same machine load, and keeps every individual value next to the median.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:          # tests/_pertnets.py, tests/_gradnets.py: small real nets
    sys.path.insert(0, str(TESTS))

OPS = {"<=": lambda v, t: v <= t, ">=": lambda v, t: v >= t, "<": lambda v, t: v < t, ">": lambda v, t: v > t}


# ----------------------------------------------------------------------------- statistics
def stats(values) -> dict:
    """Median (the figure reported) plus every individual value."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "values": []}
    return {"median": float(statistics.median(vals)), "min": min(vals), "max": max(vals), "values": vals}


def side_by_side(contenders: dict, repeats: int, warmup: bool = True) -> dict:
    """Run ``contenders`` (name -> callable returning None or a dict of extra measured
    numbers) interleaved ``repeats`` times. Returns name -> {"seconds": stats, <extra>: stats}."""
    repeats = max(int(repeats), 1)
    if warmup:
        for fn in contenders.values():
            fn()
    raw: dict = {name: {"seconds": []} for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            extra = fn() or {}
            raw[name]["seconds"].append(time.perf_counter() - t0)
            for k, v in extra.items():
                raw[name].setdefault(k, []).append(v)
    return {name: {k: stats(v) if all(isinstance(x, (int, float)) for x in v) else v for k, v in d.items()}
            for name, d in raw.items()}


def ratio_stats(num, den) -> dict:
    """Per-repetition ratios num[i] / den[i] (same repetition = same load) and their median."""
    return stats([a / b for a, b in zip(num, den) if b])


def target(name: str, value, op: str, threshold: float, case: str = "", unit: str = "", why: str = "",
           skipped: str | None = None) -> dict:
    """One target's status: met / not met (``why`` explains a miss) / skipped."""
    if skipped is not None or value is None:
        return {"name": name, "case": case, "value": None, "op": op, "threshold": threshold, "unit": unit,
                "met": None, "status": f"skipped: {skipped or 'not measured'}", "why": why}
    met = bool(OPS[op](float(value), float(threshold)))
    return {"name": name, "case": case, "value": float(value), "op": op, "threshold": threshold, "unit": unit,
            "met": met, "status": "met" if met else "not met", "why": "" if met else why}


# ----------------------------------------------------------------------------- machine
def load_average() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    from importlib import metadata
    out = {"python": platform.python_version()}
    for pkg in ("numpy", "torch", "onnxruntime", "lime", "captum", "scikit-image", "scipy", "ray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit() -> dict:
    def git(*a):
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def machine_info() -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        affinity = os.cpu_count()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    import torch
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "cores_usable": affinity, "memory_gb": mem,
            "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
            "ort_threads": os.environ.get("XAUDIT_ORT_THREADS") or "cores (max 4)", "versions": versions(),
            "git": git_commit()}


def quiet_env():
    """Benchmarks time the work, not progress bars."""
    os.environ.setdefault("TQDM_DISABLE", "1")


def log(*a):
    print(*a, file=sys.stderr, flush=True)
