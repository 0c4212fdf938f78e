"""TensorFlow frozen graph (``.pb`` GraphDef) adapter -- extra ``[tf]``.

Input ``Placeholder:0`` and output ``loss:0`` are auto-detected (else the first
Placeholder and the last Softmax); layout NHWC, size from the placeholder shape.
A graph with Custom Vision's names (``Placeholder`` -> ``loss``) gets Custom Vision's
conventions (BGR, 0-255) unless a sidecar ``<stem>.json`` or overrides say otherwise;
other graphs default to RGB, 0-1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xaudit.errors import ModelLoadError
from xaudit.model import Model

from . import labels_beside, parse_input_size, preprocessing_with, read_labels, read_sidecar, sha256_of


def _tf():
    try:
        import tensorflow as tf
    except ImportError:
        raise ModelLoadError("TensorFlow is not installed: pip install 'xaudit[tf]' to read frozen graphs (.pb)") from None
    return tf


class TFFrozenModel(Model):
    format = "tf_frozen"

    def __init__(self, path, *, graph_def, input_name, output_name, labels, input_size, preprocessing,
                 output_kind, inputs, outputs, extra_info=None):
        tf = _tf()
        self.path = path
        self.graph_def = graph_def
        self.input_name = input_name
        self.output_name = output_name
        self._graph = tf.Graph()
        with self._graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        cfg = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=1)
        self._sess = tf.compat.v1.Session(graph=self._graph, config=cfg)
        self._setup(source=str(path), labels=labels, input_size=input_size, preprocessing=preprocessing,
                    output_kind=output_kind, inputs=inputs, outputs=outputs, extra_info=extra_info)
        self._diff = None

    def _forward_native(self, native):
        out = self._sess.run(self.output_name, {self.input_name: native})
        return np.asarray(out, dtype=np.float32).reshape(len(native), -1)

    def _check_gradients(self):
        from xaudit.white_box import for_tf_graph
        self._diff = for_tf_graph(self.graph_def, self.preprocessing, self.input_size,
                                  input_name=self.input_name.split(":")[0], output_name=self.output_name.split(":")[0])
        return True, f"TF GraphDef converted to torch: {self._diff.notes}"

    def _differentiable(self):
        return self._diff


def load(source, defaults: dict | None = None, **ov) -> TFFrozenModel:
    p = Path(source)
    if not p.is_file():
        raise ModelLoadError(f"model file not found: {p}")
    tf = _tf()
    gd = tf.compat.v1.GraphDef()
    try:
        gd.ParseFromString(p.read_bytes())
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"cannot parse {p} as a TensorFlow GraphDef (corrupt?): {e}") from None
    nodes = {n.name: n for n in gd.node}
    if not nodes:
        raise ModelLoadError(f"{p} holds an empty TensorFlow graph")
    placeholders = [n for n in gd.node if n.op == "Placeholder"]
    if not placeholders:
        raise ModelLoadError(f"{p}: no Placeholder input in the graph")
    inp = nodes.get("Placeholder") or placeholders[0]
    out = nodes.get("loss") or next((n for n in reversed(gd.node) if n.op == "Softmax"), None) or gd.node[-1]
    shape = [d.size for d in inp.attr["shape"].shape.dim] if "shape" in inp.attr else []
    sidecar = read_sidecar(p)
    declared = {}
    if inp.name == "Placeholder" and out.name == "loss":
        declared.update(color="bgr", value_range="0-255")
    declared.update(defaults or {})
    declared.update(sidecar)
    declared["layout"] = "NHWC"
    size = parse_input_size(ov.get("input_size")) or parse_input_size(declared.get("input_size")) or (
        (shape[1], shape[2]) if len(shape) == 4 and shape[1] > 0 and shape[2] > 0 else None)
    if size is None:
        raise ModelLoadError(f"{p}: the input size is dynamic ({shape}); pass --input-size H,W")
    labels = read_labels(ov["labels"]) if ov.get("labels") is not None else (
        read_labels(declared["labels"]) if declared.get("labels") is not None else labels_beside(p))
    output_kind = ov.get("output_kind") or declared.get("output_kind") or (
        "probabilities" if out.op == "Softmax" else "auto")
    pre = preprocessing_with(declared, ov)
    m = TFFrozenModel(p, graph_def=gd, input_name=f"{inp.name}:0", output_name=f"{out.name}:0", labels=labels,
                      input_size=size, preprocessing=pre, output_kind=output_kind,
                      inputs=[{"name": f"{inp.name}:0", "shape": shape, "type": "float32"}],
                      outputs=[{"name": f"{out.name}:0", "op": out.op}],
                      extra_info={"tensorflow": tf.__version__})
    m.sha256 = sha256_of(p)
    return m
