"""The benchmark runner (``python -m benchmarks``): quick path on one cheap benchmark writes a
valid JSON record and a Markdown table; bad arguments exit 2 with one line. Timings are
never asserted here (the benchmarks report them)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def runner(*args, env=None, timeout=300):
    e = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, capture_output=True, text=True,
                          env=e, timeout=timeout)


def test_quick_anchors_without_alibi_writes_json_and_markdown(tmp_path):
    committed = (ROOT / "benchmarks" / "RESULTS.md")
    before = committed.read_bytes() if committed.exists() else None
    r = runner("--quick", "--only", "anchors", "--out", str(tmp_path),
               env={"ALIBI_PYTHON": str(tmp_path / "no-such-python")})
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "bench_anchors.json").read_text())
    assert rec["benchmark"] == "anchors" and rec["quick"] is True and rec["repeats"] == 3
    m = rec["machine"]
    assert m["cores"] >= 1 and m["cpu"] and m["versions"]["torch"] and m["versions"]["python"]
    assert "lime" in m["versions"] and "captum" in m["versions"] and "onnxruntime" in m["versions"]
    assert len(rec["load_average_before"]) == 3 and len(rec["load_average_after"]) == 3
    assert m["git"]["commit"] is None or len(m["git"]["commit"]) == 40
    res = rec["result"]
    assert "error" not in res
    rows = res["xaudit"]["default"]
    assert len(rows) >= 3 and all(r["calls"] > 0 and 0 <= r["fresh_precision"] <= 1 for r in rows)
    (t,) = res["targets"]
    assert t["met"] is None and t["status"] == "skipped: alibi not installed"
    md = (tmp_path / "RESULTS.md").read_text()
    assert "## anchors (quick mode)" in md and "skipped: alibi not installed" in md
    assert "| tool | model calls (median) |" in md and "## Machine" in md and "## Targets" in md
    # --out elsewhere never touches the committed results
    after = committed.read_bytes() if committed.exists() else None
    assert after == before


def test_unknown_benchmark_is_a_one_line_error(tmp_path):
    r = runner("--only", "no_such_bench", "--out", str(tmp_path), timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown benchmark 'no_such_bench'" in r.stderr
    assert not list(tmp_path.glob("*.json"))


def test_render_reports_errors_and_missed_targets():
    sys.path.insert(0, str(ROOT))
    from benchmarks.__main__ import render
    from benchmarks._common import target
    recs = [{"benchmark": "a", "quick": True, "repeats": 3, "machine": {}, "result": {"error": "ValueError: boom"}},
            {"benchmark": "b", "quick": False, "repeats": 3, "machine": {},
             "result": {"table": [{"x": 1.5}], "targets": [target("t <= 1", 2.0, "<=", 1.0, why="too slow")]}},
            {"benchmark": "c", "quick": False, "repeats": 3, "machine": {},
             "result": {"speedup": {"median": 3.0, "values": [3.0]}, "target_met": True}}]
    md = render(recs)
    assert "**error**: `ValueError: boom`" in md
    assert "**not met**" in md and "- **t <= 1** (b): too slow" in md
    assert "| speedup | 3.00 |" in md and "| c | target_met |" in md


def test_a_benchmark_that_raises_is_recorded_as_an_error():
    import types
    sys.path.insert(0, str(ROOT))
    from benchmarks.__main__ import run_one
    mod = types.ModuleType("benchmarks.bench_raises_for_test")

    def run(quick=False, repeats=3):
        raise ValueError("boom")
    mod.run = run
    sys.modules[mod.__name__] = mod
    try:
        rec, ok = run_one("raises_for_test", quick=True, repeats=3)
    finally:
        del sys.modules[mod.__name__]
    assert ok is False and rec["result"] == {"error": "ValueError: boom"}
    assert rec["benchmark"] == "raises_for_test" and rec["machine"]["cores"] >= 1
