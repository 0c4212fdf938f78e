"""Monitor: statistics, alarm rules, windows, CLI outputs and exit codes, bad inputs."""
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from xaudit.capture import CaptureWriter, make_record
from xaudit.monitoring import Baseline, MonitorConfig, build_baseline, run_monitor
from xaudit.monitoring import synthetic as sy
from xaudit.monitoring.monitor import WindowAcc, evaluate_window

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
KEYS = {"check", "class_index", "class_label", "value", "threshold", "count", "total", "window_start",
        "window_end", "p_value"}


def cli(*argv):
    return subprocess.run([sys.executable, "-m", "xaudit", "--no-track", "--quiet", *map(str, argv)],
                          capture_output=True, text=True, timeout=300)


def _baseline(tmp_path, c=43, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    _, probs = sy.draw(n, np.full(c, 1 / c), rng)
    data = build_baseline(probs, model_info={"source": "synthetic"}, source={"kind": "synthetic"},
                          labels=[f"L{i}" for i in range(c)])
    p = tmp_path / "baseline.json"
    p.write_text(json.dumps(data))
    return p, Baseline(data)


def test_three_of_four_is_not_an_alarm():
    acc = WindowAcc(5)
    acc.add(np.array([[0.1, 0.9, 0, 0, 0]] * 3 + [[0.9, 0.1, 0, 0, 0]]), 0.5)
    res, viol = evaluate_window(acc, ("a", "b"), MonitorConfig(), None)
    cs = res["checks"]["class_share"]
    assert cs["count"] == 3 and cs["total"] == 4 and cs["share"] == 0.75
    assert cs["ci"][0] < 0.5 and not viol
    acc = WindowAcc(5)
    acc.add(np.array([[0.1, 0.9, 0, 0, 0]] * 322 + [[0.9, 0.1, 0, 0, 0]] * 78), 0.5)
    res, viol = evaluate_window(acc, ("a", "b"), MonitorConfig(), None, labels=["a", "Stop"] + ["x"] * 3)
    assert [v["check"] for v in viol] == ["class_share"]
    assert set(viol[0]) >= KEYS and viol[0]["count"] == 322 and viol[0]["total"] == 400
    assert viol[0]["class_label"] == "Stop" and viol[0]["p_value"] < 1e-6


def test_low_confidence_rule():
    acc = WindowAcc(4)
    acc.add(np.array([[0.3, 0.2, 0.3, 0.2]] * 30 + [[0.2, 0.3, 0.2, 0.3]] * 30 + [[0.05, 0.03, 0.9, 0.02]] * 40), 0.5)
    res, viol = evaluate_window(acc, ("a", "b"), MonitorConfig(), None)
    assert res["checks"]["low_confidence"]["count"] == 60
    assert [v["check"] for v in viol] == ["low_confidence"]


def test_false_alarm_rate_and_power_by_simulation():
    from xaudit.monitoring.simulation import simulate
    # power at n = 100 sits near 0.80 by construction: with 43 classes under Bonferroni the
    # class needs >= 10 of 100 predictions (P = 0.802 at share 12.3 %); 2 000 windows keep
    # the estimate's standard error at 0.009
    r = simulate(sizes=(50, 100, 500, 1000), power_sizes=(100, 200), windows=1000, power_windows=2000, seed=0)
    for row in r["false_alarm"]:
        assert row["rate"] <= 0.05, row
    pw = {row["n"]: row["rate"] for row in r["power"]}
    assert pw[100] >= 0.8 and pw[200] >= 0.95, pw


def _capture(tmp_path, probs_list, step=10.0, start=T0):
    cap = tmp_path / "cap"
    probs = np.concatenate(probs_list)
    sy.write_capture(cap, probs, start=start, step_seconds=step)
    return cap


def test_cli_windows_outputs_and_exit_codes(tmp_path):
    bpath, b = _baseline(tmp_path)
    rng = np.random.default_rng(1)
    sh = np.full(43, 1 / 43)
    clean = sy.draw(300, sh, rng)[1]
    adv = sy.draw(300, sy.shifted(sh, 14, 0.7), rng)[1]
    # clean 10:00-10:50, a silent hour, adversarial 12:00-12:50
    cap = tmp_path / "cap"
    sy.write_capture(cap, clean, start=T0, step_seconds=10)
    sy.write_capture(cap, adv, start=T0 + timedelta(hours=2), step_seconds=10)
    out = tmp_path / "out"
    r = cli("monitor", cap, "--baseline", bpath, "--window", "1h", "--out", out)
    assert r.returncode == 3, r.stderr
    stats = json.loads((out / "statistics.json").read_text())
    ws = stats["windows"]
    assert [w["status"] for w in ws] == ["ok", "no data", "ok"]
    assert ws[1]["window_start"] == "2026-11-22T11:00:00Z"
    viol = json.loads((out / "violations.json").read_text())
    assert viol and all(set(v) >= KEYS for v in viol)
    assert {v["window_start"] for v in viol} == {"2026-11-22T12:00:00Z"}
    assert any(v["check"] == "class_share" and v["class_index"] == 14 for v in viol)
    assert (out / "report.png").stat().st_size > 1000
    assert "Class 14 ('L14') predicted in" in r.stdout and "no data" in r.stdout
    # clean window only -> exit 0; a window with no data -> reported, exit 0
    r = cli("monitor", cap, "--baseline", bpath, "--start", "2026-11-22T10:00:00Z", "--end",
            "2026-11-22T11:00:00Z", "--out", tmp_path / "o2")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("monitor", cap, "--start", "2026-11-22T11:00:00Z", "--end", "2026-11-22T11:30:00Z",
            "--out", tmp_path / "o3", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["windows"][0]["status"] == "no data"
    assert json.loads((tmp_path / "o3" / "violations.json").read_text()) == []


def test_bad_inputs_exit_2(tmp_path):
    bpath, _ = _baseline(tmp_path, c=43)
    cap = _capture(tmp_path, [sy.draw(50, np.full(5, 0.2), np.random.default_rng(0))[1]])
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "empty2" / "x").mkdir(parents=True)
    (tmp_path / "empty2" / "x" / "a.jsonl").write_text("")
    bad_base = tmp_path / "bad.json"
    bad_base.write_text('{"format": "xaudit-baseline/1", "class_counts": [1]}')
    cases = [
        ("missing capture", ["monitor", tmp_path / "nope"]),
        ("empty capture", ["monitor", empty]),
        ("empty file", ["monitor", tmp_path / "empty2"]),
        ("other model", ["monitor", cap, "--baseline", bpath]),
        ("malformed baseline", ["monitor", cap, "--baseline", bad_base]),
        ("baseline not json", ["monitor", cap, "--baseline", cap.parent / "nothing.json"]),
        ("bad ISO", ["monitor", cap, "--start", "yesterday"]),
        ("bad window", ["monitor", cap, "--window", "soon"]),
        ("end before start", ["monitor", cap, "--start", "2026-11-22T10:00:00Z", "--end", "2026-11-22T09:00:00Z"]),
    ]
    for name, argv in cases:
        r = cli(*argv, "--out", tmp_path / "o")
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        err = r.stderr.strip().splitlines()
        assert err and err[-1].startswith("xaudit: error:") and "Traceback" not in r.stderr, (name, r.stderr)
    assert "another model" in cli("monitor", cap, "--baseline", bpath).stderr


def test_malformed_lines_counted_in_statistics(tmp_path):
    cap = _capture(tmp_path, [sy.draw(40, np.full(5, 0.2), np.random.default_rng(0))[1]])
    f = next(cap.rglob("*.jsonl"))
    rec = json.loads(f.read_text().splitlines()[0])
    rec["captureData"]["endpointOutput"]["encoding"] = "PROTOBUF"
    with open(f, "ab") as fh:
        fh.write(b"garbage\n" + (json.dumps(rec) + "\n").encode() + b'{"captureData": {"endpointIn')
    out = tmp_path / "o"
    r = cli("monitor", cap, "--out", out)
    assert r.returncode == 0, r.stderr
    st = json.loads((out / "statistics.json").read_text())["read"]
    assert st["records"] == 40 and st["malformed"] == 3
    assert st["malformed_reasons"] == {"invalid JSON": 1, "unknown encoding": 1, "truncated line": 1}
    assert "3 malformed line(s) skipped" in r.stdout


def test_memory_flat_streaming(tmp_path):
    """Accumulators are bounded: the reservoir never exceeds RESERVOIR rows."""
    from xaudit.monitoring.monitor import RESERVOIR
    acc = WindowAcc(3, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(30):
        acc.add(rng.dirichlet(np.ones(3), size=1000), 0.5)
    assert acc.n == 30000 and acc.sample().shape == (RESERVOIR, 3)


def test_monitor_logs_to_mlflow(tmp_path):
    """Real sqlite MLflow store: per-window metrics with step = window index, artifacts, tag."""
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bpath, _ = _baseline(tmp_path)
    rng = np.random.default_rng(2)
    sh = np.full(43, 1 / 43)
    cap = tmp_path / "cap"
    sy.write_capture(cap, sy.draw(200, sh, rng)[1], start=T0, step_seconds=10)
    sy.write_capture(cap, sy.draw(200, sy.shifted(sh, 14, 0.7), rng)[1], start=T0 + timedelta(hours=1),
                     step_seconds=10)
    r = subprocess.run([sys.executable, "-m", "xaudit", "--quiet", "--tracking-uri", uri, "--experiment", "mon",
                        "monitor", str(cap), "--baseline", str(bpath), "--window", "1h", "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stderr
    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("mon")
    (run,) = c.search_runs([exp.experiment_id])
    assert run.data.tags["violation"] == "yes" and "14" in run.data.tags["violation.classes"]
    hist = sorted((m.step, m.value) for m in c.get_metric_history(run.info.run_id, "count.class_14"))
    assert [s for s, _ in hist] == [0, 1] and hist[1][1] > hist[0][1]
    assert [m.value for m in sorted(c.get_metric_history(run.info.run_id, "class_shift.violation"),
                                    key=lambda m: m.step)] == [0.0, 1.0]
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"statistics.json", "violations.json", "report.png"} <= arts


def test_s3_url_without_s3fs_is_a_clean_error(tmp_path):
    import importlib.util
    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs installed")
    r = cli("monitor", "s3://bucket/prefix", "--out", tmp_path / "o")
    assert r.returncode == 2 and "s3" in r.stderr.lower()
