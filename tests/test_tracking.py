"""xaudit.tracking against real MLflow stores (sqlite default, file store, real HTTP server)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

import xaudit.tracking as xt
from xaudit.errors import TrackingError
from _mlflow_server import free_port as _free_port, mlflow_server as start_server
from _xaudit_results import make_explanation


def _args(**kw):
    d = dict(tracking_uri=None, experiment="xaudit", no_track=False, run_name=None, quiet=True)
    d.update(kw)
    return argparse.Namespace(**d)


class _Model:
    format = "onnx"
    input_size = (64, 64)
    labels = ["a", "b", "c"]

    def __init__(self, source):
        self.source = str(source)


def _client(uri):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def _runs(uri, experiment="xaudit"):
    c = _client(uri)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None
    return c, exp, c.search_runs([exp.experiment_id], max_results=100)


def _artifact_paths(client, run_id, path=""):
    out = []
    for a in client.list_artifacts(run_id, path or None):
        out.extend(_artifact_paths(client, run_id, a.path) if a.is_dir else [a.path])
    return out


def _log_a_command(tmp_path, args):
    """What a CLI command does: write --out files, log params/metrics/artifacts, a nested run."""
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"not really onnx but hashed")
    out = tmp_path / "out"
    exp = make_explanation(3)
    with xt.command_run(args, "explain", model=_Model(model_file), params={"long": "x" * 2000}) as run:
        xt.log_explanation(run, exp, out / "img0", artifact_path="img0")
        for w in range(3):
            run.log_metrics({"share.14": 0.1 * w}, step=w)
        with run.child("seed 11", params={"seed": 11}) as sub:
            sub.log_metrics({"jaccard": 0.5})
        run.set_tags({"violation": True})
    return run, out


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _check_store(uri, tmp_path):
    c, exp, runs = _runs(uri)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"explain m.onnx", "seed 11"}
    r = by_name["explain m.onnx"]
    assert r.info.status == "FINISHED"
    p = r.data.params
    assert p["model.source"].endswith("m.onnx") and p["model.format"] == "onnx"
    import hashlib
    assert p["model.sha256"] == hashlib.sha256((tmp_path / "m.onnx").read_bytes()).hexdigest()
    assert p["method"] == "lime" and p["seed"] == "3" and p["lime.num_samples"] == "100"
    assert len(p["long"]) <= 500
    m = r.data.metrics
    assert m["target_prob"] == pytest.approx(0.91) and m["completeness_error"] == pytest.approx(0.01)
    hist = c.get_metric_history(r.info.run_id, "share.14")
    assert [h.step for h in hist] == [0, 1, 2]
    t = r.data.tags
    assert t["xaudit.command"] == "explain" and t["xaudit.model_format"] == "onnx"
    assert t["violation"] == "yes" and t["xaudit.version"]
    arts = set(_artifact_paths(c, r.info.run_id))
    assert {"img0/attribution.npy", "img0/overlay.png", "img0/explanation.json"} <= arts
    child = by_name["seed 11"]
    assert child.data.tags["mlflow.parentRunId"] == r.info.run_id
    assert child.data.metrics["jaccard"] == 0.5 and child.info.status == "FINISHED"
    return r


def test_default_store_is_sqlite_in_working_dir(clean_env):
    run, out = _log_a_command(clean_env, _args())
    assert (clean_env / "mlflow.db").is_file()
    uri = f"sqlite:///{clean_env / 'mlflow.db'}"
    r = _check_store(uri, clean_env)
    assert run.run_id == r.info.run_id
    marker = json.loads((out / "img0" / "mlflow_run.json").read_text())
    assert marker["run_id"] == r.info.run_id and marker["tracking_uri"] == uri
    # artifacts live beside the database, not in whatever directory we ran in
    assert (clean_env / "mlartifacts").is_dir()


def test_env_uri_and_file_store(clean_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:./mlruns")
    _log_a_command(clean_env, _args())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses to read file stores otherwise
    assert not (clean_env / "mlflow.db").exists()
    _check_store((clean_env / "mlruns").as_uri(), clean_env)


def test_explicit_uri_wins_and_experiment(clean_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:./elsewhere")
    db = clean_env / "sub" / "x.db"
    db.parent.mkdir()
    with xt.command_run(_args(tracking_uri=f"sqlite:///{db}", experiment="audits", run_name="mine"), "monitor") as r:
        r.log_metrics({"a": 1})
    assert not (clean_env / "elsewhere").exists()
    c, exp, runs = _runs(f"sqlite:///{db}", "audits")
    assert [x.info.run_name for x in runs] == ["mine"]


def test_failed_status_and_exception_propagates(clean_env):
    with pytest.raises(ZeroDivisionError):
        with xt.command_run(_args(), "stability") as run:
            run.log_metrics({"before": 1.0})
            with run.child("seed 1"):
                1 / 0
    c, exp, runs = _runs(f"sqlite:///{clean_env / 'mlflow.db'}")
    status = {r.info.run_name: r.info.status for r in runs}
    assert status == {"stability": "FAILED", "seed 1": "FAILED"}
    assert [r.data.metrics for r in runs if r.info.run_name == "stability"][0] == {"before": 1.0}


def test_mark_failed(clean_env):
    with xt.command_run(_args(), "demo") as run:
        with run.child("ok step"):
            pass
        run.mark_failed()
    c, exp, runs = _runs(f"sqlite:///{clean_env / 'mlflow.db'}")
    assert {r.info.run_name: r.info.status for r in runs} == {"demo": "FAILED", "ok step": "FINISHED"}


def test_no_track_writes_nothing(clean_env):
    with xt.command_run(_args(no_track=True), "explain") as run:
        run.log_metrics({"a": 1})
        run.log_artifacts(clean_env)
        with run.child("x") as c:
            c.log_params({"a": 1})
    assert run.run_id is None
    assert not (clean_env / "mlflow.db").exists() and not (clean_env / "mlruns").exists()


def test_nested_command_runs_become_children(clean_env):
    with xt.command_run(_args(run_name="the demo"), "demo") as demo:
        demo.log_metrics({"steps": 2})
        with xt.command_run(_args(run_name="ignored"), "explain", model=_Model("m.onnx")):
            pass
        with xt.command_run(_args(), "monitor") as mon:
            mon.log_metrics({"x": 1})
    c, exp, runs = _runs(f"sqlite:///{clean_env / 'mlflow.db'}")
    by = {r.info.run_name: r for r in runs}
    assert set(by) == {"the demo", "explain m.onnx", "monitor"}
    pid = by["the demo"].info.run_id
    assert by["explain m.onnx"].data.tags["mlflow.parentRunId"] == pid
    assert by["monitor"].data.tags["xaudit.command"] == "monitor"


def test_script_api_and_log_stability(clean_env):
    exps = [make_explanation(s) for s in (1, 11, 21)]
    with xt.run("pole study", tracking_uri=f"sqlite:///{clean_env / 's.db'}", params={"model": "poles"}) as r:
        xt.log_stability(r, {"method": "lime", "seeds": [1, 11, 21], "summary": {"topk_jaccard_mean": 0.4}},
                         per_seed=exps)
    c, exp, runs = _runs(f"sqlite:///{clean_env / 's.db'}")
    by = {x.info.run_name: x for x in runs}
    assert set(by) == {"pole study", "seed 1", "seed 11", "seed 21"}
    assert by["pole study"].data.metrics["stability.topk_jaccard_mean"] == 0.4
    assert by["pole study"].data.params["seeds"] == "1,11,21"
    assert by["seed 11"].data.metrics["target_prob"] == pytest.approx(0.91)


def test_unreachable_server_is_quick_one_line_and_files_written(clean_env):
    port = _free_port()  # nothing listens there
    t0 = time.time()
    with pytest.raises(TrackingError) as ei:
        _log_a_command(clean_env, _args(tracking_uri=f"http://127.0.0.1:{port}"))
    assert time.time() - t0 < 15
    msg = str(ei.value)
    assert "\n" not in msg and "--no-track" in msg and f"127.0.0.1:{port}" in msg
    assert (clean_env / "out" / "img0" / "explanation.json").is_file()
    assert not (clean_env / "out" / "img0" / "mlflow_run.json").exists()


def test_unreachable_store_does_not_mask_command_error(clean_env, capsys):
    with pytest.raises(KeyError):
        with xt.command_run(_args(tracking_uri="http://127.0.0.1:1"), "explain"):
            raise KeyError("real problem")
    assert "--no-track" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow-server")
    with start_server(f"sqlite:///{d / 'server.db'}", d) as url:
        yield url


def test_http_server_store(clean_env, mlflow_server):
    run, out = _log_a_command(clean_env, _args(tracking_uri=mlflow_server))
    r = _check_store(mlflow_server, clean_env)
    assert run.url() == f"{mlflow_server}/#/experiments/{r.info.experiment_id}/runs/{r.info.run_id}"
