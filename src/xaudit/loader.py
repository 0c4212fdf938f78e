"""``load_model(source, **overrides) -> Model``: detect the format, call its adapter.

Detection (in order): a folder or ``.zip`` holding ``model.onnx``/``model.pb`` (or a
``cvexport.manifest``) -> Custom Vision bundle; ``.onnx`` -> ONNX; ``.pb`` -> TF frozen
graph; ``.pt2`` -> ``torch.export``; ``.pt``/``.pth``/``.ts``/``.jit``/``.torchscript`` ->
TorchScript (pickled files only with ``allow_pickle=True``); ``package.module:factory``
(or ``file.py:factory``) -> a module built by the factory, with ``weights=STATE_DICT``.
Files with other endings are sniffed (ONNX protobuf, TorchScript zip).

Overrides: ``labels`` (file or list), ``color`` (rgb|bgr), ``value_range`` (0-1|0-255),
``mean``, ``std``, ``layout`` (NCHW|NHWC), ``input_size`` ("H,W" | int | tuple), ``resize``
(stretch|center-crop|custom-vision), ``output_kind`` (probabilities|logits|auto),
``weights``, ``allow_pickle``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from .errors import ModelLoadError, XauditError
from .model import Model

TORCH_EXTS = {".pt", ".pth", ".ts", ".jit", ".torchscript"}


def detect_format(source) -> str:
    s = str(source)
    p = Path(s)
    if not p.exists():
        if ":" in s and not s.startswith(("/", ".")) and "/" not in s.split(":")[0].replace(".py", ""):
            return "torch"
        if ":" in s and s.split(":")[0].endswith(".py"):
            return "torch"
        raise ModelLoadError(f"model not found: {s}")
    from xaudit.adapters import custom_vision
    if p.is_dir():
        if custom_vision.is_bundle_dir(p):
            return "custom_vision"
        raise ModelLoadError(f"folder {p} is not a Custom Vision export (needs model.onnx or model.pb + labels.txt)")
    ext = p.suffix.lower()
    if ext == ".zip":
        if custom_vision.is_bundle_zip(p):
            return "custom_vision"
        if zipfile.is_zipfile(p):
            raise ModelLoadError(f"zip {p} holds no model.onnx / model.pb: not a Custom Vision export")
        raise ModelLoadError(f"cannot open {p}: not a valid zip file (corrupt?)")
    if ext == ".onnx":
        return "onnx"
    if ext == ".pb":
        return "tf_frozen"
    if ext == ".pt2" or ext in TORCH_EXTS:
        return "torch"
    head = p.read_bytes()[:4] if p.stat().st_size else b""
    if head[:2] == b"PK":
        return "torch"
    if head[:1] == b"\x08":  # protobuf field 1 varint: ONNX ir_version
        return "onnx"
    raise ModelLoadError(f"unknown model format {p.name!r}: expected .onnx, .pb, .pt/.pt2 (TorchScript/torch.export), "
                         "module:factory, or a Custom Vision folder/.zip")


def load_model(source, **overrides) -> Model:
    from xaudit.adapters import check_overrides
    check_overrides(overrides)
    if not str(source):
        raise ModelLoadError("no model given")
    fmt = detect_format(source)
    if fmt == "custom_vision":
        from xaudit.adapters import custom_vision as mod
    elif fmt == "onnx":
        from xaudit.adapters import onnx as mod
    elif fmt == "tf_frozen":
        from xaudit.adapters import tf_frozen as mod
    else:
        from xaudit.adapters import torch as mod
    model = mod.load(source, **overrides)
    try:
        model.check_labels()
        model.resolve_output_kind()
    except XauditError:
        raise
    except Exception as e:  # noqa: BLE001 - the runtime refused a well-formed probe input
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{source}: the model failed on a probe input of the declared shape "
                             f"{model.input_size} ({model.preprocessing.layout}): {msg}") from None
    return model
