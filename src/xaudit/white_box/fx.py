"""``torch.export`` programs (``ep.module()``: an fx GraphModule of aten calls) as
differentiable graphs.

Such modules keep the module *names* but not the modules (``stem.0`` is an empty holder;
the convolution is an ``aten.conv2d`` call on a ``get_attr`` weight), so forward hooks see
nothing. The fx graph is run node by node instead, with every bias operand known:
conv/linear/addmm biases, batch-norm implicit biases, add-a-constant. Module paths come
from ``nn_module_stack`` metadata and serve as Grad-CAM layer aliases.
"""
from __future__ import annotations

import operator

import torch

from ..errors import UnsupportedOperation
from . import PARITY_TOL
from .graph import GraphModule, Node, bias_layer
from .torchscript import ScriptDifferentiable


def is_aten_graph(module) -> bool:
    import torch.fx as fx
    if not isinstance(module, fx.GraphModule):
        return False
    return any(n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) for n in module.graph.nodes)


def _attr(root, path):
    obj = root
    for p in path.split("."):
        obj = getattr(obj, p)
    return obj


def _name(op):
    s = str(op)  # e.g. aten.conv2d.default
    parts = s.split(".")
    return parts[1] if len(parts) >= 2 else s


def convert_fx(gm):
    import torch.fx as fx
    consts, nodes, biases, aliases = {}, [], [], {}
    inputs, out_name = [], None
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            inputs.append(n.name)
            continue
        if n.op == "get_attr":
            v = _attr(gm, n.target)
            consts[n.name] = v.detach() if torch.is_tensor(v) else v
            continue
        if n.op == "output":
            a = n.args[0]
            while isinstance(a, (tuple, list)):
                a = a[0]
            out_name = a.name if isinstance(a, fx.Node) else None
            continue
        deps = [d.name for d in n.all_input_nodes]
        if n.op == "call_function":
            target = n.target
        elif n.op == "call_module":
            target = _attr(gm, n.target)
        elif n.op == "call_method":
            meth = n.target

            def target(self_, *a, _m=meth, **k):
                return getattr(self_, _m)(*a, **k)
        else:
            raise UnsupportedOperation(f"fx node kind {n.op} is not supported")

        def fn(*vals, _n=n, _deps=deps, _t=target):
            env = dict(zip(_deps, vals))
            args = fx.node.map_arg(_n.args, lambda x: env[x.name])
            kwargs = fx.node.map_arg(_n.kwargs, lambda x: env[x.name])
            return _t(*args, **kwargs)
        base = _name(n.target) if n.op == "call_function" else ""

        def arg(i):
            a = n.args[i] if i < len(n.args) else None
            return consts.get(a.name) if isinstance(a, fx.Node) else None
        if base in ("conv1d", "conv2d", "conv3d", "convolution", "linear") and torch.is_tensor(arg(2)):
            biases.append(bias_layer(n.name, "linear" if base == "linear" else "conv", arg(2),
                                     channel_axis=-1 if base == "linear" else 1))
        elif base == "addmm" and torch.is_tensor(arg(0)):
            biases.append(bias_layer(n.name, "linear", arg(0), channel_axis=-1))
        elif base in ("batch_norm", "_native_batch_norm_legit_no_training") and \
                all(torch.is_tensor(arg(i)) for i in (1, 2, 3, 4)):
            w, b, mu, var = arg(1), arg(2), arg(3), arg(4)
            eps = float(n.args[7] if base == "batch_norm" else n.args[6])
            bl = bias_layer(n.name, "batchnorm", b - mu * w / torch.sqrt(var + eps))
            if base == "batch_norm":
                biases.append(bl)
            else:  # tuple output: the bias layer is the getitem(…, 0) user
                for u in n.users:
                    if u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0:
                        bl.name = u.name
                        biases.append(bl)
        elif base in ("add", "sub") and len(n.args) >= 2:
            c = [torch.is_tensor(arg(i)) for i in (0, 1)]
            rt = [isinstance(n.args[i], fx.Node) and n.args[i].name not in consts for i in (0, 1)]
            if c[0] != c[1] and (rt[0] or rt[1]):
                ci = 0 if c[0] else 1
                b = arg(ci).float()
                if ci == 1 and base == "sub":
                    b = -b
                biases.append(bias_layer(n.name, base, b, channel_axis=1))
        stack = n.meta.get("nn_module_stack") or {}
        if stack:
            path = list(stack.values())[-1][0]
            path = path.replace("L['self'].", "").replace("L__self___", "")
            if path:
                parts = path.split(".")
                for k in range(1, len(parts) + 1):
                    aliases[".".join(parts[:k])] = n.name
        nodes.append(Node(n.name, n.op, deps, [n.name], fn))
    if len(inputs) != 1:
        raise UnsupportedOperation(f"the exported program takes {len(inputs)} inputs; one image tensor expected")
    had_softmax = False
    src = next((x for x in gm.graph.nodes if x.name == out_name), None)
    if src is not None and src.op == "call_function" and _name(src.target) in ("softmax", "_softmax"):
        out_name, had_softmax = src.args[0].name, True
    g = GraphModule(nodes, consts, inputs[0], out_name).prune()
    live = {nd.outputs[0] for nd in g.nodes}
    return g, [b for b in biases if b.name in live], had_softmax, aliases


def for_fx_module(gm, preprocessing, input_size=(64, 64)):
    try:
        g, biases, had_softmax, aliases = convert_fx(gm)
    except UnsupportedOperation:
        raise
    except Exception as e:  # noqa: BLE001
        raise UnsupportedOperation(f"exported program could not be converted for gradients: {type(e).__name__}: {e}") from None
    gen = torch.Generator().manual_seed(0)
    probe = preprocessing.apply(torch.rand((2, *input_size, 3), generator=gen))
    fixed = None
    with torch.no_grad():
        try:
            ref = gm(probe)
        except Exception:  # noqa: BLE001 - exported with a static batch size of 1
            probe, fixed = probe[:1], 1
            ref = gm(probe)
        while isinstance(ref, (tuple, list)):
            ref = ref[0]
        ref = ref.reshape(ref.shape[0], -1).double()
        out = g(probe).reshape(probe.shape[0], -1).double()
    p_exec = torch.softmax(out, 1)
    from ..model import looks_like_probabilities
    p_ref = ref if had_softmax else torch.softmax(ref, 1)
    diff = float((p_exec - p_ref).abs().max())
    if not diff <= PARITY_TOL:
        raise UnsupportedOperation(f"exported-program executor parity failed: max |dp| = {diff:.2e}")
    score_kind = "logit"
    note = f"torch.export aten graph executor, {len(g.nodes)} nodes, {len(biases)} bias layers, parity max|dp|={diff:.1e}"
    if not had_softmax and looks_like_probabilities(ref.numpy()):
        score_kind = "log_prob"
        g.post = lambda y: torch.log(y.clamp_min(1e-12))
        note += "; outputs probabilities without a cuttable softmax: score = log p"
    d = ScriptDifferentiable(g, preprocessing, biases, origin="torch_export", notes=note, score_kind=score_kind,
                             aliases=aliases)
    d.parity = diff
    d.fixed_batch = fixed
    return d
