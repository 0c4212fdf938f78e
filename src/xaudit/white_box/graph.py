"""A tiny dataflow-graph executor shared by the ONNX, TorchScript and TF converters.

Each converter turns its graph into a list of :class:`Node` (torch callables over named
values) plus constants; :class:`GraphModule` runs them in order and can record named
intermediate values (for FullGrad bias layers and Grad-CAM layers). Bias layers are
declared by the converter, which knows exactly which operand is a bias.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from . import BiasLayer, Differentiable


@dataclass
class Node:
    name: str
    op: str
    inputs: list
    outputs: list
    fn: Callable
    meta: dict = field(default_factory=dict)


class GraphModule(nn.Module):
    """Runs ``nodes`` over an environment seeded with ``consts`` and the input tensor;
    returns the value named ``output``."""

    def __init__(self, nodes, consts, input_name, output_name, post=None):
        super().__init__()
        self.nodes = list(nodes)
        self.consts = dict(consts)
        self.input_name = input_name
        self.output_name = output_name
        self.post = post
        self._tls = threading.local()  # per-thread recorder (capture)

    @property
    def _rec(self):
        return getattr(self._tls, "rec", None)

    @property
    def _rec_names(self):
        return getattr(self._tls, "names", frozenset())

    def set_recorder(self, rec, names):
        self._tls.rec, self._tls.names = rec, names

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("_tls", None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._tls = threading.local()

    def forward(self, x):
        env = dict(self.consts)
        env[self.input_name] = x
        rec, names = self._rec, self._rec_names
        for node in self.nodes:
            vals = [env[i] if i else None for i in node.inputs]
            out = node.fn(*vals)
            if len(node.outputs) == 1:
                env[node.outputs[0]] = out
            else:
                for n, v in zip(node.outputs, out):
                    if n:
                        env[n] = v
            if rec is not None and node.outputs and node.outputs[0] in names:
                rec.pop(node.outputs[0], None)
                rec[node.outputs[0]] = env[node.outputs[0]]
        y = env[self.output_name]
        return self.post(y) if self.post is not None else y

    def prune(self):
        """Drop nodes not needed for ``output_name``."""
        need = {self.output_name}
        keep = []
        for node in reversed(self.nodes):
            if any(o in need for o in node.outputs):
                keep.append(node)
                need.update(i for i in node.inputs if i)
        self.nodes = keep[::-1]
        return self


class GraphDifferentiable(Differentiable):
    def __init__(self, gm: GraphModule, preprocessing, bias_layers, origin, notes="", layout_axis=1,
                 score_kind="logit"):
        super().__init__(gm, preprocessing, bias_layers, origin=origin, notes=notes)
        self.gm = gm
        self.layout_axis = layout_axis
        self.score_kind = score_kind

    def layer_names(self):
        return [n.outputs[0] for n in self.gm.nodes if n.outputs and n.op not in ("Constant",)]

    def channel_axis(self, name):
        for b in self.bias_layers:  # a bias layer knows its channel axis
            if b.name == name:
                return b.channel_axis % 4
        return self.layout_axis

    @contextmanager
    def capture(self, names=None):
        from ..errors import UnsupportedOperation
        names = [b.name for b in self.bias_layers] if names is None else list(names)
        known = set(self.layer_names())
        for n in names:
            if n not in known:
                raise UnsupportedOperation(f"no layer named {n!r} in the graph (e.g. {', '.join(list(known)[:10])})")
        rec: dict = {}
        prev = (self.gm._rec, self.gm._rec_names)
        self.gm.set_recorder(rec, frozenset(names))
        try:
            yield rec
        finally:
            self.gm.set_recorder(*prev)

    def hook_count(self):
        return 0 if self.gm._rec is None else 1


def bias_layer(name, kind, b, channel_axis=1):
    return BiasLayer(name, kind, torch.as_tensor(b).detach(), channel_axis=channel_axis)
