"""Native ONNX -> torch executor (no onnx2torch: it needs torchvision, see REFERENCE §6).

Each ONNX node becomes a torch functional call; weights come from initializers *and*
``Constant`` nodes; sub-graphs whose inputs are all constants are folded at build time,
so the converter knows exactly which operands are biases (Conv/Gemm bias inputs,
Add/Sub with a constant, BatchNormalization's implicit bias, ImageScaler's bias).
Only the nodes needed for the probability tensor are kept: ZipMap / ArgMax /
ArrayFeatureExtractor / LabelEncoder branches are dropped. A trailing Softmax is
detected and its input is the score (pre-softmax logits).

:func:`for_onnx` checks parity against onnxruntime on a seeded probe batch
(max |Δp| <= 1e-4) and raises :class:`UnsupportedOperation` with the reason otherwise;
:func:`check_onnx` answers ``(ok, reason)``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UnsupportedOperation
from . import PARITY_TOL
from .graph import GraphDifferentiable, GraphModule, Node, bias_layer

SHAPE_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Dropout", "Cast"}
DROPPED = {"ZipMap", "ArgMax", "ArrayFeatureExtractor", "LabelEncoder"}


def _load(model):
    import onnx
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    return onnx.load(str(model))


def _attrs(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def _pairs(pads, nd):
    """ONNX pads [b1..bn, e1..en] -> torch F.pad list (last dim first)."""
    out = []
    for i in reversed(range(nd)):
        out += [int(pads[i]), int(pads[i + nd])]
    return out


def _same_pads(x, kernel, strides, dilations, mode):
    pads_b, pads_e = [], []
    for i, k in enumerate(kernel):
        size = x.shape[2 + i]
        s, d = strides[i], dilations[i]
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        if mode == "SAME_UPPER":
            pads_b.append(small); pads_e.append(big)
        else:
            pads_b.append(big); pads_e.append(small)
    return pads_b + pads_e


def _resolve_pads(a, x, kernel, nd):
    strides = list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    auto = _s(a.get("auto_pad", "NOTSET"))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(x, kernel, strides, dil, auto), strides, dil
    if auto == "VALID":
        return [0] * (2 * nd), strides, dil
    return list(a.get("pads", [0] * (2 * nd))), strides, dil


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAXP = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGP = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}

_DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
           9: torch.bool, 10: torch.float16, 11: torch.float64}


def _as_ints(t):
    return [int(v) for v in (t.tolist() if torch.is_tensor(t) else t)]


class _Converter:
    def __init__(self, model):
        self.model = model
        self.opset = 13
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                self.opset = int(o.version)
        self.consts: dict = {}
        self.nodes: list = []
        self.biases: list = []
        self.producer: dict = {}

    # --------------------------------------------------------------- op table
    def make(self, node):  # noqa: C901 - one branch per op is the clearest form
        op, a, name = node.op_type, _attrs(node), node.output[0]
        C = self.consts
        opset = self.opset
        ins = list(node.input)

        def const(i):
            return ins[i] in C if i < len(ins) and ins[i] else False

        if op in ("Identity", "Dropout"):
            return lambda x, *r: x if op == "Identity" or len(node.output) == 1 else (x, None)
        if op == "Conv":
            w = C.get(ins[1])
            if w is None:
                raise UnsupportedOperation(f"ONNX Conv {name!r} has non-constant weights")
            nd = w.ndim - 2
            if nd not in _CONV:
                raise UnsupportedOperation(f"ONNX Conv with {nd} spatial dims is not supported")
            group = int(a.get("group", 1))
            kernel = list(a.get("kernel_shape", w.shape[2:]))
            if len(ins) > 2 and ins[2]:
                if not const(2):
                    raise UnsupportedOperation(f"ONNX Conv {name!r} has a non-constant bias")
                self.biases.append(bias_layer(name, "conv", C[ins[2]]))

            def conv(x, w, b=None):
                x = x.contiguous()  # channels-last views crash conv backward on CPU (torch 2.13)
                pads, st, dil = _resolve_pads(a, x, kernel, nd)
                if pads[:nd] == pads[nd:]:
                    return _CONV[nd](x, w, b, st, pads[:nd], dil, group)
                return _CONV[nd](F.pad(x, _pairs(pads, nd)), w, b, st, 0, dil, group)
            return conv
        if op == "Gemm":
            alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
            ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))
            if len(ins) > 2 and ins[2]:
                if const(2):
                    self.biases.append(bias_layer(name, "linear", beta * C[ins[2]], channel_axis=-1))

            def gemm(A, B, c=None):
                A = A.t() if ta else A
                B = B.t() if tb else B
                y = A @ B
                if alpha != 1.0:
                    y = alpha * y
                if c is not None:
                    y = y + (beta * c if beta != 1.0 else c)
                return y
            return gemm
        if op == "MatMul":
            return torch.matmul
        if op in ("Add", "Sub"):
            if const(1) != const(0):  # exactly one constant operand: a bias
                ci = 1 if const(1) else 0
                b = C[ins[ci]].float()
                if op == "Sub" and ci == 1:
                    b = -b
                self.biases.append(bias_layer(name, "add" if op == "Add" else "sub", b, channel_axis=1))
            return torch.add if op == "Add" else torch.sub
        if op == "Mul":
            return torch.mul
        if op == "Div":
            return lambda x, y: torch.div(x, y) if (x.is_floating_point() or y.is_floating_point()) \
                else torch.div(x, y, rounding_mode="trunc")
        if op == "Relu":
            return F.relu
        if op == "LeakyRelu":
            al = float(a.get("alpha", 0.01))
            return lambda x: F.leaky_relu(x, al)
        if op == "PRelu":
            return lambda x, s: torch.where(x >= 0, x, x * s)
        if op == "Clip":
            if opset < 11:
                lo, hi = a.get("min", -math.inf), a.get("max", math.inf)
                return lambda x: torch.clamp(x, lo, hi)
            return lambda x, lo=None, hi=None: torch.clamp(
                x, None if lo is None else float(lo), None if hi is None else float(hi))
        if op in ("Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Floor", "Ceil"):
            f = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp, "Log": torch.log,
                 "Sqrt": torch.sqrt, "Neg": torch.neg, "Abs": torch.abs, "Reciprocal": torch.reciprocal,
                 "Floor": torch.floor, "Ceil": torch.ceil}[op]
            return f
        if op == "Pow":
            return torch.pow
        if op == "BatchNormalization":
            eps = float(a.get("epsilon", 1e-5))
            if all(const(i) for i in (1, 2, 3, 4)):
                sc, bb, mu, var = (C[ins[i]].float() for i in (1, 2, 3, 4))
                self.biases.append(bias_layer(name, "batchnorm", bb - mu * sc / torch.sqrt(var + eps)))
            multi = len([o for o in node.output if o]) > 1
            if multi:
                raise UnsupportedOperation(f"ONNX BatchNormalization {name!r} in training mode")
            return lambda x, s, b, m, v: F.batch_norm(x, m, v, s, b, False, 0.0, eps)
        if op == "InstanceNormalization":
            eps = float(a.get("epsilon", 1e-5))
            return lambda x, s, b: F.instance_norm(x, weight=s, bias=b, eps=eps)
        if op == "LRN":
            size, al, be, k = int(a["size"]), float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("bias", 1.0))
            return lambda x: F.local_response_norm(x, size, al, be, k)
        if op in ("MaxPool", "AveragePool"):
            kernel = list(a["kernel_shape"])
            nd = len(kernel)
            ceil = bool(a.get("ceil_mode", 0))
            cip = bool(a.get("count_include_pad", 0))
            if op == "MaxPool" and len([o for o in node.output if o]) > 1:
                raise UnsupportedOperation("ONNX MaxPool with an Indices output is not supported")

            def pool(x):
                pads, st, dil = _resolve_pads(a, x, kernel, nd)
                sym = pads[:nd] == pads[nd:] and all(p * 2 <= k for p, k in zip(pads[:nd], kernel))
                if op == "MaxPool":
                    if sym:
                        return _MAXP[nd](x, kernel, st, pads[:nd], dil, ceil_mode=ceil)
                    return _MAXP[nd](F.pad(x, _pairs(pads, nd), value=-math.inf), kernel, st, 0, dil, ceil_mode=ceil)
                if any(d != 1 for d in dil):
                    raise UnsupportedOperation("ONNX AveragePool with dilations is not supported")
                if sym:
                    return _AVGP[nd](x, kernel, st, pads[:nd], ceil_mode=ceil, count_include_pad=cip)
                if cip:
                    return _AVGP[nd](F.pad(x, _pairs(pads, nd)), kernel, st, 0, ceil_mode=ceil)
                raise UnsupportedOperation("ONNX AveragePool with asymmetric padding and count_include_pad=0")
            return pool
        if op == "GlobalAveragePool":
            return lambda x: x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
        if op == "GlobalMaxPool":
            return lambda x: x.amax(dim=tuple(range(2, x.ndim)), keepdim=True)
        if op == "Flatten":
            ax = int(a.get("axis", 1))
            return lambda x: x.reshape(int(np.prod(x.shape[:ax % x.ndim if ax else 0])) if ax else 1, -1)
        if op == "Reshape":
            allowzero = int(a.get("allowzero", 0))
            if opset < 5:
                shp = list(a["shape"])
                return lambda x: _reshape(x, shp, allowzero)
            return lambda x, s: _reshape(x, _as_ints(s), allowzero)
        if op == "Transpose":
            perm = a.get("perm")
            return lambda x: x.permute(*(perm if perm is not None else range(x.ndim - 1, -1, -1)))
        if op == "Concat":
            ax = int(a["axis"])
            return lambda *xs: torch.cat([x for x in xs if x is not None], dim=ax)
        if op == "Pad":
            if opset < 11:
                pads, mode, val = list(a["pads"]), _s(a.get("mode", "constant")), float(a.get("value", 0.0))
                return lambda x: _pad(x, pads, mode, val, None)
            mode = _s(a.get("mode", "constant"))
            return lambda x, p, v=None, axes=None: _pad(x, _as_ints(p), mode, 0.0 if v is None else float(v), axes)
        if op in ("Softmax", "LogSoftmax"):
            ax = int(a.get("axis", 1 if opset < 13 else -1))
            f = torch.softmax if op == "Softmax" else torch.log_softmax
            if opset < 13:
                return lambda x: f(x.reshape(int(np.prod(x.shape[:ax % x.ndim])), -1), -1).reshape(x.shape)
            return lambda x: f(x, ax)
        if op == "ImageScaler":
            scale = float(a.get("scale", 1.0))
            b = torch.tensor(list(a.get("bias", [])), dtype=torch.float32)
            if b.numel():
                self.biases.append(bias_layer(name, "imagescaler", b))
            return lambda x: x * scale + (b.reshape(1, -1, *([1] * (x.ndim - 2))) if b.numel() else 0.0)
        if op == "Constant":
            return None  # handled in build
        if op == "Shape":
            st, en = a.get("start", 0), a.get("end", None)
            return lambda x: torch.tensor(list(x.shape)[st:en], dtype=torch.int64)
        if op == "Gather":
            ax = int(a.get("axis", 0))
            return lambda x, i: _gather(x, i, ax)
        if op in ("Unsqueeze", "Squeeze"):
            if opset < 13:
                axes = a.get("axes")
                return lambda x: _sq(x, axes, op)
            return lambda x, axes=None: _sq(x, None if axes is None else _as_ints(axes), op)
        if op in ("ReduceMean", "ReduceSum", "ReduceMax"):
            keep = bool(a.get("keepdims", 1))
            noop = bool(a.get("noop_with_empty_axes", 0))
            attr_axes = a.get("axes")
            red = {"ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax}[op]

            def reduce(x, axes=None):
                ax = attr_axes if axes is None else _as_ints(axes)
                if not ax:
                    if noop:
                        return x
                    ax = list(range(x.ndim))
                return red(x, dim=tuple(int(v) for v in ax), keepdim=keep)
            return reduce
        if op == "Cast":
            dt = _DTYPES.get(int(a["to"]))
            if dt is None:
                raise UnsupportedOperation(f"ONNX Cast to type {a['to']} is not supported")
            return lambda x: x.to(dt)
        if op == "Slice":
            if opset < 10:
                st, en, axs = list(a["starts"]), list(a["ends"]), a.get("axes")
                return lambda x: _slice(x, st, en, axs, None)
            return lambda x, s, e, axs=None, steps=None: _slice(
                x, _as_ints(s), _as_ints(e), None if axs is None else _as_ints(axs), None if steps is None else _as_ints(steps))
        if op == "ConstantOfShape":
            v = a.get("value")
            from onnx import numpy_helper
            val = torch.as_tensor(numpy_helper.to_array(v)) if v is not None else torch.zeros(1)
            return lambda s: torch.full(_as_ints(s), val.reshape(-1)[0].item(), dtype=val.dtype)
        if op in ("Max", "Min", "Sum", "Mean"):
            def var(*xs):
                xs = [x for x in xs if x is not None]
                out = xs[0]
                for x in xs[1:]:
                    out = {"Max": torch.maximum, "Min": torch.minimum}.get(op, torch.add)(out, x)
                return out / len(xs) if op == "Mean" else out
            return var
        raise UnsupportedOperation(f"ONNX operator {op!r} (node {node.name or name!r}) is not supported "
                                   "by the gradient executor")

    # --------------------------------------------------------------- build
    def build(self, output_name):
        from onnx import numpy_helper
        g = self.model.graph
        for init in g.initializer:
            self.consts[init.name] = torch.as_tensor(np.array(numpy_helper.to_array(init)))
        init_names = set(self.consts)
        inputs = [i.name for i in g.input if i.name not in init_names]
        if len(inputs) != 1:
            raise UnsupportedOperation(f"the gradient executor handles graphs with one input; this one has {inputs}")
        for n in g.node:
            for o in n.output:
                self.producer[o] = n
        if any(n.domain not in ("", "ai.onnx", "ai.onnx.ml") for n in g.node):
            bad = sorted({f"{n.domain}:{n.op_type}" for n in g.node if n.domain not in ("", "ai.onnx", "ai.onnx.ml")})
            raise UnsupportedOperation(f"custom ONNX operators are not supported: {', '.join(bad)}")
        # probability tensor: skip ZipMap etc.
        out = output_name or self._default_output()
        p = self.producer.get(out)
        self.zipmap_labels = None
        if p is not None and p.op_type in DROPPED:
            if p.op_type == "ZipMap":
                za = _attrs(p)
                zl = za.get("classlabels_strings") or za.get("classlabels_int64s")
                self.zipmap_labels = [_s(v) if isinstance(v, bytes) else str(v) for v in zl] if zl else None
            out = p.input[0]
        # nodes needed for ``out``
        need, keep = {out}, []
        for n in reversed(list(g.node)):
            if any(o in need for o in n.output):
                if n.op_type in DROPPED:
                    raise UnsupportedOperation(f"the probability output {out!r} depends on ONNX {n.op_type}")
                keep.append(n)
                need.update(i for i in n.input if i)
        keep.reverse()
        # trailing softmax -> score is its input
        score, had_softmax, s = out, False, out
        while s in self.producer:
            n = self.producer[s]
            if n.op_type == "Softmax":
                score, had_softmax = n.input[0], True
                break
            if n.op_type in SHAPE_OPS:
                s = n.input[0]
                continue
            break
        unsupported = []
        for n in keep:
            if n.op_type == "Constant":
                a = _attrs(n)
                if "value" in a:
                    v = torch.as_tensor(np.array(numpy_helper.to_array(a["value"])))
                elif "value_float" in a:
                    v = torch.tensor(a["value_float"], dtype=torch.float32)
                elif "value_floats" in a:
                    v = torch.tensor(list(a["value_floats"]), dtype=torch.float32)
                elif "value_int" in a:
                    v = torch.tensor(a["value_int"], dtype=torch.int64)
                elif "value_ints" in a:
                    v = torch.tensor(list(a["value_ints"]), dtype=torch.int64)
                else:
                    raise UnsupportedOperation(f"ONNX Constant {n.output[0]!r} with attribute {list(a)} is not supported")
                self.consts[n.output[0]] = v
                continue
            try:
                fn = self.make(n)
            except UnsupportedOperation as e:
                unsupported.append(n.op_type)
                first_err = getattr(self, "_first_err", None) or str(e)
                self._first_err = first_err
                continue
            node = Node(n.name or n.output[0], n.op_type, list(n.input), list(n.output), fn)
            if all((not i) or i in self.consts for i in n.input) and n.op_type not in ("Shape",):
                with torch.no_grad():  # constant folding
                    v = fn(*[self.consts[i] if i else None for i in n.input])
                if len(n.output) == 1:
                    self.consts[n.output[0]] = v
                else:
                    for o, val in zip(n.output, v):
                        if o:
                            self.consts[o] = val
                # biases declared for a folded node are not layers
                self.biases = [b for b in self.biases if b.name != n.output[0]]
                continue
            self.nodes.append(node)
        if unsupported:
            raise UnsupportedOperation(f"unsupported ONNX operators: {', '.join(sorted(set(unsupported)))} "
                                       f"({self._first_err})")
        target = score
        gm = GraphModule(self.nodes, self.consts, inputs[0], target).prune()
        live = {n.outputs[0] for n in gm.nodes}
        biases = [b for b in self.biases if b.name in live]
        for b in biases:  # 4-D channel axis of a broadcast constant: NCHW (C,1,1) or NHWC (C,)
            if b.bias.ndim >= 1 and b.bias.numel() > 1 and b.kind in ("add", "sub"):
                shp = list(b.bias.shape)
                b.channel_axis = 1 if len(shp) >= 3 and shp[-1] == 1 and shp[-2] == 1 else -1
        return gm, biases, out, had_softmax, inputs[0]

    def _default_output(self):
        g = self.model.graph
        for o in g.output:
            p = self.producer.get(o.name)
            if o.type.HasField("tensor_type") and o.type.tensor_type.elem_type in (1, 10, 11) and \
                    (p is None or p.op_type not in DROPPED):
                return o.name
        for o in g.output:
            p = self.producer.get(o.name)
            if p is not None and p.op_type == "ZipMap":
                return p.input[0]
        raise UnsupportedOperation("no float output tensor found in the ONNX graph")


def _reshape(x, shape, allowzero=0):
    shape = list(shape)
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _pad(x, pads, mode, val, axes):
    nd = x.ndim
    if axes is not None:
        axes = [a % nd for a in _as_ints(axes)]
        full = [0] * (2 * nd)
        k = len(axes)
        for j, ax in enumerate(axes):
            full[ax], full[ax + nd] = pads[j], pads[j + k]
        pads = full
    tp = _pairs(pads, nd)
    while len(tp) >= 2 and tp[-1] == 0 and tp[-2] == 0:
        tp = tp[:-2]
    if not tp:
        return x
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(mode)
    if mode is None:
        raise UnsupportedOperation(f"ONNX Pad mode {mode!r} is not supported")
    return F.pad(x, tp, mode=mode, value=val) if mode == "constant" else F.pad(x, tp, mode=mode)


def _gather(x, idx, ax):
    idx = idx.long()
    ax = ax % x.ndim
    idx = torch.where(idx < 0, idx + x.shape[ax], idx)
    out = torch.index_select(x, ax, idx.reshape(-1))
    return out.reshape(list(x.shape[:ax]) + list(idx.shape) + list(x.shape[ax + 1:]))


def _sq(x, axes, op):
    if op == "Squeeze":
        if axes is None:
            return x.squeeze()
        for a in sorted((a % x.ndim for a in axes), reverse=True):
            x = x.squeeze(a)
        return x
    nd = x.ndim + len(axes)
    for a in sorted(a % nd for a in axes):
        x = x.unsqueeze(a)
    return x


def _slice(x, starts, ends, axes, steps):
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = a % x.ndim
        dim = x.shape[a]
        if st == 0:
            raise UnsupportedOperation("ONNX Slice with step 0")
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = max(min(s, dim), 0), max(min(e, dim), 0)
        else:
            s, e = max(min(s, dim - 1), -1), max(min(e, dim - 1), -1)
        idx = torch.arange(s, e, st, dtype=torch.long)
        if st == 1:
            x = x.narrow(a, s, max(e - s, 0))
        else:
            x = torch.index_select(x, a, idx)
    return x


# ------------------------------------------------------------------------------- public
def convert(model, output_name=None, info=None):
    """ONNX model -> (GraphModule returning the score tensor, bias layers, prob output name,
    had_softmax, input name). Raises UnsupportedOperation naming unsupported ops.
    ``info`` (a dict) receives ``zipmap_labels`` when the output was a ZipMap."""
    m = _load(model)
    c = _Converter(m)
    res = c.build(output_name)
    if info is not None:
        info["zipmap_labels"] = c.zipmap_labels
        info["opset"] = c.opset
    return res


def _input_batch(m, input_name):
    for i in m.graph.input:
        if i.name == input_name and i.type.HasField("tensor_type"):
            dims = i.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                return int(dims[0].dim_value)
    return None


def for_onnx(model, preprocessing, input_size, output_name=None, probe_batch=2, seed=0, ort_session=None,
             output_kind=None, tol=PARITY_TOL, labels=None):
    """Differentiable view of an ONNX graph, after a parity check against onnxruntime.

    ``output_name``: the output the adapter reads (a ZipMap output is replaced by the
    probability tensor feeding it); default: the first float tensor output. ``labels``:
    the model's labels in index order; when the output is a ZipMap whose class labels are
    the same set in another order, the logit columns are permuted to ``labels`` order."""
    import onnx
    m = _load(model)
    info = {}
    try:
        gm, biases, prob_name, had_softmax, input_name = convert(m, output_name, info)
    except UnsupportedOperation:
        raise
    except Exception as e:  # noqa: BLE001 - any conversion failure is a capability answer
        raise UnsupportedOperation(f"ONNX graph could not be converted for gradients: {type(e).__name__}: {e}") from None
    gm.eval()
    perm = None
    zl = info.get("zipmap_labels")
    if labels is not None and zl and list(labels) != zl:
        if sorted(map(str, labels)) != sorted(zl):
            raise UnsupportedOperation(f"the labels do not match the graph's ZipMap class labels {zl[:5]}...")
        perm = [zl.index(str(lb)) for lb in labels]
    fixed = _input_batch(m, input_name)
    n = fixed or probe_batch
    rng = np.random.default_rng(seed)
    h, w = input_size
    probe = rng.random((n, h, w, 3), dtype=np.float32)
    native = preprocessing.apply(probe)
    # onnxruntime reference on the probability tensor (exposed as an extra output if needed)
    import onnxruntime as ort
    mm = m
    if prob_name not in [o.name for o in m.graph.output]:
        mm = onnx.ModelProto()
        mm.CopyFrom(m)
        mm.graph.output.append(onnx.helper.make_tensor_value_info(prob_name, onnx.TensorProto.FLOAT, None))
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(mm.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ref = np.asarray(sess.run([prob_name], {input_name: native})[0], dtype=np.float64).reshape(n, -1)
    except Exception as e:  # noqa: BLE001
        raise UnsupportedOperation(f"onnxruntime could not run the parity probe: {type(e).__name__}: {e}") from None
    if perm is not None:
        ref = ref[:, perm]
        idx = torch.tensor(perm)
        gm.post = lambda y, _i=idx: y.reshape(y.shape[0], -1).index_select(1, _i)
    try:
        with torch.no_grad():
            score = gm(torch.from_numpy(native)).reshape(n, -1).double()
    except Exception as e:  # noqa: BLE001
        raise UnsupportedOperation(f"the converted ONNX graph failed on the probe batch: {type(e).__name__}: {e}") from None
    score_kind = "logit"
    if had_softmax:
        p_exec = torch.softmax(score, 1).numpy()
        p_ref = ref / ref.sum(1, keepdims=True)
    else:
        from ..model import looks_like_probabilities
        if output_kind != "logits" and looks_like_probabilities(ref):
            score_kind = "log_prob"  # graph ends in probabilities without a Softmax node we can cut
            p_exec = score.numpy() / score.numpy().sum(1, keepdims=True)
            p_ref = ref / ref.sum(1, keepdims=True)
            prev = gm.post
            gm.post = lambda y: torch.log((prev(y) if prev is not None else y).clamp_min(1e-12))
        else:
            p_exec = torch.softmax(score, 1).numpy()
            p_ref = torch.softmax(torch.from_numpy(ref), 1).numpy()
    if p_exec.shape != p_ref.shape:
        raise UnsupportedOperation(f"parity check failed: executor output {p_exec.shape} vs onnxruntime {p_ref.shape}")
    diff = float(np.abs(p_exec - p_ref).max())
    if not np.isfinite(diff) or diff > tol:
        raise UnsupportedOperation(f"parity check against onnxruntime failed: max |dp| = {diff:.2e} > {tol:g}")
    d = GraphDifferentiable(gm, preprocessing, biases, origin="onnx", score_kind=score_kind,
                            notes=f"native ONNX executor (opset {_Converter(m).opset}), {len(gm.nodes)} nodes, "
                                  f"{len(biases)} bias layers, parity max|dp|={diff:.1e} on {n} probe images")
    d.parity = diff
    d.fixed_batch = fixed
    d.prob_output = prob_name
    return d


def check_onnx(model, preprocessing=None, input_size=None, **kw):
    """-> (ok, reason). Conversion + parity check; never raises for graph problems."""
    from ..model import Preprocessing
    try:
        m = _load(model)
        if input_size is None:
            input_size = _guess_size(m)
        d = for_onnx(m, preprocessing or Preprocessing(), input_size, **kw)
        return True, d.notes
    except UnsupportedOperation as e:
        return False, str(e)
    except Exception as e:  # noqa: BLE001
        return False, f"{type(e).__name__}: {e}"


def _guess_size(m):
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) == 4:
        return (dims[2], dims[3]) if dims[1] in (1, 3) else (dims[1], dims[2])
    raise UnsupportedOperation("cannot infer the input size of the ONNX graph; pass input_size")
