"""Differentiable views of models (torch modules, TorchScript, ONNX graphs, TF frozen graphs).

Contract between adapters and gradient explainers:

* :class:`Differentiable` -- ``.module`` (torch.nn.Module: native input tensor -> pre-softmax
  logits ``(N, C)``), ``.preprocessing`` (xaudit.model.Preprocessing, applied
  differentiably by ``.native(x)``), ``.logits(x_canonical)`` with x a torch tensor
  ``(N,H,W,3)`` RGB [0,1]; ``.bias_layers`` (what FullGrad needs), ``.capture(names)``
  (records intermediate outputs during a forward pass; hooks are always removed),
  ``.spatial_layers(x)`` (candidate Grad-CAM layers, execution order).
* :func:`for_torch_module` ``(module, preprocessing) -> Differentiable`` (eager modules;
  TorchScript modules are frozen and run by a small aten interpreter, see
  :mod:`xaudit.white_box.torchscript`, because ScriptModules refuse forward hooks).
* :func:`for_onnx` ``(model_or_path, preprocessing, input_size, ...) -> Differentiable``
  (native ONNX -> torch executor, :mod:`xaudit.white_box.onnx_torch`; raises
  UnsupportedOperation with the reason when conversion or parity fails).
* :func:`for_tf_graph` ``(graph_def_or_path, preprocessing, input_size, ...)`` likewise
  (:mod:`xaudit.white_box.tf`).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import UnsupportedOperation

PARITY_TOL = 1e-4


@dataclass
class BiasLayer:
    """A layer whose output carries an explicit or implicit bias.

    ``bias`` is a tensor broadcastable against the layer output (e.g. ``(1,C,1,1)``
    for a conv output in NCHW, ``(1,C)`` for a Linear output); ``channel_axis`` is the
    channel axis of a 4-D output (1 for NCHW, 3 for NHWC). ``kind`` names the source
    (conv, linear, batchnorm, add, ...)."""

    name: str
    kind: str
    bias: "object"
    channel_axis: int = 1

    def bias_for(self, out):
        b = self.bias.to(dtype=out.dtype, device=out.device)
        if b.ndim == 1 and out.ndim > 1 and b.numel() == out.shape[self.channel_axis]:
            shape = [1] * out.ndim
            shape[self.channel_axis] = b.numel()
            b = b.reshape(shape)
        return b


class Differentiable:
    """Base class; see the module docstring. Subclasses implement ``_hook`` machinery
    via :meth:`capture`."""

    score_kind = "logit"  # "logit" (pre-softmax) or "log_prob" when no softmax input was found

    def __init__(self, module, preprocessing, bias_layers=(), origin: str = "torch", notes: str = ""):
        self.module = module
        self.preprocessing = preprocessing
        self.bias_layers = list(bias_layers)
        self.origin = origin
        self.notes = notes

    # ---------------------------------------------------------------- forward
    def native(self, x):
        """Canonical (N,H,W,3) RGB [0,1] torch tensor -> native tensor (differentiable)."""
        return self.preprocessing.apply(x)

    def forward_native(self, native):
        out = self.module(native)
        return out.reshape(out.shape[0], -1)

    def logits(self, x):
        return self.forward_native(self.native(x))

    # ---------------------------------------------------------------- introspection
    @contextmanager
    def capture(self, names=None):
        """Record the outputs of the named layers (default: bias layers) during forward
        passes inside the block: yields a dict name -> last output tensor."""
        raise NotImplementedError

    def layer_names(self) -> list[str]:
        raise NotImplementedError

    def spatial_layers(self, native) -> list[str]:
        """Names of layers with a 4-D output of more than one spatial position (a 4-D
        global-pool output such as ONNX GlobalAveragePool's (N,C,1,1) is not spatial), in
        execution (completion) order."""
        import torch
        names = self.layer_names()
        with torch.no_grad(), self.capture(names) as rec:
            self.module(native)

        def spatial(n):
            t = rec[n]
            if getattr(t, "ndim", 0) != 4:
                return False
            ca = self.channel_axis(n) % 4
            hw = [int(t.shape[i]) for i in (1, 2, 3) if i != ca]
            return hw[0] * hw[1] > 1
        return [n for n in rec if spatial(n)]

    def channel_axis(self, name: str) -> int:
        return 1

    def hook_count(self) -> int:
        return 0

    def __repr__(self):
        return f"<Differentiable origin={self.origin} bias_layers={len(self.bias_layers)} score={self.score_kind}>"


# --------------------------------------------------------------------------- torch eager
_BN_TYPES = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


class TorchDifferentiable(Differentiable):
    """Eager ``nn.Module``: bias layers found by module type, outputs captured by
    forward hooks (removed on exit, also on error)."""

    def __init__(self, module, preprocessing, score_module=None, score_kind="logit", notes=""):
        import torch.nn as nn
        self._root = module
        super().__init__(score_module or module, preprocessing, origin="torch", notes=notes)
        self.score_kind = score_kind
        self._modules = dict(module.named_modules())
        for name, m in module.named_modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and m.bias is not None:
                kind = "linear" if isinstance(m, nn.Linear) else "conv"
                self.bias_layers.append(BiasLayer(name, kind, m.bias.detach(),
                                                  channel_axis=1 if kind == "conv" else -1))
            elif type(m).__name__ in _BN_TYPES and isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.running_mean is None:
                    continue
                gamma = m.weight.detach() if m.weight is not None else 1.0
                beta = m.bias.detach() if m.bias is not None else 0.0
                b = beta - m.running_mean * gamma / (m.running_var + m.eps).sqrt()
                self.bias_layers.append(BiasLayer(name, "batchnorm", b.detach(), channel_axis=1))

    def layer_names(self):
        return [n for n in self._modules if n]

    @contextmanager
    def capture(self, names=None):
        names = [b.name for b in self.bias_layers] if names is None else list(names)
        rec: dict = {}
        handles = []
        try:
            for n in names:
                if n not in self._modules:
                    raise UnsupportedOperation(f"no layer named {n!r} (layers: {', '.join(self.layer_names()[:20])} ...)")
                handles.append(self._modules[n].register_forward_hook(_recorder(rec, n, threading.get_ident())))
            yield rec
        finally:
            for h in handles:
                h.remove()

    def hook_count(self):
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in self._root.modules())


def _recorder(rec, name, owner):
    def hook(mod, inp, out):
        if threading.get_ident() != owner:  # another thread's forward pass
            return
        rec.pop(name, None)  # re-insert so the dict keeps completion order
        rec[name] = out
    return hook


def _logit_module(module, probe):
    """-> (score_module, score_kind, note). Detect a trailing softmax (module or functional)
    and return a module producing its input."""
    import torch
    import torch.nn as nn

    class _SoftmaxInput(nn.Module):
        def __init__(self, inner, sm):
            super().__init__()
            self.inner = inner
            self._sm = [sm]  # not a submodule (avoid double registration)

        def forward(self, x):
            box = {}
            h = self._sm[0].register_forward_hook(lambda m, i, o: box.__setitem__("v", (i[0], o)))
            try:
                out = self.inner(x)
            finally:
                h.remove()
            if "v" in box and box["v"][1] is out:
                return box["v"][0]
            return out

    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], (nn.Softmax,)):
        return nn.Sequential(*list(module)[:-1]), "logit", "trailing nn.Softmax stripped"
    with torch.no_grad():
        out = module(probe)
    sms = [m for m in module.modules() if isinstance(m, nn.Softmax)]
    for sm in sms:
        box = {}
        h = sm.register_forward_hook(lambda m, i, o: box.__setitem__("o", o))
        try:
            with torch.no_grad():
                out = module(probe)
        finally:
            h.remove()
        if box.get("o") is out:
            return _SoftmaxInput(module, sm), "logit", "trailing nn.Softmax: its input is used"
    # functional softmax at the end (torch.softmax / F.softmax / Tensor.softmax): intercept it
    # with a TorchFunctionMode, so the module itself still runs (and its hooks fire)
    wrapped = _FunctionalSoftmaxInput(module)
    with torch.no_grad():
        wrapped(probe)
    if wrapped.found:
        return wrapped, "logit", "trailing functional softmax: its input is used"
    from ..model import looks_like_probabilities
    rows = out.reshape(out.shape[0], -1).detach().cpu().numpy()
    if looks_like_probabilities(rows):
        class _LogProb(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return torch.log(self.inner(x).clamp_min(1e-12))
        return _LogProb(module), "log_prob", "outputs probabilities and the softmax input is not reachable: score = log p"
    return module, "logit", "module outputs logits"


def _softmax_mode():
    import torch
    from torch.overrides import TorchFunctionMode

    class _Mode(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.last = None

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            name = getattr(func, "__name__", "")
            if name == "softmax" and args and torch.is_tensor(args[0]):
                self.last = (args[0], out)
            return out
    return _Mode()


def _make_functional_softmax_input():
    import torch.nn as nn

    class _FunctionalSoftmaxInput(nn.Module):
        """Runs ``inner``; when its output is the result of a (functional) softmax, returns
        that softmax's input instead."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.found = False

        def forward(self, x):
            mode = _softmax_mode()
            with mode:
                out = self.inner(x)
            if mode.last is not None and mode.last[1] is out:
                self.found = True
                return mode.last[0]
            return out
    return _FunctionalSoftmaxInput


def _FunctionalSoftmaxInput(inner):
    return _make_functional_softmax_input()(inner)


def for_torch_module(module, preprocessing, input_size=(64, 64)) -> Differentiable:
    """Differentiable view of a torch module (eager or TorchScript)."""
    import torch
    if isinstance(module, torch.jit.ScriptModule):
        from .torchscript import for_script_module
        return for_script_module(module, preprocessing, input_size)
    from .fx import for_fx_module, is_aten_graph
    if is_aten_graph(module):  # torch.export program: modules are empty holders, hooks see nothing
        return for_fx_module(module, preprocessing, input_size)
    module.eval()
    g = torch.Generator().manual_seed(0)
    probe = preprocessing.apply(torch.rand((2, *input_size, 3), generator=g))
    score_module, kind, note = _logit_module(module, probe)
    d = TorchDifferentiable(module, preprocessing, score_module=score_module, score_kind=kind, notes=note)
    return d


def for_onnx(model, preprocessing, input_size, output_name=None, probe_batch=2, **kw) -> Differentiable:
    from .onnx_torch import for_onnx as _f
    return _f(model, preprocessing, input_size, output_name=output_name, probe_batch=probe_batch, **kw)


def check_onnx(model, preprocessing=None, input_size=None, **kw):
    from .onnx_torch import check_onnx as _c
    return _c(model, preprocessing, input_size, **kw)


def for_tf_graph(graph_def, preprocessing, input_size, **kw) -> Differentiable:
    from .tf import for_tf_graph as _f
    return _f(graph_def, preprocessing, input_size, **kw)


# --------------------------------------------------------------------------- helpers for explainers
def count_calls(model, n: int):
    """Count gradient passes in ``model.counter`` (a forward or a backward pass over one
    image counts as one model call)."""
    if n > 0:
        model.counter.add(int(n))


def canonical_tensor(x):
    """Canonical (H,W,3) or (N,H,W,3) numpy image -> fresh float32 torch tensor (N,H,W,3)."""
    import numpy as np
    import torch
    arr = np.array(x, dtype=np.float32, copy=True)
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(arr)


def spatial_view(t, channel_axis):
    """4-D tensor -> NCHW view given its channel axis (1 NCHW, 3 / -1 NHWC)."""
    ca = channel_axis % 4
    if ca == 1:
        return t
    if ca == 3:
        return t.permute(0, 3, 1, 2)
    raise UnsupportedOperation(f"cannot interpret channel axis {channel_axis} of a 4-D layer output")
