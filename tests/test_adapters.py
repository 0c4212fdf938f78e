"""Contract suite over every adapter x every format, on real files built here.

One small torch CNN (BN-free, softmax head) is written as TorchScript, torch.export .pt2,
module:factory + state dict, plain ONNX, an "exported elsewhere" ONNX (NHWC input, logits
output), a fixed-batch-1 ONNX, a ZipMap ONNX with unsorted labels, a Custom-Vision-style
bundle (folder and zip: BGR 0-255 'data' input, ImageScaler, ZipMap 'loss' + 'classLabel'),
and (marker tf) a TF frozen graph. Every format must agree with the eager module.
"""
from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _gradnets import SmallCNN, custom_vision_onnx, export_onnx  # noqa: E402

import xaudit  # noqa: E402

LABELS = ["zeta", "alpha", "mid"]  # deliberately unsorted: ZipMap key order != label order
SIZE = (32, 32)
CV_BIAS = (-0.4, -0.45, -0.5)


def factory():
    """Used as `test_adapters:factory` (module:factory source)."""
    return SmallCNN(n=3, seed=0)


class _CVReference(torch.nn.Module):
    """What the CV bundle computes from canonical RGB [0,1]: BGR*255 -> ImageScaler -> net."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x_rgb01):
        bgr255 = x_rgb01.flip(1) * 255
        return self.net(bgr255 / 255.0 + torch.tensor(CV_BIAS).view(1, 3, 1, 1))


def _nhwc_logits_onnx(net) -> bytes:
    class Wrap(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):  # NHWC in, logits out (log of the softmax = logits up to a constant)
            return torch.log(self.n(x.permute(0, 3, 1, 2)))
    f = io.BytesIO()
    torch.onnx.export(Wrap(net), (torch.zeros(1, *SIZE, 3),), f, dynamo=False, opset_version=13,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}})
    return f.getvalue()


def _fixed_batch(onnx_bytes: bytes) -> bytes:
    import onnx
    m = onnx.load_from_string(onnx_bytes)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    return m.SerializeToString()


@pytest.fixture(scope="module")
def net():
    return SmallCNN(n=3, seed=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory, net):
    d = tmp_path_factory.mktemp("formats")
    side = {"labels": LABELS, "input_size": list(SIZE)}
    # TorchScript + sidecar
    torch.jit.script(net).save(str(d / "net.pt"))
    (d / "net.json").write_text(json.dumps(side))
    # torch.export
    ep = torch.export.export(net, (torch.zeros(2, 3, *SIZE),),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    torch.export.save(ep, str(d / "net.pt2"))
    (d / "net.pt2.json").write_text(json.dumps({"labels": LABELS}))
    # state dict for module:factory
    torch.save(net.state_dict(), d / "weights.pth")
    # pickled whole module (needs --allow-pickle)
    torch.save(net, d / "pickled.pth")
    # ONNX variants
    (d / "onnx").mkdir()
    (d / "onnx" / "net.onnx").write_bytes(export_onnx(net, SIZE))
    (d / "onnx" / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (d / "nhwc").mkdir()
    (d / "nhwc" / "model.onnx").write_bytes(_nhwc_logits_onnx(net))
    (d / "fixed").mkdir()
    (d / "fixed" / "net1.onnx").write_bytes(_fixed_batch(export_onnx(net, SIZE)))
    # Custom-Vision-style bundle: folder and zip
    cv = d / "cv_bundle"
    cv.mkdir()
    (cv / "model.onnx").write_bytes(custom_vision_onnx(net, SIZE, labels=LABELS, bias=CV_BIAS))
    (cv / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (cv / "cvexport.manifest").write_text(json.dumps({"DomainType": "Classification", "Platform": "ONNX",
                                                      "ModelFileName": "model.onnx", "LabelFileName": "labels.txt"}))
    with zipfile.ZipFile(d / "cv_bundle.zip", "w") as z:
        for f in cv.iterdir():
            z.write(f, f.name)
    return d


def _sources(files):
    return {
        "torchscript": (str(files / "net.pt"), {}),
        "torch_export": (str(files / "net.pt2"), {"input_size": "32,32"}),
        "factory": ("test_adapters:factory", {"weights": str(files / "weights.pth"), "input_size": 32,
                                              "labels": LABELS}),
        "onnx": (str(files / "onnx" / "net.onnx"), {}),
        "onnx_nhwc_logits": (str(files / "nhwc" / "model.onnx"), {"labels": LABELS}),
        "onnx_fixed_batch1": (str(files / "fixed" / "net1.onnx"), {"labels": LABELS}),
        "cv_folder": (str(files / "cv_bundle"), {}),
        "cv_zip": (str(files / "cv_bundle.zip"), {}),
    }


FORMATS = ["torchscript", "torch_export", "factory", "onnx", "onnx_nhwc_logits", "onnx_fixed_batch1",
           "cv_folder", "cv_zip"]


@pytest.fixture(scope="module")
def models(files, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("XAUDIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    return {k: xaudit.load_model(src, **ov) for k, (src, ov) in _sources(files).items()}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(7).random((5, *SIZE, 3), dtype=np.float32)


def _reference(net, fmt, batch):
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)
    with torch.no_grad():
        return (_CVReference(net) if fmt.startswith("cv") else net)(x).numpy()


@pytest.mark.parametrize("fmt", FORMATS)
def test_probabilities_shape_and_sum(models, batch, fmt):
    p = models[fmt].predict(batch)
    assert p.shape == (5, 3) and p.dtype == np.float32
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_agrees_with_the_torch_module(models, net, batch, fmt):
    np.testing.assert_allclose(models[fmt].predict(batch), _reference(net, fmt, batch), atol=1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
def test_batch_invariance(models, batch, fmt):
    m = models[fmt]
    whole = m.predict(batch)
    singles = np.concatenate([m.predict(batch[i:i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(whole, singles, atol=1e-5)
    np.testing.assert_allclose(m.predict(batch, batch_size=2), whole, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_input_not_mutated(models, batch, fmt):
    before = batch.copy()
    models[fmt].predict(batch)
    models[fmt].preprocess(batch[0])
    assert np.array_equal(batch, before)


@pytest.mark.parametrize("fmt", FORMATS)
def test_labels_and_info(models, fmt):
    m = models[fmt]
    assert m.labels == LABELS
    assert m.input_size == SIZE
    info = m.info(with_gradients=False)
    assert info["num_classes"] == 3 and info["labels"] == LABELS
    json.dumps(info, default=str)


def test_declared_preprocessing(models):
    assert models["onnx_nhwc_logits"].preprocessing.layout == "NHWC"
    assert models["onnx_nhwc_logits"].output_kind == "logits"
    assert models["onnx"].preprocessing.layout == "NCHW"
    assert models["onnx_fixed_batch1"].fixed_batch == 1
    cv = models["cv_zip"]
    assert cv.format == "custom_vision"
    assert (cv.preprocessing.color, cv.preprocessing.value_range, cv.preprocessing.resize) == \
        ("bgr", "0-255", "custom-vision")
    assert cv.output_kind == "probabilities"
    assert models["torchscript"].format == "torchscript" and models["torch_export"].format == "torch_export"


def test_preprocess_accepts_paths_pil_bytes_arrays(models, tmp_path, batch):
    from PIL import Image
    m = models["onnx"]
    img = (batch[0] * 255).round().astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    a = m.preprocess(tmp_path / "a.png")
    b = m.preprocess(Image.fromarray(img))
    c = m.preprocess((tmp_path / "a.png").read_bytes())
    d = m.preprocess(img)
    for v in (b, c, d):
        np.testing.assert_array_equal(a, v)
    assert a.shape == (*SIZE, 3) and a.dtype == np.float32 and a.max() <= 1
    big = m.preprocess(np.zeros((100, 60, 3), np.uint8))
    assert big.shape == (*SIZE, 3)


def test_custom_vision_resize_policy():
    from PIL import Image

    from xaudit.images import resize
    im = Image.new("RGB", (3200, 1000))
    out = resize(im, (224, 224), "custom-vision")
    assert out.size == (224, 224)


def test_overrides_change_preprocessing(files):
    m = xaudit.load_model(str(files / "onnx" / "net.onnx"), color="bgr", value_range="0-255",
                          mean="1,2,3", std=[2, 2, 2])
    p = m.preprocessing
    assert (p.color, p.value_range, p.mean, p.std) == ("bgr", "0-255", (1.0, 2.0, 3.0), (2.0, 2.0, 2.0))


def test_zipmap_labels_without_labels_file(tmp_path, net):
    (tmp_path / "m.onnx").write_bytes(custom_vision_onnx(net, SIZE, labels=LABELS, bias=CV_BIAS))
    m = xaudit.load_model(str(tmp_path / "m.onnx"), color="bgr", value_range="0-255")
    assert m.labels == LABELS  # from the ZipMap attribute, not the (sorted) dict key order


def test_ort_thread_count_from_the_environment(files, monkeypatch, batch):
    from xaudit.adapters import onnx as onnx_adapter
    monkeypatch.delenv("XAUDIT_ORT_THREADS", raising=False)
    default = xaudit.load_model(str(files / "onnx" / "net.onnx")).predict(batch)
    monkeypatch.setenv("XAUDIT_ORT_THREADS", "1")
    assert onnx_adapter.ort_threads() == 1
    one = xaudit.load_model(str(files / "onnx" / "net.onnx")).predict(batch)
    np.testing.assert_allclose(one, default, atol=1e-6)
    monkeypatch.setenv("XAUDIT_ORT_THREADS", "many")
    with pytest.raises(xaudit.ModelLoadError, match="XAUDIT_ORT_THREADS must be a positive integer"):
        xaudit.load_model(str(files / "onnx" / "net.onnx"))


def test_gradients_reachable_flags(models):
    assert models["torchscript"].gradients_reachable
    assert models["onnx"].gradients_reachable
    assert models["cv_zip"].gradients_reachable, models["cv_zip"].gradients_reason


def test_pickled_module_needs_the_flag(files):
    with pytest.raises(xaudit.ModelLoadError, match="--allow-pickle"):
        xaudit.load_model(str(files / "pickled.pth"), input_size=32)
    m = xaudit.load_model(str(files / "pickled.pth"), input_size=32, allow_pickle=True, labels=LABELS)
    assert m.predict(np.zeros((1, *SIZE, 3), np.float32)).shape == (1, 3)


def test_safe_zip_extraction_refuses_traversal(tmp_path, files, monkeypatch):
    monkeypatch.setenv("XAUDIT_CACHE", str(tmp_path / "cache"))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.write(files / "cv_bundle" / "model.onnx", "model.onnx")
        z.write(files / "cv_bundle" / "labels.txt", "labels.txt")
        z.writestr("../../escaped.txt", "owned")
    with pytest.raises(xaudit.ModelLoadError, match="traversal"):
        xaudit.load_model(str(evil))
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


# ----------------------------------------------------------------------------- TF frozen graph
@pytest.mark.tf
def test_tf_frozen_graph_and_tf_bundle(tmp_path, net, batch):
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    w1 = np.transpose(sd["c1.weight"], (2, 3, 1, 0))
    w2 = np.transpose(sd["c2.weight"], (2, 3, 1, 0))

    @tf.function(input_signature=[tf.TensorSpec([None, *SIZE, 3], tf.float32, name="Placeholder")])
    def f(x):  # BGR 0-255 in (Custom Vision convention)
        x = tf.reverse(x, axis=[3]) / 255.0
        x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w1, 1, "SAME"), sd["c1.bias"]))
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w2, 2, "VALID"), sd["c2.bias"]))
        x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        x = tf.reduce_mean(x, axis=[1, 2])
        x = tf.matmul(x, sd["fc.weight"].T) + sd["fc.bias"]
        return tf.nn.softmax(x, name="loss")
    frozen = convert_variables_to_constants_v2(f.get_concrete_function())
    gd = frozen.graph.as_graph_def()
    # rename the softmax node to "loss" (tf.function may add a suffix)
    for n in gd.node:
        if n.op == "Softmax":
            old = n.name
            n.name = "loss"
            for m in gd.node:
                m.input[:] = ["loss" if i == old else i for i in m.input]
    (tmp_path / "model.pb").write_bytes(gd.SerializeToString())
    (tmp_path / "labels.txt").write_text("\n".join(LABELS))
    m = xaudit.load_model(str(tmp_path / "model.pb"))
    assert m.format == "tf_frozen" and m.preprocessing.layout == "NHWC" and m.preprocessing.color == "bgr"
    ref = _reference(net, "plain", batch)
    np.testing.assert_allclose(m.predict(batch), ref, atol=1e-4)
    b = tmp_path / "bundle"
    b.mkdir()
    (b / "model.pb").write_bytes(gd.SerializeToString())
    (b / "labels.txt").write_text("\n".join(LABELS))
    cv = xaudit.load_model(str(b))
    assert cv.format == "custom_vision" and cv.labels == LABELS
    np.testing.assert_allclose(cv.predict(batch), ref, atol=1e-4)
