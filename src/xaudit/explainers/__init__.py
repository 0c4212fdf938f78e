"""Explainer registry: one class per method, one ``explain`` call for all.

``get_explainer(name, **params)`` builds a method by name; ``explain(model, image,
method="auto")`` picks FullGrad where gradients are reachable, LIME otherwise, and
records in the explanation's meta which method ran and why.
"""
from __future__ import annotations

import importlib

from ..errors import UnsupportedOperation, XauditError
from .base import Attribution, Explainer, Explanation  # noqa: F401

METHODS = {
    "fullgrad": ("xaudit.explainers.fullgrad", "FullGrad"),
    "gradcam": ("xaudit.explainers.gradcam", "GradCAM"),
    "ig": ("xaudit.explainers.integrated_gradients", "IntegratedGradients"),
    "lime": ("xaudit.explainers.lime", "Lime"),
    "anchors": ("xaudit.explainers.anchors", "Anchors"),
    "occlusion": ("xaudit.explainers.occlusion", "Occlusion"),
}


def explainer_class(name: str):
    name = name.lower()
    if name not in METHODS:
        raise XauditError(f"unknown method {name!r}: choose one of auto, {', '.join(METHODS)}")
    mod, cls = METHODS[name]
    try:
        return getattr(importlib.import_module(mod), cls)
    except ModuleNotFoundError as e:
        if e.name == mod:
            raise UnsupportedOperation(f"method {name!r} is not available in this version of xaudit") from None
        raise


def get_explainer(name: str, **params) -> Explainer:
    return explainer_class(name)(**params)


def choose_method(model, method: str = "auto") -> tuple[str, str]:
    """-> (method, reason)."""
    if method != "auto":
        return method, "requested"
    if model.gradients_reachable:
        return "fullgrad", f"auto: gradients reachable ({model.gradients_reason})"
    return "lime", f"auto: gradients not reachable ({model.gradients_reason}); black-box LIME"


def explain(model, image, method: str = "auto", target=None, **params) -> Explanation:
    name, why = choose_method(model, method)
    exp = get_explainer(name, **params).explain(model, image, target)
    exp.meta.setdefault("method_requested", method)
    exp.meta.setdefault("method_reason", why)
    return exp
