"""TF frozen graphs (GraphDef ``.pb``) as differentiable torch graphs (extra ``[tf]``).

The GraphDef is parsed with TensorFlow, then every node is mapped to a torch call
(Conv2D, DepthwiseConv2dNative, BiasAdd, FusedBatchNorm(V3), MatMul, Add/AddV2/Sub/Mul/
RealDiv, Relu/Relu6/Sigmoid/Tanh, MaxPool/AvgPool, Mean, Pad, Reshape, Squeeze, ConcatV2,
Softmax, Identity ...); tensors stay NHWC like in TensorFlow. Bias layers: BiasAdd
biases, Add-with-constant, FusedBatchNorm's implicit bias ``offset - mean*scale/sqrt(var+eps)``.
Parity is checked against TensorFlow itself on a seeded probe batch (max |Δp| <= 1e-4);
otherwise the model is gradient-unreachable with the reason.

This route was chosen over ``GradientTape`` on the imported graph because the same
FullGrad / Grad-CAM code then runs unchanged (one implementation for every format), and
it needs TensorFlow only to parse the GraphDef and to check parity.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UnsupportedOperation
from . import PARITY_TOL
from .graph import GraphDifferentiable, GraphModule, Node, bias_layer

SHAPE_OPS = {"Identity", "Reshape", "Squeeze", "StopGradient", "Snapshot"}


def _tf():
    try:
        import tensorflow as tf  # noqa: F401
        return tf
    except ImportError:
        raise UnsupportedOperation("TensorFlow graphs need the [tf] extra: pip install 'xaudit[tf]'") from None


def load_graph_def(src):
    tf = _tf()
    if isinstance(src, tf.compat.v1.GraphDef):
        return src
    gd = tf.compat.v1.GraphDef()
    data = bytes(src) if isinstance(src, (bytes, bytearray)) else open(str(src), "rb").read()
    gd.ParseFromString(data)
    return gd


def _attr(node, key, default=None):
    if key not in node.attr:
        return default
    v = node.attr[key]
    which = v.WhichOneof("value")
    if which == "list":
        lst = v.list
        return list(lst.i) or list(lst.f) or [s.decode() for s in lst.s]
    if which == "s":
        return v.s.decode()
    if which == "tensor":
        from tensorflow.python.framework import tensor_util
        return tensor_util.MakeNdarray(v.tensor)
    return getattr(v, which) if which else default


def _tname(ref):
    """GraphDef input reference -> env name ('x' == 'x:0')."""
    ref = ref.lstrip("^")
    if ref.endswith(":0"):
        ref = ref[:-2]
    return ref


def _same(size, k, s, d=1):
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _pad_nhwc(x, padding, ksize, strides, dil=(1, 1), explicit=None, value=0.0):
    """-> x padded (NHWC) for TF 'SAME' / 'VALID' / 'EXPLICIT' padding."""
    if padding == "VALID":
        return x
    if padding == "EXPLICIT":
        p = list(explicit)  # [n0,n1,h0,h1,w0,w1,c0,c1]
        return F.pad(x, (0, 0, p[4], p[5], p[2], p[3]), value=value)
    (t, b), (l, r) = _same(x.shape[1], ksize[0], strides[0], dil[0]), _same(x.shape[2], ksize[1], strides[1], dil[1])
    if t == b == l == r == 0:
        return x
    return F.pad(x, (0, 0, l, r, t, b), value=value)


class _Conv:
    def __init__(self, node, depthwise=False):
        fmt = _attr(node, "data_format", "NHWC")
        if fmt != "NHWC":
            raise UnsupportedOperation(f"TF {node.op} with data_format {fmt} is not supported")
        s = _attr(node, "strides", [1, 1, 1, 1])
        d = _attr(node, "dilations", [1, 1, 1, 1])
        self.strides, self.dil = (s[1], s[2]), (d[1], d[2])
        self.padding = _attr(node, "padding", "VALID")
        self.explicit = _attr(node, "explicit_paddings", [])
        self.depthwise = depthwise

    def __call__(self, x, w):
        kh, kw = w.shape[0], w.shape[1]
        x = _pad_nhwc(x, self.padding, (kh, kw), self.strides, self.dil, self.explicit)
        if self.depthwise:  # (kh,kw,in,mult) -> (in*mult,1,kh,kw)
            cin, mult = w.shape[2], w.shape[3]
            wt = w.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
            y = F.conv2d(x.permute(0, 3, 1, 2).contiguous(), wt, None, self.strides, 0, self.dil, groups=cin)
        else:  # contiguous: channels-last views crash conv backward on CPU (torch 2.13)
            y = F.conv2d(x.permute(0, 3, 1, 2).contiguous(), w.permute(3, 2, 0, 1).contiguous(), None,
                         self.strides, 0, self.dil)
        return y.permute(0, 2, 3, 1)


class _Pool:
    def __init__(self, node):
        if _attr(node, "data_format", "NHWC") != "NHWC":
            raise UnsupportedOperation(f"TF {node.op} with data_format NCHW is not supported")
        k, s = _attr(node, "ksize"), _attr(node, "strides")
        self.k, self.s = (k[1], k[2]), (s[1], s[2])
        self.padding = _attr(node, "padding", "VALID")
        self.op = node.op

    def __call__(self, x):
        if self.op == "MaxPool":
            xp = _pad_nhwc(x, self.padding, self.k, self.s, value=-math.inf)
            return F.max_pool2d(xp.permute(0, 3, 1, 2), self.k, self.s).permute(0, 2, 3, 1)
        xp = _pad_nhwc(x, self.padding, self.k, self.s)
        y = F.avg_pool2d(xp.permute(0, 3, 1, 2), self.k, self.s)
        if xp.shape != x.shape:  # TF excludes padding from the average
            ones = _pad_nhwc(torch.ones_like(x[..., :1]), self.padding, self.k, self.s)
            y = y / F.avg_pool2d(ones.permute(0, 3, 1, 2), self.k, self.s)
        return y.permute(0, 2, 3, 1)


def _ints(t):
    return [int(v) for v in (t.reshape(-1).tolist() if torch.is_tensor(t) else np.asarray(t).reshape(-1))]


def _make(node, consts, biases):  # noqa: C901
    op, name = node.op, node.name
    ins = [_tname(i) for i in node.input if not i.startswith("^")]

    def const(i):
        return i < len(ins) and ins[i] in consts
    if op in ("Identity", "StopGradient", "Snapshot", "NoOp"):
        return lambda x=None, *r: x
    if op == "Conv2D":
        return _Conv(node)
    if op == "DepthwiseConv2dNative":
        return _Conv(node, depthwise=True)
    if op == "BiasAdd":
        if _attr(node, "data_format", "NHWC") != "NHWC":
            raise UnsupportedOperation("TF BiasAdd with data_format NCHW is not supported")
        if const(1):
            biases.append(bias_layer(name, "biasadd", consts[ins[1]], channel_axis=-1))
        return lambda x, b: x + b
    if op in ("Add", "AddV2", "Sub"):
        if const(0) != const(1):
            ci = 1 if const(1) else 0
            b = consts[ins[ci]].float()
            if op == "Sub" and ci == 1:
                b = -b
            biases.append(bias_layer(name, "add" if op != "Sub" else "sub", b, channel_axis=-1))
        return torch.sub if op == "Sub" else torch.add
    if op == "Mul":
        return torch.mul
    if op in ("RealDiv", "Div"):
        return torch.div
    if op in ("Maximum", "Minimum"):
        return torch.maximum if op == "Maximum" else torch.minimum
    if op == "Relu":
        return F.relu
    if op == "Relu6":
        return lambda x: torch.clamp(x, 0, 6)
    if op == "LeakyRelu":
        al = float(_attr(node, "alpha", 0.2))
        return lambda x: F.leaky_relu(x, al)
    if op in ("Sigmoid", "Tanh", "Exp", "Sqrt", "Rsqrt", "Square", "Neg"):
        return {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp, "Sqrt": torch.sqrt,
                "Rsqrt": torch.rsqrt, "Square": torch.square, "Neg": torch.neg}[op]
    if op in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"):
        if _attr(node, "is_training", False):
            raise UnsupportedOperation(f"TF {op} {name!r} is in training mode")
        if _attr(node, "data_format", "NHWC") != "NHWC":
            raise UnsupportedOperation(f"TF {op} with data_format NCHW is not supported")
        eps = float(_attr(node, "epsilon", 1e-3))
        if all(const(i) for i in (1, 2, 3, 4)):
            sc, off, mu, var = (consts[ins[i]].float() for i in (1, 2, 3, 4))
            biases.append(bias_layer(name, "batchnorm", off - mu * sc / torch.sqrt(var + eps), channel_axis=-1))
        return lambda x, s, o, m, v: (x - m) * (s / torch.sqrt(v + eps)) + o
    if op == "MatMul":
        ta, tb = bool(_attr(node, "transpose_a", False)), bool(_attr(node, "transpose_b", False))
        return lambda a, b: (a.t() if ta else a) @ (b.t() if tb else b)
    if op in ("MaxPool", "AvgPool"):
        return _Pool(node)
    if op in ("Mean", "Sum", "Max"):
        keep = bool(_attr(node, "keep_dims", False))
        red = {"Mean": torch.mean, "Sum": torch.sum, "Max": torch.amax}[op]
        return lambda x, ax: red(x, dim=tuple(_ints(ax)), keepdim=keep)
    if op in ("Pad", "PadV2", "MirrorPad"):
        mode = {"REFLECT": "reflect", "SYMMETRIC": None}.get(_attr(node, "mode", ""), "constant")
        if mode is None:
            raise UnsupportedOperation("TF MirrorPad SYMMETRIC is not supported")

        def pad(x, p, v=None):
            p = _ints(p)
            tp = []
            for i in reversed(range(x.ndim)):
                tp += [p[2 * i], p[2 * i + 1]]
            if mode == "constant":
                return F.pad(x, tp, value=0.0 if v is None else float(v))
            return F.pad(x.permute(0, 3, 1, 2), tp[2:6], mode=mode).permute(0, 2, 3, 1)
        return pad
    if op == "Reshape":
        return lambda x, s: x.reshape(_ints(s))
    if op == "Squeeze":
        dims = _attr(node, "squeeze_dims", [])
        return lambda x: x.squeeze() if not dims else _squeeze(x, dims)
    if op == "ExpandDims":
        return lambda x, d: x.unsqueeze(_ints(d)[0])
    if op == "ConcatV2":
        return lambda *xs: torch.cat(list(xs[:-1]), dim=_ints(xs[-1])[0])
    if op in ("Softmax",):
        return lambda x: torch.softmax(x, -1)
    if op == "Shape":
        return lambda x: torch.tensor(list(x.shape), dtype=torch.int32)
    if op == "Cast":
        return lambda x: x.float()
    raise UnsupportedOperation(f"TF operator {op!r} (node {name!r}) is not supported by the gradient executor")


def _squeeze(x, dims):
    for d in sorted((d % x.ndim for d in dims), reverse=True):
        x = x.squeeze(d)
    return x


def convert(graph_def, input_name=None, output_name=None):
    """GraphDef -> (GraphModule NHWC -> score, biases, prob tensor name, had_softmax, input name)."""
    gd = load_graph_def(graph_def)
    nodes = {n.name: n for n in gd.node}
    phs = [n.name for n in gd.node if n.op == "Placeholder"]
    inp = _tname(input_name) if input_name else (phs[0] if len(phs) == 1 else None)
    if inp is None or inp not in nodes:
        raise UnsupportedOperation(f"cannot tell the image input of the TF graph (placeholders: {phs}); pass input_name")
    if output_name:
        out = _tname(output_name)
    else:
        sm = [n.name for n in gd.node if n.op == "Softmax"]
        consumed = {_tname(i) for n in gd.node for i in n.input}
        ends = [n.name for n in gd.node if n.name not in consumed and n.op not in ("NoOp", "Const", "Placeholder")]
        out = sm[-1] if sm else (ends[-1] if ends else None)
    if out is None or out.split(":")[0] not in nodes:
        raise UnsupportedOperation(f"output {output_name!r} not found in the TF graph")
    # trailing softmax -> its input
    score, had_softmax, s = out, False, out
    while s in nodes:
        n = nodes[s]
        if n.op == "Softmax":
            score, had_softmax = _tname(n.input[0]), True
            break
        if n.op in SHAPE_OPS:
            s = _tname(n.input[0])
            continue
        break
    # needed nodes in topological order
    order, seen = [], set()

    def visit(nm):
        base = nm.split(":")[0]
        if base in seen:
            return
        seen.add(base)
        if base not in nodes:
            raise UnsupportedOperation(f"TF graph references a missing node {base!r}")
        for i in nodes[base].input:
            if not i.startswith("^"):
                visit(_tname(i))
        order.append(nodes[base])
    import sys
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    visit(score)
    consts, gnodes, biases, bad = {}, [], [], []
    for n in order:
        if n.name == inp:
            continue
        if n.op == "Const":
            consts[n.name] = torch.as_tensor(np.array(_attr(n, "value")))
            continue
        if n.op == "Placeholder":
            raise UnsupportedOperation(f"the TF graph has a second placeholder {n.name!r} on the path to the output")
        try:
            fn = _make(n, consts, biases)
        except UnsupportedOperation as e:
            bad.append((n.op, str(e)))
            continue
        ins = [_tname(i) for i in n.input if not i.startswith("^")]
        nouts = 6 if n.op.startswith("FusedBatchNorm") else 1
        outs = [n.name] if nouts == 1 else [n.name]
        if all(i in consts for i in ins) and n.op not in ("Shape",) and ins:
            with torch.no_grad():
                consts[n.name] = fn(*[consts[i] for i in ins])
            biases[:] = [b for b in biases if b.name != n.name]
            continue
        gnodes.append(Node(n.name, n.op, ins, outs, fn))
    if bad:
        raise UnsupportedOperation(f"unsupported TF operators: {', '.join(sorted({b[0] for b in bad}))} ({bad[0][1]})")
    gm = GraphModule(gnodes, consts, inp, score).prune()
    live = {n.outputs[0] for n in gm.nodes}
    return gm, [b for b in biases if b.name in live], out, had_softmax, inp


def for_tf_graph(graph_def, preprocessing, input_size, input_name=None, output_name=None, probe_batch=2, seed=0,
                 tol=PARITY_TOL):
    tf = _tf()
    gd = load_graph_def(graph_def)
    try:
        gm, biases, prob_name, had_softmax, inp = convert(gd, input_name, output_name)
    except UnsupportedOperation:
        raise
    except Exception as e:  # noqa: BLE001
        raise UnsupportedOperation(f"TF graph could not be converted for gradients: {type(e).__name__}: {e}") from None
    rng = np.random.default_rng(seed)
    h, w = input_size
    probe = rng.random((probe_batch, h, w, 3), dtype=np.float32)
    native = preprocessing.apply(probe)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
    try:
        with tf.compat.v1.Session(graph=graph) as sess:
            ref = sess.run(f"{prob_name}:0" if ":" not in prob_name else prob_name, {f"{inp}:0": native})
    except Exception as e:  # noqa: BLE001
        raise UnsupportedOperation(f"TensorFlow could not run the parity probe: {type(e).__name__}: {e}") from None
    ref = np.asarray(ref, np.float64).reshape(probe_batch, -1)
    with torch.no_grad():
        score = gm(torch.from_numpy(native)).reshape(probe_batch, -1).double()
    p_exec = torch.softmax(score, 1).numpy()
    p_ref = ref / ref.sum(1, keepdims=True) if had_softmax else torch.softmax(torch.from_numpy(ref), 1).numpy()
    diff = float(np.abs(p_exec - p_ref).max()) if p_exec.shape == p_ref.shape else float("inf")
    if not diff <= tol:
        raise UnsupportedOperation(f"parity check against TensorFlow failed: max |dp| = {diff:.2e} > {tol:g}")
    d = GraphDifferentiable(gm, preprocessing, biases, origin="tf", layout_axis=3,
                            notes=f"TF GraphDef -> torch executor, {len(gm.nodes)} nodes, {len(biases)} bias layers, "
                                  f"parity max|dp|={diff:.1e} vs TensorFlow")
    d.parity = diff
    d.prob_output = prob_name
    return d


def check_tf_graph(graph_def, preprocessing, input_size, **kw):
    try:
        return True, for_tf_graph(graph_def, preprocessing, input_size, **kw).notes
    except UnsupportedOperation as e:
        return False, str(e)
