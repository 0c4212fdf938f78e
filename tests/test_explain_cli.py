"""``xaudit explain`` end to end on real model files (ONNX export, TorchScript)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from _cli import run_main as _main
from _gradnets import ResNet, SmallCNN, export_onnx

loader = pytest.importorskip("xaudit.loader")
if not hasattr(loader, "load_model"):
    pytest.skip("xaudit.loader.load_model is not available yet", allow_module_level=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("explain")
    (d / "net.onnx").write_bytes(export_onnx(ResNet(bn=True, seed=0)))
    import torch
    torch.jit.save(torch.jit.script(SmallCNN(n=4, seed=1)), str(d / "net.pt"))
    (d / "labels.txt").write_text("stop\nyield\nspeed\nother\n")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(d / f"img{i}.png")
    return d


def _load_ok(files):
    from xaudit.loader import load_model
    try:
        load_model(str(files / "net.onnx"), labels=str(files / "labels.txt"))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"loader cannot load ONNX yet: {e}")


@pytest.mark.parametrize("method", ["fullgrad", "gradcam", "ig"])
def test_explain_one_image(files, tmp_path, capsys, method):
    _load_ok(files)
    out = tmp_path / "o"
    extra = ["--steps", "8"] if method == "ig" else []
    rc, so, err = _main(["explain", str(files / "net.onnx"), str(files / "img0.png"), "--method", method,
                         "--labels", str(files / "labels.txt"), "--input-size", "32", "--out", str(out),
                         "--no-track", "--json", *extra], capsys)
    assert rc == 0, err
    d = json.loads(so)
    assert d["method"] == method and d["method_requested"] == method and d["method_reason"] == "requested"
    assert d["out"] == str(out)
    for f in ("attribution.npy", "overlay.png", "explanation.json"):
        assert (out / f).is_file()
    a = np.load(out / "attribution.npy")
    assert a.shape == (32, 32) and a.dtype == np.float32
    meta = json.loads((out / "explanation.json").read_text())
    assert meta["target_label"] in ("stop", "yield", "speed", "other")
    if method == "fullgrad":
        assert meta["completeness_error"] <= 1e-4
    if method == "ig":
        assert meta["steps"] == 8


def test_explain_auto_several_images_and_target(files, tmp_path, capsys):
    _load_ok(files)
    out = tmp_path / "many"
    rc, so, err = _main(["explain", str(files / "net.onnx"), str(files / "img0.png"), str(files / "img1.png"),
                         str(files / "img2.png"), "--labels", str(files / "labels.txt"), "--input-size", "32",
                         "--target", "yield", "--out", str(out), "--no-track", "--json"], capsys)
    assert rc == 0, err
    rows = json.loads(so)
    assert [r["out"] for r in rows] == [str(out / f"img{i}") for i in range(3)]
    for r in rows:
        assert r["method"] == "fullgrad" and r["method_requested"] == "auto"
        assert "gradients reachable" in r["method_reason"]
        assert r["target"] == 1 and r["target_label"] == "yield"
        assert (out / f"img{rows.index(r)}" / "overlay.png").is_file()


def test_explain_torchscript_fullgrad(files, tmp_path, capsys):
    from xaudit.loader import load_model
    try:
        load_model(str(files / "net.pt"), input_size="32")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"loader cannot load TorchScript yet: {e}")
    out = tmp_path / "ts"
    rc, so, err = _main(["explain", str(files / "net.pt"), str(files / "img0.png"), "--method", "fullgrad",
                         "--input-size", "32", "--out", str(out), "--no-track", "--json"], capsys)
    assert rc == 0, err
    d = json.loads(so)
    assert d["completeness_error"] <= 1e-4 and d["gradient_source"] == "torchscript"


def test_explain_errors(files, tmp_path, capsys):
    _load_ok(files)
    base = ["explain", str(files / "net.onnx"), str(files / "img0.png"), "--input-size", "32", "--no-track",
            "--out", str(tmp_path / "e")]
    rc, so, err = _main(base + ["--method", "fullgrad", "--layer", "x"], capsys)
    assert rc == 2 and "--layer" in err and "Traceback" not in err
    rc, so, err = _main(base + ["--method", "gradcam", "--layer", "no_such_node"], capsys)
    assert rc == 2 and "no layer named" in err
    rc, so, err = _main(base + ["--target", "99"], capsys)
    assert rc == 2 and "out of range" in err
    rc, so, err = _main(["explain", str(files / "net.onnx"), str(tmp_path / "missing.png"), "--no-track"], capsys)
    assert rc == 2 and "missing.png" in err


def test_explain_logs_to_mlflow(files, tmp_path, capsys):
    _load_ok(files)
    db = tmp_path / "mlflow.db"
    out = tmp_path / "tracked"
    rc, so, err = _main(["explain", str(files / "net.onnx"), str(files / "img0.png"), str(files / "img1.png"),
                         "--input-size", "32", "--method", "fullgrad", "--out", str(out), "--quiet",
                         "--tracking-uri", f"sqlite:///{db}", "--experiment", "grad-tests"], capsys)
    assert rc == 0, err
    from mlflow.tracking import MlflowClient
    c = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = c.get_experiment_by_name("grad-tests")
    (run,) = c.search_runs([exp.experiment_id])
    assert run.data.params["method"] == "fullgrad" and run.data.params["method_requested"] == "fullgrad"
    hist = c.get_metric_history(run.info.run_id, "completeness_error")
    assert len(hist) == 2 and all(m.value <= 1e-4 for m in hist)
    assert "target_prob" in run.data.metrics
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"img0", "img1"} <= arts


def test_explain_auto_falls_back_to_lime(tmp_path, capsys):
    """A graph the gradient executor cannot run: auto says why and runs LIME."""
    from test_gradients_onnx import _with_op
    (tmp_path / "hard.onnx").write_bytes(_with_op("Hardmax", axis=1))
    img = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(1).random((8, 8, 3)) * 255).astype(np.uint8)).save(img)
    from xaudit.loader import load_model
    m = load_model(str(tmp_path / "hard.onnx"))
    assert not m.gradients_reachable and "Hardmax" in m.gradients_reason
    out = tmp_path / "o"
    rc, so, err = _main(["explain", str(tmp_path / "hard.onnx"), str(img), "--seed", "3", "--out", str(out),
                         "--no-track", "--json"], capsys)
    assert rc == 0, err
    d = json.loads(so)
    assert d["method"] == "lime" and d["method_requested"] == "auto"
    assert "not reachable" in d["method_reason"] and "Hardmax" in d["method_reason"]
    rc, so, err = _main(["explain", str(tmp_path / "hard.onnx"), str(img), "--method", "fullgrad", "--no-track",
                         "--out", str(out)], capsys)
    assert rc == 2 and "Hardmax" in err and "Traceback" not in err
