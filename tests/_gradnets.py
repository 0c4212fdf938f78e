"""Small real models for the gradient tests (built in fixtures, no shipped files needed).

``ResNet``: a BatchNorm ResNet (optionally BN-free, optionally ending in softmax);
``TorchModel`` / ``OnnxModel``: minimal Model adapters over an eager/TorchScript module and
an onnxruntime session, used until/besides the real adapters.
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from xaudit.model import Model, Preprocessing


class Block(nn.Module):
    def __init__(self, cin, cout, stride=1, bn=True):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=not bn)
        self.b1 = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=not bn)
        self.b2 = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.sc = None if (stride == 1 and cin == cout) else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=not bn), nn.BatchNorm2d(cout) if bn else nn.Identity())

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.sc is None else self.sc(x)))


class ResNet(nn.Module):
    def __init__(self, n=4, bn=True, w=8, softmax=False, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=not bn), nn.BatchNorm2d(w) if bn else nn.Identity(),
                                  nn.ReLU())
        self.layer1 = Block(w, w, 1, bn)
        self.layer2 = Block(w, 2 * w, 2, bn)
        self.fc = nn.Linear(2 * w, n)
        self.softmax = softmax
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.1))
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    c = m.num_features
                    m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
        self.eval()

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        x = self.fc(x.mean((2, 3)))
        return torch.softmax(x, 1) if self.softmax else x


class TorchModel(Model):
    format = "torch"

    def __init__(self, module, input_size=(32, 32), preprocessing=None, output_kind="auto"):
        try:
            module.eval()
        except NotImplementedError:  # torch.export programs refuse eval()
            pass
        self.module = module
        pp = preprocessing or Preprocessing()
        n = self._raw(pp.apply(np.zeros((1, *input_size, 3), np.float32))).shape[1]
        self._setup(source="<torch module>", labels=[f"c{i}" for i in range(n)], input_size=input_size,
                    preprocessing=pp, output_kind=output_kind)
        self.resolve_output_kind()
        self._diff = None

    def _raw(self, native):
        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(native))).numpy()

    def _forward_native(self, native):
        return self._raw(native)

    def _check_gradients(self):
        from xaudit.white_box import for_torch_module
        self._diff = for_torch_module(self.module, self.preprocessing, self.input_size)
        return True, self._diff.notes

    def _differentiable(self):
        return self._diff


class OnnxModel(Model):
    format = "onnx"

    def __init__(self, onnx_bytes, input_size=(32, 32), preprocessing=None):
        import onnxruntime as ort
        self.onnx_bytes = onnx_bytes
        self.sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        pp = preprocessing or Preprocessing()
        self._in = self.sess.get_inputs()[0].name
        n = self._forward_native(pp.apply(np.zeros((1, *input_size, 3), np.float32))).shape[1]
        self._setup(source="<onnx bytes>", labels=[f"c{i}" for i in range(n)], input_size=input_size,
                    preprocessing=pp, output_kind="auto")
        self.resolve_output_kind()
        self._diff = None

    def _forward_native(self, native):
        return self.sess.run(None, {self._in: native})[0]

    def _check_gradients(self):
        from xaudit.white_box.onnx_torch import for_onnx
        self._diff = for_onnx(self.onnx_bytes, self.preprocessing, self.input_size)
        return True, self._diff.notes

    def _differentiable(self):
        return self._diff


def export_onnx(module, input_size=(32, 32), opset=13) -> bytes:
    import warnings
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, *input_size),), f, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return f.getvalue()


def script(module):
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    buf.seek(0)
    return torch.jit.load(buf)


class SmallCNN(nn.Module):
    """BN-free conv net (Custom-Vision-like head: global pool, linear, softmax)."""

    def __init__(self, n=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(3, 8, 3, 1, 1)
        self.c2 = nn.Conv2d(8, 8, 3, 2, 1)
        self.fc = nn.Linear(8, n)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim > 1 else 0.1))
        self.eval()

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return torch.softmax(self.fc(x.mean((2, 3))), 1)


def custom_vision_onnx(net, input_size=(32, 32), labels=("a", "b", "c"), scale=1 / 255.0,
                       bias=(-0.4, -0.45, -0.5)) -> bytes:
    """A Custom-Vision-style export: fixed batch 1, BGR 0-255 input 'data', ImageScaler,
    weights held in Constant nodes, Softmax -> 'model_output', ZipMap 'loss', 'classLabel'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    m = onnx.load_from_string(export_onnx(net, input_size, opset=9))
    g = m.graph
    nodes = []
    for init in g.initializer:  # weights as Constant nodes
        nodes.append(helper.make_node("Constant", [], [init.name], value=init))
    del g.initializer[:]
    x0 = g.input[0].name
    nodes.append(helper.make_node("ImageScaler", ["data"], [x0], scale=scale, bias=list(bias)))
    old = list(g.node)
    softmax_out = g.output[0].name
    for n in old:
        nodes.append(n)
    # rename the softmax output and add the label branches
    for n in nodes:
        for i, o in enumerate(n.output):
            if o == softmax_out:
                n.output[i] = "model_output"
    labels_t = numpy_helper.from_array(np.array(list(labels), dtype=object), "labels")
    nodes += [
        helper.make_node("ZipMap", ["model_output"], ["loss"], domain="ai.onnx.ml", classlabels_strings=list(labels)),
        helper.make_node("ArgMax", ["model_output"], ["idx"], axis=1, keepdims=0),
        helper.make_node("Constant", [], ["labels"], value=labels_t),
        helper.make_node("ArrayFeatureExtractor", ["labels", "idx"], ["classLabel"], domain="ai.onnx.ml"),
    ]
    h, w = input_size
    graph = helper.make_graph(
        nodes, "cv", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("classLabel", TensorProto.STRING, [1, 1]),
         helper.make_value_info("loss", helper.make_sequence_type_proto(
             helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9), helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 6
    return model.SerializeToString()


class ZipMapOnnxModel(OnnxModel):
    """Reads probabilities from the ZipMap output 'loss' (as the CV adapter does)."""

    def __init__(self, onnx_bytes, input_size=(32, 32), preprocessing=None):
        super().__init__(onnx_bytes, input_size, preprocessing)
        self.fixed_batch = 1

    def _forward_native(self, native):
        outs = []
        for i in range(native.shape[0]):
            rows = self.sess.run(["loss"], {self._in: native[i:i + 1]})[0]
            outs.append([rows[0][k] for k in sorted(rows[0])])
        return np.asarray(outs, np.float32)

    def _check_gradients(self):
        from xaudit.white_box.onnx_torch import for_onnx
        self._diff = for_onnx(self.onnx_bytes, self.preprocessing, self.input_size, output_name="loss")
        return True, self._diff.notes


class Zoo(nn.Module):
    """Many ONNX ops at once: grouped/dilated conv, LeakyRelu, Clip, Sigmoid, MaxPool
    ceil_mode, Concat, BN 2d/1d, AveragePool with count_include_pad=0, asymmetric Pad
    (exported with Slice/ConstantOfShape), view() (Shape/Gather/Unsqueeze/Concat/Reshape),
    Gemm, Dropout, Softmax."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=3)
        self.bn = nn.BatchNorm2d(12)
        self.pad = nn.ZeroPad2d((1, 0, 2, 0))
        self.c3 = nn.Conv2d(12, 8, (3, 3), dilation=(1, 2))
        self.fc = nn.Linear(64, 16)
        self.bn1 = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 5)
        self.do = nn.Dropout(0.3)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                    m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        self.eval()

    def forward(self, x):
        a = F.leaky_relu(self.c1(x), 0.1)
        b = F.hardtanh(self.c2(a), -1, 1) * torch.sigmoid(self.c2(a))
        a2 = F.max_pool2d(a, 2, ceil_mode=True)[:, :, :b.shape[2], :b.shape[3]]
        y = F.relu(self.bn(torch.cat([a2, b], 1)))
        y = F.avg_pool2d(y, 3, 2, padding=1, count_include_pad=False)
        y = F.avg_pool2d(F.relu(self.c3(self.pad(y))), 2)
        y = y.view(y.size(0), -1)
        y = self.do(F.relu(self.bn1(self.fc(y))))
        return F.softmax(self.fc2(y), dim=1)
