"""Exporters for the demo nets: native ONNX (``onnx.helper``), Custom-Vision-style ONNX and
bundles, TF frozen graphs, TorchScript. All start from ``nets.export_spec(model)`` (BN folded
into conv weights/biases), so every format computes the same function.

Preprocessing baked into a graph: the channel permutation (RGB<->BGR) and the scale
(1/255, 1/std) are folded into the first conv's weights (exact: they commute with zero
and reflection padding); the mean subtraction stays an explicit op before the first conv (``Sub``, or
``ImageScaler`` in the Custom Vision variant), because folding it into the bias would be
wrong at the zero-padded border. Reflection-padded convs are exported as an explicit
``Pad(mode=reflect)`` / ``MirrorPad(REFLECT)`` followed by an unpadded conv.
"""
from __future__ import annotations

import json
import shutil
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .nets import MEAN, STD

__all__ = ["build_onnx", "build_cv_onnx", "build_tf_graphdef", "save_torchscript", "write_sidecar",
           "write_cv_bundle", "write_labels", "zip_dir", "tf_available"]


def _first_convs(ops):
    return {i for i, o in enumerate(ops) if o["op"] == "conv" and o["inp"] == "x"}


def _baked_ops(ops, color="bgr", value_range="0-255", mean=MEAN, std=STD):
    """-> (ops with the first convs taking native channels/scale, per-native-channel value to
    subtract before them)."""
    a = 1 / 255.0 if value_range == "0-255" else 1.0
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    perm = [2, 1, 0] if color == "bgr" else [0, 1, 2]  # native channel j holds RGB channel perm[j]
    out = []
    for i, o in enumerate(ops):
        if i in _first_convs(ops):
            o = dict(o)
            W = o["W"] * (a / std)[None, :, None, None]  # scale per RGB input channel
            o["W"] = W[:, perm]
        out.append(o)
    sub = (mean / a)[perm]
    return out, sub


# ----------------------------------------------------------------------------- ONNX
def _onnx_nodes(ops, x_name, helper, numpy_helper, prefix="", opset=13):
    nodes, inits = [], []
    name = {"x": x_name}
    for o in ops:
        if o["op"] == "conv":
            w, b = f"{o['name']}.weight", f"{o['name']}.bias"
            inits += [numpy_helper.from_array(o["W"].astype(np.float32), w),
                      numpy_helper.from_array(o["b"].astype(np.float32), b)]
            k = o["W"].shape[-1]
            src, pad = name[o["inp"]], o["pad"]
            if o.get("pad_mode") == "reflect" and pad:
                p4 = [0, 0, pad, pad, 0, 0, pad, pad]
                padded = f"{o['name']}_padded"
                if opset >= 11:
                    inits.append(numpy_helper.from_array(np.asarray(p4, np.int64), f"{o['name']}.pads"))
                    nodes.append(helper.make_node("Pad", [src, f"{o['name']}.pads"], [padded],
                                                  name=f"{o['name']}_pad", mode="reflect"))
                else:
                    nodes.append(helper.make_node("Pad", [src], [padded], name=f"{o['name']}_pad",
                                                  mode="reflect", pads=p4))
                src, pad = padded, 0
            nodes.append(helper.make_node("Conv", [src, w, b], [o["out"]], name=o["name"],
                                          kernel_shape=[k, k], strides=[o["stride"]] * 2, pads=[pad] * 4))
        elif o["op"] == "relu":
            nodes.append(helper.make_node("Relu", [name[o["inp"]]], [o["out"]], name=f"relu_{o['out']}"))
        elif o["op"] == "add":
            nodes.append(helper.make_node("Add", [name[o["a"]], name[o["b"]]], [o["out"]], name=f"add_{o['out']}"))
        elif o["op"] == "gap":
            nodes.append(helper.make_node("GlobalAveragePool", [name[o["inp"]]], [o["out"] + "_4d"], name="gap"))
            nodes.append(helper.make_node("Flatten", [o["out"] + "_4d"], [o["out"]], name="flatten", axis=1))
        elif o["op"] == "fc":
            w, b = f"{o['name']}.weight", f"{o['name']}.bias"
            inits += [numpy_helper.from_array(o["W"].astype(np.float32), w),
                      numpy_helper.from_array(o["b"].astype(np.float32), b)]
            nodes.append(helper.make_node("Gemm", [name[o["inp"]], w, b], [o["out"]], name=o["name"], transB=1))
        name[o["out"]] = o["out"]
    return nodes, inits


def build_onnx(ops, labels, *, input_size=(64, 64), layout="NCHW", output="probabilities", bake=None,
               opset=13, input_name="input", output_name=None, dynamic_batch=True, metadata=None):
    """-> onnx.ModelProto.

    bake=None: the input is the normalised tensor (RGB, 0-1, then (x-mean)/std declared in
    metadata_props). bake={"color": "rgb"|"bgr", "range": "0-1"|"0-255"}: the input is the raw
    image in that colour order / range, normalisation inside the graph (metadata declares no
    mean/std). layout NCHW|NHWC; output "probabilities" (Softmax) or "logits"."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    H, W = input_size
    batch = "N" if dynamic_batch else 1
    shape = [batch, 3, H, W] if layout == "NCHW" else [batch, H, W, 3]
    nodes, inits = [], []
    x = input_name
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["input_nchw"], name="to_nchw", perm=[0, 3, 1, 2]))
        x = "input_nchw"
    meta = {"labels": json.dumps(list(labels)), "layout": layout, "input_size": f"{H},{W}"}
    if bake:
        color, rng = bake.get("color", "rgb"), bake.get("range", "0-1")
        ops, sub = _baked_ops(ops, color, rng)
        inits.append(numpy_helper.from_array(sub.reshape(1, 3, 1, 1).astype(np.float32), "mean_native"))
        nodes.append(helper.make_node("Sub", [x, "mean_native"], ["input_centered"], name="mean_sub"))
        x = "input_centered"
        meta.update(color=color, range=rng)
    else:
        meta.update(color="rgb", range="0-1", mean=",".join(map(str, MEAN)), std=",".join(map(str, STD)))
    n2, i2 = _onnx_nodes(ops, x, helper, numpy_helper, opset=opset)
    nodes += n2
    inits += i2
    out = output_name or ("probabilities" if output == "probabilities" else "logits")
    if output == "probabilities":
        nodes.append(helper.make_node("Softmax", ["logits"], [out], name="softmax", axis=1))
    elif out != "logits":
        nodes.append(helper.make_node("Identity", ["logits"], [out], name="out"))
    meta["output"] = output
    if metadata:
        meta.update(metadata)
    g = helper.make_graph(nodes, "xaudit_demo", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, len(labels)])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="xaudit.data.export")
    m.ir_version = 7 if opset <= 13 else 8
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, str(v)
    onnx.checker.check_model(m)
    return m


def build_cv_onnx(ops, labels, *, input_size=(64, 64), opset=9, use_imagescaler=True, resize="center-crop"):
    """Custom-Vision-style classifier: input ``data`` float [None,3,H,W] BGR 0-255, mean
    subtraction inside the graph (``ImageScaler``, opset <= 9; or ``Sub`` when
    use_imagescaler=False), outputs ``classLabel`` (string tensor [N]) and ``loss`` (ZipMap:
    sequence of {label: prob}). ``resize`` is declared in metadata_props (the xaudit adapter
    reads it): the demo models were trained on full 64x64 frames, so Custom Vision's
    256-then-crop policy (which would zoom 4x at 64 px) is replaced by ``center-crop``;
    pass resize=None to leave the adapter's Custom Vision default."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    if use_imagescaler and opset > 9:
        raise ValueError("ImageScaler exists only up to opset 9")
    H, W = input_size
    ops, sub = _baked_ops(ops, "bgr", "0-255")
    nodes, inits = [], []
    if use_imagescaler:
        nodes.append(helper.make_node("ImageScaler", ["data"], ["data_centered"], name="ImageScaler",
                                      scale=1.0, bias=[float(-v) for v in sub]))
    else:
        inits.append(numpy_helper.from_array(sub.reshape(1, 3, 1, 1).astype(np.float32), "mean_native"))
        nodes.append(helper.make_node("Sub", ["data", "mean_native"], ["data_centered"], name="mean_sub"))
    n2, i2 = _onnx_nodes(ops, "data_centered", helper, numpy_helper, opset=opset)
    nodes += n2
    inits += i2
    labels = [str(s) for s in labels]
    nodes.append(helper.make_node("Softmax", ["logits"], ["softmaxout_1"], name="softmax", axis=1))
    nodes.append(helper.make_node("ArgMax", ["softmaxout_1"], ["label_index"], name="argmax", axis=1, keepdims=0))
    nodes.append(helper.make_node("LabelEncoder", ["label_index"], ["classLabel"], name="label_encoder",
                                  domain="ai.onnx.ml", keys_int64s=list(range(len(labels))), values_strings=labels,
                                  default_string="unknown"))
    nodes.append(helper.make_node("ZipMap", ["softmaxout_1"], ["loss"], name="zipmap", domain="ai.onnx.ml",
                                  classlabels_strings=labels))
    map_t = helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    outputs = [helper.make_tensor_value_info("classLabel", TensorProto.STRING, [None]),
               helper.make_value_info("loss", helper.make_sequence_type_proto(map_t))]
    g = helper.make_graph(nodes, "CustomVision", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 3, H, W])],
                          outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", 2)],
                          producer_name="xaudit.data.export (Custom Vision style)")
    m.ir_version = 4 if opset <= 9 else 7
    for k, v in {"Image.BitmapPixelFormat": "Bgr8", "Image.ColorSpaceGamma": "SRGB",
                 "Image.NominalPixelRange": "NominalRange_0_255", **({"resize": resize} if resize else {})}.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(m)
    return m


# ----------------------------------------------------------------------------- TensorFlow
def tf_available() -> bool:
    try:
        import tensorflow  # noqa: F401
        return True
    except Exception:  # noqa: BLE001
        return False


def build_tf_graphdef(ops, labels, *, input_size=(64, 64)):
    """Frozen TF GraphDef (Custom Vision TF convention): ``Placeholder`` float NHWC
    [-1,H,W,3] BGR 0-255, mean subtraction (Sub), Conv2D(+explicit pad)+BiasAdd, Relu, AddV2,
    Mean, MatMul+BiasAdd, Softmax named ``loss``. Requires tensorflow."""
    import tensorflow as tf
    H, W = input_size
    ops, sub = _baked_ops(ops, "bgr", "0-255")
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, H, W, 3], name="Placeholder")
        t = {"x": tf.subtract(x, tf.constant(sub.astype(np.float32).reshape(1, 1, 1, 3)), name="mean_sub")}
        for o in ops:
            if o["op"] == "conv":
                Wt = tf.constant(np.transpose(o["W"], (2, 3, 1, 0)).astype(np.float32), name=o["name"] + "/weights")
                p, src = o["pad"], t[o["inp"]]
                if o.get("pad_mode") == "reflect" and p:
                    src = tf.pad(src, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT", name=o["name"] + "/MirrorPad")
                    p = 0
                pad = "VALID" if p == 0 else [[0, 0], [p, p], [p, p], [0, 0]]
                c = tf.nn.conv2d(src, Wt, strides=[1, o["stride"], o["stride"], 1], padding=pad,
                                 name=o["name"] + "/Conv2D")
                t[o["out"]] = tf.nn.bias_add(c, tf.constant(o["b"].astype(np.float32)), name=o["name"] + "/BiasAdd")
            elif o["op"] == "relu":
                t[o["out"]] = tf.nn.relu(t[o["inp"]], name="relu_" + o["out"])
            elif o["op"] == "add":
                t[o["out"]] = tf.add(t[o["a"]], t[o["b"]], name="add_" + o["out"])
            elif o["op"] == "gap":
                t[o["out"]] = tf.reduce_mean(t[o["inp"]], axis=[1, 2], name="gap")
            elif o["op"] == "fc":
                mm = tf.matmul(t[o["inp"]], tf.constant(o["W"].T.astype(np.float32)), name="fc/MatMul")
                t[o["out"]] = tf.nn.bias_add(mm, tf.constant(o["b"].astype(np.float32)), name="fc/BiasAdd")
        tf.nn.softmax(t["logits"], name="loss")
    return g.as_graph_def()


# ----------------------------------------------------------------------------- files
def save_torchscript(model, path):
    """TorchScript of the eval-mode net (input: normalised NCHW RGB, output: logits)."""
    import torch
    model = model.eval()
    sm = torch.jit.script(model)
    sm.save(str(path))
    return Path(path)


def write_labels(path, labels):
    Path(path).write_text("\n".join(labels) + "\n", encoding="utf-8")


def write_sidecar(path, labels, *, input_size=(64, 64), color="rgb", value_range="0-1", mean=MEAN, std=STD,
                  layout="NCHW", output="logits", **extra):
    d = {"labels": list(labels), "input_size": list(input_size), "color": color, "range": value_range,
         "mean": list(mean) if mean is not None else None, "std": list(std) if std is not None else None,
         "layout": layout, "output": output}
    d.update(extra)
    Path(path).write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")


def write_cv_bundle(directory, model_bytes: bytes, labels, *, platform="ONNX", flavor="ONNX",
                    model_file="model.onnx", iteration_seed: str = "xaudit", exported_date="2026-11-23T00:00:00Z",
                    sidecar: dict | None = None):
    """Custom-Vision-style bundle folder: model file, labels.txt, cvexport.manifest,
    metadata_properties.json (+ ``model.json`` sidecar when given, e.g. {"resize":
    "center-crop"} for a TF model, which has no metadata props). Deterministic content
    (fixed date, uuid5 iteration id)."""
    d = Path(directory)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (d / model_file).write_bytes(model_bytes)
    write_labels(d / "labels.txt", labels)
    manifest = {"DomainType": "Classification", "Platform": platform, "Flavor": flavor,
                "ExporterVersion": "2.0", "ExportedDate": exported_date,
                "IterationId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"xaudit/{iteration_seed}")),
                "ModelFileName": model_file, "LabelFileName": "labels.txt", "SchemaVersion": "1.0"}
    (d / "cvexport.manifest").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    props = {"CustomVision.Metadata.AdditionalModelInfo": "xaudit synthetic demo",
             "CustomVision.Metadata.Version": "1.2", "CustomVision.Postprocess.Method": "ClassificationMultiClass",
             "CustomVision.Preprocess.CropMethod": "FullImageShorterSide",
             "CustomVision.Preprocess.CropRatio": "1.0", "CustomVision.Preprocess.NormalizeMethod": "None",
             "CustomVision.Preprocess.ResizeMethod": "Stretch", "CustomVision.Preprocess.TargetHeight": "64",
             "CustomVision.Preprocess.TargetWidth": "64", "Image.BitmapPixelFormat": "Bgr8",
             "Image.ColorSpaceGamma": "SRGB", "Image.NominalPixelRange": "Normalized_0_255"}
    (d / "metadata_properties.json").write_text(json.dumps(props, indent=2) + "\n", encoding="utf-8")
    if sidecar:
        (d / "model.json").write_text(json.dumps(sidecar, indent=1) + "\n", encoding="utf-8")
    return d


def zip_dir(directory, zip_path):
    """Deterministic zip of a bundle folder (files at the archive root, fixed timestamps)."""
    d = Path(directory)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for f in sorted(d.iterdir()):
            if f.is_file():
                info = zipfile.ZipInfo(f.name, date_time=(2026, 11, 23, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, f.read_bytes())
    return Path(zip_path)


def exported_now() -> str:  # pragma: no cover - helper for users exporting their own bundles
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
