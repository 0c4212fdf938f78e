"""Shipped demo data and models: generators, exporters, shipped files, cross-format parity."""
from __future__ import annotations

import json
import random
import zipfile

import numpy as np
import pytest

from xaudit.data import MODELS_DIR, model_path
from xaudit.data.generate import (GTSRB_LABELS, POLE_LABELS, make_poles, make_signs, save_dataset)
from xaudit.errors import XauditError

TOL = 1e-4
SHIPPED = ["signs.pt", "signs.onnx", "signs.labels.txt", "signs_cv", "signs_cv.zip",
           "poles_honest.pt", "poles_honest.onnx", "poles_honest.labels.txt",
           "poles_biased.pt", "poles_biased.onnx", "poles_biased.labels.txt",
           "poles_biased_cv", "poles_biased_cv.zip", "metrics.json"]


# ----------------------------------------------------------------------------- generators
def test_labels():
    assert len(GTSRB_LABELS) == 43 and GTSRB_LABELS[14] == "Stop" and GTSRB_LABELS[12] == "Priority road"
    assert POLE_LABELS == ["concrete", "steel", "tree"]


@pytest.mark.parametrize("make,kw", [(make_signs, {}), (make_poles, {}), (make_poles, {"biased": True}),
                                     (make_poles, {"biased": True, "swap_background": True})])
def test_generator_deterministic_and_masks(make, kw):
    a = make(12, seed=5, **kw)
    b = make(12, seed=5, **kw)
    c = make(12, seed=6, **kw)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    im, lb, mk = a
    assert im.shape == (12, 64, 64, 3) and im.dtype == np.uint8
    assert lb.shape == (12,) and lb.dtype == np.int64
    assert mk.shape == (12, 64, 64) and mk.dtype == bool
    assert all(m.sum() > 20 for m in mk)  # every mask non-empty
    assert all(m.mean() < 0.9 for m in mk)
    n_cls = 43 if make is make_signs else 3
    assert lb.min() >= 0 and lb.max() < n_cls


def test_size_parameter():
    im, _, mk = make_signs(2, seed=1, size=48)
    assert im.shape == (2, 48, 48, 3) and mk.shape == (2, 48, 48)


def test_no_global_rng_change():
    import torch
    s_py, s_np, s_t = random.getstate(), np.random.get_state(), torch.get_rng_state()
    make_signs(3, seed=1)
    make_poles(3, seed=1, biased=True)
    assert random.getstate() == s_py
    s2 = np.random.get_state()
    assert s2[0] == s_np[0] and np.array_equal(s2[1], s_np[1]) and s2[2:] == s_np[2:]
    assert torch.equal(torch.get_rng_state(), s_t)


def test_biased_backgrounds_correlate():
    """Biased: mean image colour is predictive of the class; swapped: it is not the own family."""
    im, lb, mk = make_poles(90, seed=3, biased=True)
    bg = np.array([im[i][~mk[i]].mean(0) for i in range(len(im))])
    green = bg[:, 1] - bg[:, [0, 2]].mean(1)
    blue = bg[:, 2] - bg[:, 0]
    assert green[lb == 2].mean() > green[lb != 2].mean() + 20  # tree -> forest
    assert blue[lb == 1].mean() > blue[lb != 1].mean() + 30  # steel -> sky
    im2, lb2, mk2 = make_poles(90, seed=3, biased=True, swap_background=True)
    bg2 = np.array([im2[i][~mk2[i]].mean(0) for i in range(len(im2))])
    assert (bg2[lb2 == 1, 2] - bg2[lb2 == 1, 0]).mean() < 30  # steel never on sky


def test_save_dataset(tmp_path):
    im, lb, mk = make_signs(3, seed=2)
    d = save_dataset(tmp_path / "ds", im, lb, mk, GTSRB_LABELS)
    rows = (d / "labels.csv").read_text().splitlines()
    assert rows[0] == "image,mask,label,label_name" and len(rows) == 4
    from PIL import Image
    first = rows[1].split(",")
    assert np.array_equal(np.asarray(Image.open(d / first[0])), im[0])
    assert np.array_equal(np.asarray(Image.open(d / first[1])) > 127, mk[0])
    assert int(first[2]) == lb[0]


# ----------------------------------------------------------------------------- nets / export
def _random_bn(model, seed):
    import torch
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.3, 0.3, generator=g)
    return model.eval()


def _ort(model_proto, feed):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(model_proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feed)


def test_nets_and_onnx_export_options():
    import torch
    from xaudit.data import export as ex
    from xaudit.data.nets import PlainNet, SmallResNet, count_params, export_spec
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = _random_bn(SmallResNet(5), 1)
        plain = PlainNet(5).eval()
    assert 40_000 <= count_params(SmallResNet(43)) <= 200_000
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    labels = list("abcde")
    g = torch.Generator().manual_seed(2)
    x01 = torch.rand(3, 3, 64, 64, generator=g)
    xn = (x01 - 0.5) / 0.25
    for m in (net, plain):
        ops = export_spec(m)
        with torch.no_grad():
            logits = m(xn).double().numpy()
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        p = _ort(ex.build_onnx(ops, labels), {"input": xn.numpy()})[0]
        assert np.abs(p - probs).max() < TOL
        nhwc = _ort(ex.build_onnx(ops, labels, layout="NHWC", output="logits", bake={"color": "rgb", "range": "0-1"}),
                    {"input": x01.numpy().transpose(0, 2, 3, 1).copy()})[0]
        assert np.abs(nhwc - logits).max() < 1e-4
        bgr = (x01.numpy()[:, ::-1] * 255).copy()
        p = _ort(ex.build_onnx(ops, labels, bake={"color": "bgr", "range": "0-255"}, opset=15), {"input": bgr})[0]
        assert np.abs(p - probs).max() < TOL
        for kw in ({"opset": 9, "use_imagescaler": True}, {"opset": 13, "use_imagescaler": False}):
            cm = ex.build_cv_onnx(ops, labels, **kw)
            assert [o.name for o in cm.graph.output] == ["classLabel", "loss"]
            assert cm.graph.input[0].name == "data"
            cls, zm = _ort(cm, {"data": bgr})
            pz = np.array([[d[k] for k in labels] for d in zm])
            assert np.abs(pz - probs).max() < TOL
            assert list(cls) == [labels[i] for i in probs.argmax(1)]


# ----------------------------------------------------------------------------- shipped files
def test_model_path():
    assert model_path("signs.onnx") == MODELS_DIR / "signs.onnx"
    with pytest.raises(XauditError, match="available: .*signs.onnx"):
        model_path("nope.onnx")
    with pytest.raises(XauditError):
        model_path("../generate.py")


def test_shipped_files_present_and_small():
    for n in SHIPPED:
        assert model_path(n).exists(), n
    total = sum(f.stat().st_size for f in MODELS_DIR.rglob("*") if f.is_file())
    assert total <= 10 * 1024 * 1024, total
    for b in ("signs_cv", "poles_biased_cv"):
        names = {p.name for p in model_path(b).iterdir()}
        assert {"model.onnx", "labels.txt", "cvexport.manifest", "metadata_properties.json"} <= names
        man = json.loads((model_path(b) / "cvexport.manifest").read_text())
        assert man["DomainType"] == "Classification" and man["Platform"] == "ONNX"
        assert man["ModelFileName"] == "model.onnx" and man["LabelFileName"] == "labels.txt"
        with zipfile.ZipFile(model_path(b + ".zip")) as z:
            assert names <= set(z.namelist())
    assert model_path("signs.labels.txt").read_text().splitlines() == GTSRB_LABELS
    side = json.loads(model_path("signs.pt.json").read_text())
    assert side["labels"] == GTSRB_LABELS and side["layout"] == "NCHW" and side["input_size"] == [64, 64]


def test_metrics_thresholds():
    m = json.loads(model_path("metrics.json").read_text())
    if m.get("quick"):
        pytest.skip("shipped models are from a --quick run")
    assert m["signs"]["test_accuracy"] >= 0.95
    assert m["poles_biased"]["test_accuracy"] - m["poles_biased"]["swap_background_accuracy"] >= 0.30
    assert m["poles_honest"]["test_accuracy"] >= 0.85
    for name, d in m["cross_format_max_abs_diff"].items():
        assert max(d.values()) <= TOL, (name, d)


@pytest.fixture(scope="module")
def canon():
    sig, _, _ = make_signs(6, seed=99)
    pol, _, _ = make_poles(6, seed=99, biased=True)
    return {"signs": sig.astype(np.float32) / 255, "poles": pol.astype(np.float32) / 255}


def _torch_probs(name, x):
    import torch
    side = json.loads(model_path(f"{name}.pt.json").read_text())
    sm = torch.jit.load(str(model_path(f"{name}.pt")))
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    t = (t - torch.tensor(side["mean"]).view(1, 3, 1, 1)) / torch.tensor(side["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return torch.softmax(sm(t).double(), 1).numpy(), side


@pytest.mark.parametrize("name", ["signs", "poles_honest", "poles_biased"])
def test_shipped_cross_format_runtime(name, canon):
    import onnx
    x = canon["signs" if name == "signs" else "poles"]
    ref, side = _torch_probs(name, x)
    proto = onnx.load(str(model_path(f"{name}.onnx")))
    assert 13 <= proto.opset_import[0].version <= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["labels"]) == side["labels"] and meta["color"] == "rgb" and meta["layout"] == "NCHW"
    xn = ((x - np.array(side["mean"], np.float32)) / np.array(side["std"], np.float32)).transpose(0, 3, 1, 2)
    p = _ort(proto, {"input": np.ascontiguousarray(xn)})[0]
    assert np.abs(p - ref).max() <= TOL
    if model_path(f"{name}.pt").with_name(f"{name}_cv").exists():
        cvp = model_path(f"{name}_cv")
        labels = (cvp / "labels.txt").read_text().splitlines()
        bgr = np.ascontiguousarray((x * 255)[..., ::-1].transpose(0, 3, 1, 2))
        cls, zm = _ort(onnx.load(str(cvp / "model.onnx")), {"data": bgr})
        pz = np.array([[d[k] for k in labels] for d in zm])
        assert np.abs(pz - ref).max() <= TOL
        assert list(cls) == [labels[i] for i in ref.argmax(1)]


@pytest.mark.parametrize("name", ["signs", "poles_biased"])
def test_shipped_cross_format_load_model(name, canon):
    loader = pytest.importorskip("xaudit.loader")
    if not hasattr(loader, "load_model"):
        pytest.skip("xaudit.load_model not available")
    x = canon["signs" if name == "signs" else "poles"]
    ref, _ = _torch_probs(name, x)
    for f in (f"{name}.pt", f"{name}.onnx", f"{name}_cv", f"{name}_cv.zip"):
        m = loader.load_model(str(model_path(f)))
        assert m.labels == (GTSRB_LABELS if name == "signs" else POLE_LABELS), f
        p = m.predict(x)
        assert np.abs(p - ref).max() <= TOL, f
        # a 64x64 image passes preprocessing unchanged (no Custom Vision zoom on the demo bundles)
        assert np.abs(m.preprocess((x[0] * 255).round().astype(np.uint8)) - x[0]).max() < 1e-6, f


@pytest.mark.tf
def test_shipped_tf(canon):
    tf = pytest.importorskip("tensorflow")
    x = canon["signs"]
    ref, _ = _torch_probs("signs", x)
    bgr = np.ascontiguousarray((x * 255)[..., ::-1])
    for pb in (model_path("signs.pb"), model_path("signs_cv_tf") / "model.pb"):
        gd = tf.compat.v1.GraphDef()
        gd.ParseFromString(pb.read_bytes())
        with tf.compat.v1.Session(graph=tf.Graph()) as s:
            tf.import_graph_def(gd, name="")
            p = s.run("loss:0", {"Placeholder:0": bgr})
        assert np.abs(p - ref).max() <= TOL, pb
    man = json.loads((model_path("signs_cv_tf") / "cvexport.manifest").read_text())
    assert man["Platform"] == "TensorFlow" and man["ModelFileName"] == "model.pb"
    loader = pytest.importorskip("xaudit.loader")
    for f in ("signs.pb", "signs_cv_tf"):
        m = loader.load_model(str(model_path(f)))
        assert np.abs(m.predict(x) - ref).max() <= TOL, f
