"""Monitor throughput (records/min on one core) and peak memory at growing capture sizes
(synthetic capture generated here; memory must stay flat), and serve requests/s over
loopback vs direct ``predict``.

    python benchmarks/bench_monitor.py [--quick]
Result: benchmarks/results/monitor.json (+ monitor_simulation.json without --quick)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

CHILD = """
import json, resource, sys, time
from xaudit.monitoring import run_monitor, Baseline
base = Baseline.load(sys.argv[2])
t = time.perf_counter()
r = run_monitor(sys.argv[1], base, window="1h")
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "records": r.read.records, "windows": len(r.windows),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_monitor(sizes, classes=43):
    import numpy as np

    from xaudit.monitoring import build_baseline
    from xaudit.monitoring import synthetic as sy
    rows = []
    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(0)
        _, probs = sy.draw(3000, sy.base_shares(classes, 0), rng)
        bpath = Path(d) / "baseline.json"
        bpath.write_text(json.dumps(build_baseline(probs, model_info={"source": "synthetic"}, source={})))
        for n in sizes:
            cap = Path(d) / f"cap{n}"
            t = time.perf_counter()
            sy.write_capture_fast(cap, n, classes, seed=1, step_seconds=3600 * 24 / max(n, 1))  # one day
            gen = time.perf_counter() - t
            size = sum(f.stat().st_size for f in cap.rglob("*.jsonl"))
            env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
            cmd = [sys.executable, "-c", CHILD, str(cap), str(bpath)]
            if hasattr(os, "sched_setaffinity"):
                cmd = ["taskset", "-c", "0", *cmd] if subprocess.run(["which", "taskset"],
                                                                    capture_output=True).returncode == 0 else cmd
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout)
            out.update({"n": n, "capture_mb": size / 2**20, "generate_seconds": gen,
                        "records_per_min": out["records"] / out["seconds"] * 60})
            print(f"monitor {n:>8} records ({out['capture_mb']:.0f} MB, {out['windows']} windows): "
                  f"{out['records_per_min']:,.0f} records/min, peak RSS {out['peak_rss_mb']:.0f} MB", flush=True)
            rows.append(out)
            import shutil
            shutil.rmtree(cap)
    return rows


def bench_serve(requests, clients=8):
    import httpx
    import numpy as np

    import _monitor_helpers as h
    with tempfile.TemporaryDirectory() as d:
        try:
            from xaudit.data import model_path
            mf = Path(model_path("signs.onnx"))
            from xaudit.data.generate import make_signs
            imgs = make_signs(200, seed=0)[0]
            name = "signs.onnx"
        except Exception:  # noqa: BLE001 - shipped model not available: the test model
            mf = h.make_onnx(Path(d) / "colour.onnx")
            imgs = h.images(200, seed=0)
            name = "test colour model (16x16 ONNX)"
        model = h.load(mf) if name != "signs.onnx" else __import__("xaudit.loader").loader.load_model(str(mf))
        bodies = [h.png(im) for im in imgs]
        # direct: one image per predict call (what a request does), decode included
        t = time.perf_counter()
        for i in range(requests):
            model.predict(model.preprocess(bodies[i % len(bodies)]))
        direct = requests / (time.perf_counter() - t)
        proc, url = h.start_server(mf, Path(d) / "cap", pct=50)
        try:
            idx = iter(range(requests))
            lock = threading.Lock()

            def worker():
                with httpx.Client(base_url=url, timeout=60) as c:
                    while True:
                        with lock:
                            i = next(idx, None)
                        if i is None:
                            return
                        r = c.post("/invocations", content=bodies[i % len(bodies)],
                                   headers={"content-type": "image/png"})
                        assert r.status_code == 200
            t = time.perf_counter()
            ts = [threading.Thread(target=worker) for _ in range(clients)]
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            served = requests / (time.perf_counter() - t)
        finally:
            proc.terminate()
            proc.wait()
    res = {"model": name, "requests": requests, "clients": clients, "direct_predict_per_s": direct,
           "served_requests_per_s": served, "served_over_direct": served / direct,
           "note": "client and server share the machine's cores; capture at 50 %"}
    print(f"serve ({name}): {served:.0f} req/s over loopback with 50 % capture vs {direct:.0f} direct predict/s "
          f"(ratio {served / direct:.2f})")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sizes = [10**4, 10**5] if args.quick else [10**4, 10**5, 10**6]
    res = {"monitor": bench_monitor(sizes), "serve": bench_serve(500 if args.quick else 2000)}
    if not args.quick:  # false-alarm rate / power simulation (also asserted in tests/test_monitor.py)
        from xaudit.monitoring.simulation import simulate
        sim = {k: simulate(windows=1000, imbalanced=k == "imbalanced") for k in ("uniform", "imbalanced")}
        (HERE / "results" / "monitor_simulation.json").write_text(json.dumps(sim, indent=1))
        for k, r in sim.items():
            print(f"simulation ({k} baseline): false alarms "
                  + ", ".join(f"n={x['n']}: {x['rate']:.3f}" for x in r["false_alarm"])
                  + "; power " + ", ".join(f"n={x['n']}: {x['rate']:.3f}" for x in r["power"]))
    rss = [r["peak_rss_mb"] for r in res["monitor"]]
    res["memory_flat"] = {"peak_rss_mb": rss, "growth_mb": rss[-1] - rss[0]}
    out = HERE / "results" / "monitor.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
