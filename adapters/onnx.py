"""ONNX adapter (onnxruntime).

* Layout and input size are read from the graph input (the dimension equal to 3 at
  position 1 -> NCHW, at position 3 -> NHWC); a fixed batch dimension (e.g. 1) is honoured.
* Outputs: the first float tensor output is used; a ``ZipMap`` output (sequence of
  ``{label: prob}`` maps) is reordered into label order by key (key order is not label
  order); string outputs such as ``classLabel`` are ignored.
* Output kind: ``probabilities`` when the chosen output is produced by Softmax or ZipMap,
  else decided once on a probe batch (``Model.resolve_output_kind``), unless declared.
* Labels: override > ``labels.txt`` / ``<stem>.labels.txt`` beside the model > metadata
  property ``labels`` > ZipMap class labels > indices.
* Preprocessing: overrides > metadata props (``color``, ``range``, ``mean``, ``std``,
  ``layout``, ``resize``; Custom Vision's ``Image.BitmapPixelFormat`` / ``Image.NominalPixelRange``)
  > defaults RGB, 0-1, no mean/std.
* Gradients: the graph is converted by :mod:`xaudit.white_box.onnx_torch` and checked
  against onnxruntime on a probe batch; on failure the model is gradient-unreachable with
  the reason.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xaudit.errors import ModelLoadError, XauditError
from xaudit.model import Model

from . import (labels_beside, normalise_color, normalise_range, parse_input_size, parse_labels_prop,
               preprocessing_with, read_labels, sha256_of)

_FLOAT_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)")


class OnnxModel(Model):
    format = "onnx"

    def __init__(self, path, *, session, proto, input_name, output_name, zipmap, labels, input_size,
                 preprocessing, output_kind, fixed_batch, inputs, outputs, input_dtype, extra_info=None):
        self.path = path
        self.session = session
        self.proto = proto
        self.input_name = input_name
        self.output_name = output_name
        self.zipmap = zipmap
        self.input_dtype = input_dtype
        self._setup(source=str(path), labels=labels, input_size=input_size, preprocessing=preprocessing,
                    output_kind=output_kind, fixed_batch=fixed_batch, inputs=inputs, outputs=outputs,
                    extra_info=extra_info)
        self._diff = None

    def _forward_native(self, native):
        feed = {self.input_name: native.astype(self.input_dtype, copy=False)}
        out = self.session.run([self.output_name], feed)[0]
        if not self.zipmap:
            return np.asarray(out, dtype=np.float32).reshape(len(native), -1)
        rows = []
        for d in out:  # list of {label: prob}
            keys = {str(k): v for k, v in d.items()}
            if self.labels is None:
                self.labels = list(keys)  # only when no label source at all
            try:
                rows.append([keys[lb] for lb in self.labels])
            except KeyError as e:
                raise XauditError(f"{self.source}: ZipMap output has no key {e.args[0]!r}; labels "
                                  f"{self.labels[:5]}... do not match the model's classes {list(keys)[:5]}...") from None
        return np.asarray(rows, dtype=np.float32)

    def _check_gradients(self):
        from xaudit.white_box import for_onnx
        self._diff = for_onnx(self.proto, self.preprocessing, self.input_size, output_name=self.output_name,
                              labels=self.labels, output_kind=self.output_kind)
        return True, f"ONNX graph converted to torch: {self._diff.notes}"

    def _differentiable(self):
        return self._diff


def _dims(value_info):
    t = value_info.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _meta_preprocessing(props: dict) -> dict:
    out = {}
    for key, v in props.items():
        k = key.lower()
        if k in ("color", "colour", "color_order", "image.bitmappixelformat"):
            c = normalise_color(v)
            if c:
                out["color"] = c
        elif k in ("range", "value_range", "image.nominalpixelrange"):
            r = normalise_range(v)
            if r:
                out["value_range"] = r
        elif k in ("mean", "std"):
            out[k] = v
        elif k == "layout" and str(v).upper() in ("NCHW", "NHWC"):
            out["layout"] = str(v).upper()
        elif k == "resize" and v in ("stretch", "center-crop", "custom-vision"):
            out["resize"] = v
    return out


def ort_threads() -> int:
    """onnxruntime intra-op threads: ``XAUDIT_ORT_THREADS`` when set (the benchmarks set it
    to torch's thread count for side-by-side timings), else the cores, at most 4."""
    env = os.environ.get("XAUDIT_ORT_THREADS", "").strip()
    if env:
        try:
            if int(env) >= 1:
                return int(env)
        except ValueError:
            pass
        raise ModelLoadError(f"XAUDIT_ORT_THREADS must be a positive integer, got {env!r}")
    return max(1, min(4, os.cpu_count() or 1))


def load(source, defaults: dict | None = None, **ov) -> OnnxModel:
    """``defaults``: preprocessing/labels declared by a wrapper (Custom Vision)."""
    import onnx
    import onnxruntime as ort
    p = Path(source)
    if not p.is_file():
        raise ModelLoadError(f"model file not found: {p}")
    try:
        proto = onnx.load(str(p))
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"cannot parse {p} as ONNX (corrupt or not an ONNX file): {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads = ort_threads()
        so.log_severity_level = 3
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"onnxruntime cannot run {p}: {msg}") from None
    inits = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in inits]
    s_inputs = sess.get_inputs()
    if len(s_inputs) != 1:
        raise ModelLoadError(f"{p}: expected one image input, found {len(s_inputs)}: {[i.name for i in s_inputs]}")
    sin = s_inputs[0]
    dims = _dims(graph_inputs[0]) if graph_inputs else list(sin.shape)
    if len(dims) != 4:
        raise ModelLoadError(f"{p}: input {sin.name!r} has shape {sin.shape}; an image classifier needs 4 dims")
    props = {x.key: x.value for x in proto.metadata_props}
    declared = dict(defaults or {})
    declared.update(_meta_preprocessing(props))
    if defaults:  # a wrapper's declaration wins over metadata
        declared.update({k: v for k, v in defaults.items() if v is not None})
    layout = ov.get("layout") or declared.get("layout")
    if layout is None:
        if dims[1] == 3 and dims[3] != 3:
            layout = "NCHW"
        elif dims[3] == 3 and dims[1] != 3:
            layout = "NHWC"
        elif dims[1] in (1, 3):
            layout = "NCHW"
        else:
            raise ModelLoadError(f"{p}: cannot tell NCHW from NHWC for input shape {sin.shape}; pass --layout")
    declared["layout"] = layout
    hw = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    input_size = parse_input_size(ov.get("input_size")) or (
        tuple(hw) if all(isinstance(v, int) and v > 0 for v in hw) else None)
    if input_size is None:
        raise ModelLoadError(f"{p}: the input {sin.name!r} has a dynamic size {sin.shape}; pass --input-size H,W")
    fixed = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None

    # ---- outputs
    producers = {o: n for n in proto.graph.node for o in n.output}
    chosen, zipmap, zip_labels = None, False, None
    outs_info = []
    for o in sess.get_outputs():
        outs_info.append({"name": o.name, "type": o.type, "shape": [d if isinstance(d, int) else str(d) for d in (o.shape or [])]})
    for o in sess.get_outputs():
        if o.type in _FLOAT_TYPES:
            chosen = o.name
            break
    if chosen is None:
        for o in sess.get_outputs():
            if o.type.startswith("seq(map("):
                chosen, zipmap = o.name, True
                break
    if chosen is None:
        raise ModelLoadError(f"{p}: no probability/logit output found among {[o.name for o in sess.get_outputs()]}")
    node = producers.get(chosen)
    if zipmap and node is not None and node.op_type == "ZipMap":
        for a in node.attribute:
            if a.name == "classlabels_strings":
                zip_labels = [s.decode() for s in a.strings]
            elif a.name == "classlabels_int64s":
                zip_labels = [str(i) for i in a.ints]
    output_kind = ov.get("output_kind") or declared.get("output_kind")
    if not output_kind:
        output_kind = "probabilities" if (zipmap or (node is not None and node.op_type == "Softmax")) else "auto"

    labels = None
    if ov.get("labels") is not None:
        labels = read_labels(ov["labels"])
    elif declared.get("labels") is not None:
        labels = read_labels(declared["labels"])
    else:
        labels = labels_beside(p) or parse_labels_prop(props.get("labels") or props.get("Labels") or "") or zip_labels
    pre = preprocessing_with(declared, ov)
    extra = {"opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
             "producer": proto.producer_name or None, "metadata_props": props or None,
             "output_used": chosen + (" (ZipMap, reordered to label order)" if zipmap else "")}
    m = OnnxModel(p, session=sess, proto=proto, input_name=sin.name, output_name=chosen, zipmap=zipmap,
                  labels=labels, input_size=input_size, preprocessing=pre, output_kind=output_kind,
                  fixed_batch=fixed, input_dtype=np.float64 if sin.type == "tensor(double)" else np.float32,
                  inputs=[{"name": sin.name, "shape": [d if isinstance(d, int) else str(d) for d in sin.shape],
                           "type": sin.type}],
                  outputs=outs_info, extra_info=extra)
    m.sha256 = sha256_of(p)
    return m
