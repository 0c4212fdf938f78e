"""xaudit demo: steps, skips, tracking evidence (search_runs on the stores it wrote)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from xaudit.cli import main
from xaudit.demo import STEP_NAMES, missing, select_steps
from _mlflow_server import free_port, mlflow_server

# which MLflow run (by xaudit.command tag) each demo step must produce when it ran
STEP_COMMANDS = {"predict": [], "explain": ["explain"], "stability": ["stability"],
                 "monitor": ["monitor", "audit"]}
ASSETS_READY = missing(["model:signs.onnx", "model:poles_biased.onnx", "xaudit.data.generate:make_signs"]) is None


def _client(uri):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def _all_runs(uri):
    c = _client(uri)
    exp = c.get_experiment_by_name("xaudit")
    return c, exp, c.search_runs([exp.experiment_id], max_results=500)


def _artifacts(c, run_id, path=None):
    out = []
    for a in c.list_artifacts(run_id, path):
        out.extend(_artifacts(c, run_id, a.path) if a.is_dir else [a.path])
    return out


def _check_demo_store(uri, out_dir: Path):
    summary = json.loads((out_dir / "demo.json").read_text())
    status = {s["step"]: s["status"] for s in summary["steps"]}
    assert "failed" not in status.values(), summary["steps"]
    if ASSETS_READY:
        assert set(status.values()) == {"done"}, summary["steps"]
    c, exp, runs = _all_runs(uri)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    demo = [r for r in runs if r.data.tags.get("xaudit.command") == "demo"]
    assert len(demo) == 1 and demo[0].info.status == "FINISHED"
    d = demo[0]
    assert d.data.params["steps"] == ",".join(status)
    assert "seconds" in d.data.metrics and d.data.tags["xaudit.version"]
    assert {"demo.json", "report.html"} <= set(_artifacts(c, d.info.run_id))
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == d.info.run_id]
    cmds = {r.data.tags.get("xaudit.command") for r in children}
    for step, st in status.items():
        if st == "done":
            for cmd in STEP_COMMANDS[step]:
                assert cmd in cmds, (step, cmd, cmds)
    for r in children:
        assert r.info.status == "FINISHED", r.info.run_name
        p, m, t = r.data.params, r.data.metrics, r.data.tags
        cmd = t.get("xaudit.command")
        if cmd in ("explain", "stability", "monitor", "audit"):
            if cmd != "monitor":   # monitor reads a capture, not a model
                assert p.get("model.sha256") and p.get("model.format") and p.get("model.source"), (cmd, p)
                assert t.get("xaudit.model_format") == p["model.format"]
            assert m, (cmd, "no metrics")
            arts = set(_artifacts(c, r.info.run_id))
            if cmd == "explain":
                assert p.get("method") and any(a.endswith("attribution.npy") for a in arts)
                assert any(a.endswith("overlay.png") for a in arts) and any(a.endswith("explanation.json") for a in arts)
                assert "target_prob" in m or any(k.endswith("target_prob") for k in m)
            if cmd == "stability":
                assert "stability.json" in arts and "grid.png" in arts and "std.png" in arts
                assert p.get("seeds") == "1,11,21,31,41,51,61,71,81"
                seeds = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == r.info.run_id]
                assert len(seeds) == 9
            if cmd == "monitor":
                assert "violations.json" in arts and "statistics.json" in arts
                assert t.get("violation") in ("yes", "no")
    return summary, runs


def test_steps_option():
    assert [s.name for s in select_steps(None)] == STEP_NAMES
    assert [s.name for s in select_steps("3,predict")] == ["predict", "stability"]


def test_bad_steps_is_usage_error(tmp_path, capsys):
    assert main(["demo", "--steps", "predict,bogus", "--out", str(tmp_path / "d"), "--no-track"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bogus" in err and "predict" in err


def test_no_track_writes_no_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--steps", "predict", "--quick", "--no-track", "-q"]) == 0
    assert (tmp_path / "xaudit-demo" / "demo.json").is_file()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()


def test_unreachable_server_exit_2_files_written(tmp_path, capsys):
    port = free_port()
    out = tmp_path / "d"
    rc = main(["demo", "--steps", "predict", "--quick", "--out", str(out),
               "--tracking-uri", f"http://127.0.0.1:{port}", "-q"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [x for x in err.splitlines() if x.startswith("xaudit:")]
    assert len(lines) == 1 and "--no-track" in lines[0] and f"127.0.0.1:{port}" in lines[0]
    assert (out / "demo.json").is_file()


@pytest.mark.slow
def test_demo_default_store_evidence(tmp_path, monkeypatch, capsys):
    """The full (quick) demo on the default store: runs, params, metrics, artifacts."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quick"]) == 0
    cap = capsys.readouterr()
    db = tmp_path / "mlflow.db"
    assert db.is_file()
    uri = f"sqlite:///{db}"
    assert f"mlflow ui --backend-store-uri {uri}" in cap.err
    assert "/#/experiments/" in cap.err and "/runs" in cap.err
    report = tmp_path / "xaudit-demo" / "report.html"
    assert cap.out.strip().splitlines()[-1] == str(report) and report.is_file()
    _check_demo_store(uri, tmp_path / "xaudit-demo")


def test_demo_file_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quick", "--steps", "explain", "--tracking-uri", "file:./mlruns", "-q"]) == 0
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    _check_demo_store((tmp_path / "mlruns").as_uri(), tmp_path / "xaudit-demo")


def test_demo_http_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with mlflow_server(f"sqlite:///{tmp_path / 'srv.db'}", tmp_path / "srv") as url:
        assert main(["demo", "--quick", "--steps", "explain", "--tracking-uri", url, "-q"]) == 0
        _check_demo_store(url, tmp_path / "xaudit-demo")
