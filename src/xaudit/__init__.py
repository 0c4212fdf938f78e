"""xaudit: audit image classifiers you cannot see inside.

Public API (lazy imports keep ``import xaudit`` cheap)::

    import xaudit
    model = xaudit.load_model("model.onnx")
    probs = model.predict(model.preprocess_batch(["a.png", "b.png"]))
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: F401
    XauditError, ModelLoadError, ImageError, LabelError, CaptureFormatError,
    BaselineError, UnsupportedOperation, TrackingError,
)

_LAZY = {
    "load_model": ("xaudit.loader", "load_model"),
    "Model": ("xaudit.model", "Model"),
    "Preprocessing": ("xaudit.model", "Preprocessing"),
    "Explanation": ("xaudit.explainers.base", "Explanation"),
    "get_explainer": ("xaudit.explainers", "get_explainer"),
    "explain": ("xaudit.explainers", "explain"),
    "stability_sweep": ("xaudit.stability", "stability_sweep"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'xaudit' has no attribute {name!r}")
