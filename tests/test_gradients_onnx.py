"""Gradients recovered from ONNX graphs: Custom-Vision-style export (ImageScaler,
Constant-held weights, ZipMap), BN folding, unsupported ops and parity failures."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from _gradnets import (OnnxModel, ResNet, SmallCNN, TorchModel, ZipMapOnnxModel, Zoo, custom_vision_onnx,
                       export_onnx)
from xaudit.explainers import get_explainer
from xaudit.model import Preprocessing
from xaudit.white_box.onnx_torch import check_onnx, for_onnx

CV_PP = Preprocessing(color="bgr", value_range="0-255")


@pytest.fixture(scope="module")
def img():
    return np.random.default_rng(1).random((32, 32, 3), dtype=np.float32)


def test_custom_vision_style_graph_gets_fullgrad(img):
    model = ZipMapOnnxModel(custom_vision_onnx(SmallCNN(seed=2)), preprocessing=CV_PP)
    diff = model.differentiable()
    kinds = [b.kind for b in diff.bias_layers]
    assert kinds[0] == "imagescaler" and kinds.count("conv") == 2 and "linear" in kinds
    assert diff.score_kind == "logit" and diff.parity <= 1e-4
    for name in ("fullgrad", "gradcam", "ig"):
        e = get_explainer(name).explain(model, img)
        assert e.attribution.shape == (32, 32) and np.isfinite(e.attribution).all()
        assert e.meta["gradient_source"] == "onnx"
        if name == "fullgrad":
            assert e.meta["completeness_error"] <= 1e-4


def test_bn_folded_export_completeness_and_parity(img):
    net = ResNet(bn=True, seed=7)
    data = export_onnx(net)
    kinds = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert "BatchNormalization" not in kinds  # folded into conv biases by the exporter
    ok, why = check_onnx(data, Preprocessing(), (32, 32))
    assert ok, why
    assert "parity" in why
    e = get_explainer("fullgrad").explain(OnnxModel(data), img)
    assert e.meta["completeness_error"] <= 1e-4
    t = get_explainer("fullgrad").explain(TorchModel(net), img)
    assert t.meta["completeness_error"] <= 1e-4
    # folded BN changes how the bias terms split, not much the map
    assert np.corrcoef(e.attribution.ravel(), t.attribution.ravel())[0, 1] > 0.9


def _with_op(op_type, **attrs):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op_type, ["r"], ["t"], **attrs),
             helper.make_node("GlobalAveragePool", ["t"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Softmax", ["f"], ["y"], axis=1)]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    return m.SerializeToString()


def test_unsupported_op_reported_by_name():
    ok, why = check_onnx(_with_op("Hardmax", axis=1), Preprocessing(), (8, 8))
    assert not ok and "Hardmax" in why
    ok, why = check_onnx(_with_op("Relu"), Preprocessing(), (8, 8))
    assert ok, why


def test_parity_failure_is_reported():
    data = export_onnx(ResNet(bn=True, seed=8))
    from xaudit.errors import UnsupportedOperation
    with pytest.raises(UnsupportedOperation, match="parity check against onnxruntime failed"):
        for_onnx(data, Preprocessing(), (32, 32), tol=0.0, probe_batch=4)
    ok, why = check_onnx(data, Preprocessing(), (32, 32), tol=0.0, probe_batch=4)
    assert not ok and "parity" in why


def test_zipmap_label_order_is_respected(img):
    """ZipMap dicts are keyed by label; labels.txt order may differ from column order."""
    net = SmallCNN(seed=4)
    data = custom_vision_onnx(net, labels=("a", "b", "c"))
    pp = CV_PP
    d0 = for_onnx(data, pp, (32, 32), output_name="loss")
    d1 = for_onnx(data, pp, (32, 32), output_name="loss", labels=["c", "a", "b"])
    import torch
    x = torch.from_numpy(img[None].copy())
    with torch.no_grad():
        z0, z1 = d0.logits(x), d1.logits(x)
    assert torch.allclose(z1, z0[:, [2, 0, 1]])
    from xaudit.errors import UnsupportedOperation
    with pytest.raises(UnsupportedOperation, match="ZipMap"):
        for_onnx(data, pp, (32, 32), output_name="loss", labels=["x", "y", "z"])


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_op_zoo_parity_across_opsets(opset, img):
    net = Zoo(seed=opset)
    data = export_onnx(net, opset=opset)
    ok, why = check_onnx(data, Preprocessing(), (32, 32))
    assert ok, why
    a = get_explainer("fullgrad").explain(OnnxModel(data), img)
    b = get_explainer("fullgrad").explain(TorchModel(net), img)
    assert np.isfinite(a.attribution).all()
    assert abs(a.meta["target_logit"] - b.meta["target_logit"]) < 1e-4


def test_custom_vision_bundle_through_loader(tmp_path, img):
    """A real bundle folder and zip (model.onnx + labels.txt) loaded by the Custom Vision
    adapter gets FullGrad through the ONNX executor."""
    loader = pytest.importorskip("xaudit.loader")
    if not hasattr(loader, "load_model"):
        pytest.skip("loader not available")
    import zipfile
    b = tmp_path / "cv"
    b.mkdir()
    (b / "model.onnx").write_bytes(custom_vision_onnx(SmallCNN(seed=6), labels=("a", "b", "c")))
    (b / "labels.txt").write_text("a\nb\nc\n")
    z = tmp_path / "cv.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in b.iterdir():
            zf.write(f, f.name)
    for src in (b, z):
        m = loader.load_model(str(src))
        assert m.gradients_reachable, m.gradients_reason
        e = get_explainer("fullgrad").explain(m, img)
        assert e.meta["completeness_error"] <= 1e-4 and e.meta["gradient_source"] == "onnx"
        p = m.predict(img[None])[0]
        assert abs(e.target_prob - float(p.max())) <= 1e-4
