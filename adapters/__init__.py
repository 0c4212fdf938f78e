"""Model adapters, one file per format, all behind :class:`xaudit.model.Model`.

* :mod:`xaudit.adapters.torch` -- TorchScript, ``torch.export`` ``.pt2``, ``module:factory``
* :mod:`xaudit.adapters.onnx` -- ONNX through onnxruntime
* :mod:`xaudit.adapters.tf_frozen` -- TensorFlow frozen GraphDef ``.pb`` (extra ``[tf]``)
* :mod:`xaudit.adapters.custom_vision` -- Azure Custom Vision export bundles (folder/zip)

This module holds the few helpers they share (labels, sidecars, overrides, hashing).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from xaudit.errors import LabelError, ModelLoadError, XauditError
from xaudit.model import Preprocessing

OVERRIDE_KEYS = {"labels", "color", "value_range", "mean", "std", "layout", "input_size", "resize",
                 "output_kind", "weights", "allow_pickle"}
PREPROCESSING_KEYS = ("color", "value_range", "mean", "std", "layout", "resize")


def sha256_of(path) -> str:
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_labels(value) -> list[str]:
    """A labels file (one per line, index order; or a JSON list) or a list -> list of str."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    p = Path(value)
    if not p.is_file():
        raise LabelError(f"labels file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(f"cannot read labels file {p}: {e}") from None
    s = text.strip()
    if s.startswith("["):
        try:
            return [str(v) for v in json.loads(s)]
        except json.JSONDecodeError:
            pass
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise LabelError(f"labels file {p} is empty")
    return labels


def parse_labels_prop(text: str):
    """Labels stored in a metadata property: JSON list, or comma/newline separated."""
    if not text:
        return None
    s = text.strip()
    if s.startswith("["):
        try:
            return [str(v) for v in json.loads(s)]
        except json.JSONDecodeError:
            pass
    sep = "\n" if "\n" in s else ","
    return [v.strip() for v in s.split(sep) if v.strip()]


def parse_input_size(value):
    if value is None:
        return None
    if isinstance(value, (int,)):
        return (int(value), int(value))
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").replace(" ", ",").split(",") if p]
    else:
        parts = list(value)
    try:
        vals = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise XauditError(f"--input-size expects H,W or one number, got {value!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) <= 0:
        raise XauditError(f"--input-size expects H,W with positive numbers, got {value!r}")
    return tuple(vals)


def check_overrides(overrides: dict):
    unknown = set(overrides) - OVERRIDE_KEYS
    if unknown:
        raise XauditError(f"unknown model option(s): {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(OVERRIDE_KEYS))}")


def preprocessing_with(defaults: dict, overrides: dict) -> Preprocessing:
    """Declared defaults (from the file/sidecar/metadata) + user overrides."""
    d = {k: v for k, v in defaults.items() if k in PREPROCESSING_KEYS and v is not None}
    d.update({k: overrides[k] for k in PREPROCESSING_KEYS if overrides.get(k) is not None})
    return Preprocessing(**d)


def read_sidecar(model_file: Path) -> dict:
    """``<stem>.json`` beside a model file: labels, input_size, color, range, mean, std,
    layout, resize, output. Returns {} when absent."""
    for cand in (model_file.with_suffix(".json"), model_file.parent / (model_file.name + ".json")):
        if cand.is_file():
            try:
                d = json.loads(cand.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ModelLoadError(f"cannot read model sidecar {cand}: {e}") from None
            if not isinstance(d, dict):
                raise ModelLoadError(f"model sidecar {cand} must hold a JSON object")
            out = dict(d)
            if "range" in out:
                out["value_range"] = out.pop("range")
            if "output" in out:
                out["output_kind"] = out.pop("output")
            return out
    return {}


def labels_beside(model_file: Path):
    for cand in (model_file.parent / f"{model_file.stem}.labels.txt", model_file.parent / f"{model_file.name}.labels.txt",
                 model_file.parent / "labels.txt"):
        if cand.is_file():
            return read_labels(cand)
    return None


def normalise_range(value):
    """Metadata spellings of the value range -> '0-1' | '0-255' | None."""
    if value is None:
        return None
    v = str(value).lower().replace("_", "-").replace(" ", "")
    if "255" in v:
        return "0-255"
    if v in ("0-1", "normalized-0-1", "nominalrange-0-1", "normalized", "0..1") or "0-1" in v:
        return "0-1"
    return None


def normalise_color(value):
    if value is None:
        return None
    v = str(value).lower()
    if "bgr" in v:
        return "bgr"
    if "rgb" in v:
        return "rgb"
    return None
