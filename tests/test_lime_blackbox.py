"""Evidence: LIME and Anchors run on a plain ONNX file and a Custom-Vision-style bundle
through the black-box path only (model.predict; gradients switched off)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _pertnets import make_textures, train_tiny
from xaudit.errors import UnsupportedOperation
from xaudit.explainers import get_explainer


class _CVNet(torch.nn.Module):
    """Custom-Vision-like graph: BGR 0-255 NCHW in, softmax out."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, data):
        rgb = data.flip(1) / 255.0
        return torch.softmax(self.net(rgb), 1)


def _export(module, path, name="x", out="y"):
    torch.onnx.export(module, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=13,
                      input_names=[name], output_names=[out], dynamic_axes={name: {0: "n"}, out: {0: "n"}})


def _load(source):
    try:
        from xaudit.loader import load_model
        m = load_model(str(source))
    except (ImportError, AttributeError, NotImplementedError) as e:
        pytest.skip(f"loader not available yet: {e}")
    m._grad_status = (False, "black-box test: gradients switched off")
    return m


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bb")
    net = train_tiny()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _export(net, d / "plain.onnx")
        cv = d / "cv_bundle"
        cv.mkdir()
        _export(_CVNet(net), cv / "model.onnx", name="data", out="model_output")
    (cv / "labels.txt").write_text("hstripes\nvstripes\nchecks\n")
    (cv / "cvexport.manifest").write_text(json.dumps({"DomainType": "General", "Platform": "ONNX",
                                                       "ModelFileName": "model.onnx", "LabelFileName": "labels.txt"}))
    return {"onnx": d / "plain.onnx", "cv": cv}


@pytest.mark.parametrize("kind", ["onnx", "cv"])
@pytest.mark.parametrize("method", ["lime", "anchors"])
def test_black_box_only(files, kind, method):
    model = _load(files[kind])
    with pytest.raises(UnsupportedOperation):
        model.differentiable()
    img = make_textures(1, seed=4)[0][0]
    params = {"segmentation": "slic", "segmentation_params": {"n_segments": 20}}
    if method == "lime":
        params["num_samples"] = 200
    e = get_explainer(method, **params).explain(model, (img * 255).round().astype(np.uint8))
    assert e.attribution.shape == tuple(model.input_size) and e.model_calls > 0
    assert ("weights" in e.arrays) if method == "lime" else ("anchor_mask" in e.arrays)
