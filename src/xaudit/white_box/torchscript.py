"""TorchScript modules (``torch.jit.load``) as differentiable graphs.

ScriptModules refuse forward hooks (``register_forward_hook is not supported on
ScriptModules``), so FullGrad cannot capture layer outputs the eager way. Instead the
module is frozen (``torch.jit.freeze``: weights become constants, Conv+BatchNorm pairs are
folded into conv biases, which keeps FullGrad's completeness exact) and its aten graph
is run node by node by :class:`xaudit.white_box.graph.GraphModule`, calling
``torch.ops.aten.*`` -- fully differentiable, with every bias operand known.
Control flow (prim::If / prim::Loop) is reported as unsupported.
"""
from __future__ import annotations

import torch

from ..errors import UnsupportedOperation
from . import PARITY_TOL
from .graph import GraphDifferentiable, GraphModule, Node, bias_layer

_PASS = {"aten::dropout", "aten::dropout_", "aten::feature_dropout", "aten::detach", "aten::contiguous"}


def _scope_path(node) -> str:
    """Module path of a node ('layer2.c1'), from the inlined call stack when available."""
    try:
        h = node.getModuleHierarchy() or ""
    except Exception:  # noqa: BLE001 - older torch
        h = ""
    if h:
        parts = []
        for p in h.split("."):
            nm = p.split("(")[0]
            if nm == "SELF":
                continue
            if not nm or nm == "UNKNOWN_INSTANCE":
                break
            parts.append(nm)
        return ".".join(parts)
    s = node.scopeName() or ""
    parts = [p.split("::")[-1] for p in s.split("/") if "::" in p]
    return ".".join(parts[1:])


def _op(kind, schema_str):
    ns, name = kind.split("::")
    packet = getattr(getattr(torch.ops, ns), name)
    schema = torch._C.parse_schema(schema_str) if schema_str else None
    if schema is None:
        return packet, None
    ov = schema.overload_name or "default"
    return getattr(packet, ov), schema


def _caller(kind, node):
    try:
        schema_str = node.schema()
    except Exception:  # noqa: BLE001
        schema_str = None
    if schema_str in (None, "(no schema)"):
        schema_str = None
    try:
        fn, schema = _op(kind, schema_str)
    except (AttributeError, RuntimeError):
        raise UnsupportedOperation(f"TorchScript operator {kind} is not supported by the gradient executor") from None
    if schema is None:
        return lambda *a: fn(*a)
    kw = [a.name for a in schema.arguments if a.kwarg_only]
    npos = len(schema.arguments) - len(kw)

    def call(*args):
        return fn(*args[:npos], **dict(zip(kw, args[npos:])))
    return call


def convert_script(module):
    """ScriptModule -> (GraphModule, bias layers, had_softmax, aliases)."""
    m = torch.jit.freeze(module.eval()) if not getattr(module, "_xaudit_frozen", False) else module
    g = m.graph
    ins = list(g.inputs())
    if len(ins) != 2:
        raise UnsupportedOperation(f"TorchScript forward takes {len(ins) - 1} inputs; one image tensor expected")
    in_name = ins[1].debugName()
    consts, nodes, biases, aliases = {}, [], [], {}
    bad = []
    for node in g.nodes():
        kind = node.kind()
        outs = [o.debugName() for o in node.outputs()]
        inps = [i.debugName() for i in node.inputs()]
        if kind == "prim::Constant":
            consts[outs[0]] = node.output().toIValue() if node.output().type().kind() != "NoneType" else None
            continue
        if kind in ("prim::If", "prim::Loop", "prim::CallMethod", "prim::CallFunction", "prim::GetAttr",
                    "prim::PythonOp"):
            bad.append(kind)
            continue
        if kind == "prim::ListConstruct":
            fn = lambda *xs: list(xs)  # noqa: E731
        elif kind == "prim::TupleConstruct":
            fn = lambda *xs: tuple(xs)  # noqa: E731
        elif kind in ("prim::TupleUnpack", "prim::ListUnpack"):
            fn = lambda x: tuple(x)  # noqa: E731
        elif kind in _PASS:
            fn = lambda x, *r: x  # noqa: E731
        elif kind == "prim::NumToTensor":
            fn = lambda x: torch.tensor(x)  # noqa: E731
        elif kind.startswith(("aten::", "prim::")):
            try:
                fn = _caller(kind, node)
            except UnsupportedOperation:
                bad.append(kind)
                continue
        else:
            bad.append(kind)
            continue
        name = outs[0]

        def is_const_tensor(i):
            return i < len(inps) and torch.is_tensor(consts.get(inps[i]))
        base = kind.split("::")[1]
        if base in ("conv1d", "conv2d", "conv3d", "_convolution", "linear") and is_const_tensor(2):
            biases.append(bias_layer(name, "linear" if base == "linear" else "conv", consts[inps[2]],
                                     channel_axis=-1 if base == "linear" else 1))
        elif base == "addmm" and is_const_tensor(0):
            biases.append(bias_layer(name, "linear", consts[inps[0]], channel_axis=-1))
        elif base == "batch_norm" and all(is_const_tensor(i) for i in (1, 2, 3, 4)):
            w, b, mu, var = (consts[inps[i]] for i in (1, 2, 3, 4))
            eps = float(consts[inps[7]])
            biases.append(bias_layer(name, "batchnorm", b - mu * w / torch.sqrt(var + eps)))
        elif base in ("add", "sub") and (is_const_tensor(0) != is_const_tensor(1)) and len(inps) >= 2:
            ci = 0 if is_const_tensor(0) else 1
            other = inps[1 - ci]
            if other not in consts:  # runtime tensor + constant tensor
                b = consts[inps[ci]].float()
                alpha = consts.get(inps[2], 1) if len(inps) > 2 else 1
                if ci == 1:
                    b = b * alpha * (-1 if base == "sub" else 1)
                biases.append(bias_layer(name, base, b, channel_axis=1))
        path = _scope_path(node)
        nodes.append(Node(name, kind, inps, outs, fn, {"scope": path}))
        if path:
            parts = path.split(".")
            for k in range(1, len(parts) + 1):
                aliases[".".join(parts[:k])] = name
    if bad:
        raise UnsupportedOperation(f"TorchScript graph uses constructs the gradient executor does not run: "
                                   f"{', '.join(sorted(set(bad)))}")
    outs = list(g.outputs())
    out_name = outs[0].debugName()
    had_softmax = False
    prod = {o: n for n in nodes for o in n.outputs}
    p = prod.get(out_name)
    if p is not None and p.op in ("aten::softmax",):
        out_name, had_softmax = p.inputs[0], True
    gm = GraphModule(nodes, consts, in_name, out_name).prune()
    live = {n.outputs[0] for n in gm.nodes}
    for b in biases:
        if b.kind in ("add", "sub") and b.bias.ndim == 1 and b.bias.numel() > 1:
            b.channel_axis = -1
    return gm, [b for b in biases if b.name in live], had_softmax, aliases


class ScriptDifferentiable(GraphDifferentiable):
    """Layer names are aten output names; module paths (``layer4``, ``layer4.1.conv2``)
    are accepted as aliases for the last node executed inside that module."""

    def __init__(self, *a, aliases=None, **kw):
        super().__init__(*a, **kw)
        self.aliases = aliases or {}

    def _resolve(self, names):
        return [self.aliases.get(n, n) for n in names]

    def capture(self, names=None):
        from contextlib import contextmanager

        @contextmanager
        def cm():
            if names is None:
                with GraphDifferentiable.capture(self, None) as rec:
                    yield rec
                return
            resolved = self._resolve(names)
            with GraphDifferentiable.capture(self, resolved) as rec:
                view = _AliasView(rec, dict(zip(names, resolved)))
                yield view
        return cm()

    def module_name(self, output_name):
        best = None
        for k, v in self.aliases.items():
            if v == output_name and (best is None or len(k) < len(best)):
                best = k
        return best or output_name


class _AliasView(dict):
    """dict over recorded values keyed by the requested names."""

    def __init__(self, rec, mapping):
        super().__init__()
        self._rec, self._map = rec, mapping

    def _sync(self):
        dict.clear(self)
        order = list(self._rec)
        for k, v in sorted(self._map.items(), key=lambda kv: order.index(kv[1]) if kv[1] in order else 1e9):
            if v in self._rec:
                dict.__setitem__(self, k, self._rec[v])

    def __getitem__(self, k):
        self._sync()
        return dict.__getitem__(self, k)

    def __iter__(self):
        self._sync()
        return dict.__iter__(self)

    def __contains__(self, k):
        self._sync()
        return dict.__contains__(self, k)

    def __len__(self):
        self._sync()
        return dict.__len__(self)

    def items(self):
        self._sync()
        return dict.items(self)

    def keys(self):
        self._sync()
        return dict.keys(self)

    def values(self):
        self._sync()
        return dict.values(self)


def for_script_module(module, preprocessing, input_size=(64, 64)):
    try:
        gm, biases, had_softmax, aliases = convert_script(module)
    except UnsupportedOperation:
        raise
    except Exception as e:  # noqa: BLE001
        raise UnsupportedOperation(f"TorchScript module could not be converted for gradients: {type(e).__name__}: {e}") from None
    # parity against the ScriptModule itself
    g = torch.Generator().manual_seed(0)
    probe = preprocessing.apply(torch.rand((2, *input_size, 3), generator=g))
    with torch.no_grad():
        ref = module(probe)
        ref = ref.reshape(ref.shape[0], -1).double()
        out = gm(probe).reshape(probe.shape[0], -1).double()
    if had_softmax:
        diff = float((torch.softmax(out, 1) - ref).abs().max())
    else:
        diff = float((torch.softmax(out, 1) - torch.softmax(ref, 1)).abs().max())
    if not diff <= PARITY_TOL:
        raise UnsupportedOperation(f"TorchScript executor parity failed: max |dp| = {diff:.2e}")
    score_kind = "logit"
    note = f"frozen TorchScript aten executor, {len(gm.nodes)} nodes, {len(biases)} bias layers, parity max|dp|={diff:.1e}"
    if not had_softmax:
        from ..model import looks_like_probabilities
        if looks_like_probabilities(ref.numpy()):
            score_kind = "log_prob"
            gm.post = lambda y: torch.log(y.clamp_min(1e-12))
            note += "; outputs probabilities without a cuttable softmax: score = log p"
    d = ScriptDifferentiable(gm, preprocessing, biases, origin="torchscript", notes=note, score_kind=score_kind,
                             aliases=aliases)
    d.parity = diff
    return d
