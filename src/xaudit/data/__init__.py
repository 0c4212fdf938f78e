"""Shipped demo data generators and models.

``model_path(name)`` -> path of a shipped file (e.g. ``"signs.onnx"``, ``"signs_cv"``,
``"poles_biased_cv.zip"``); the generators live in ``xaudit.data.generate``
(re-exported here lazily so that importing ``xaudit.data`` stays cheap).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import XauditError

MODELS_DIR = Path(__file__).resolve().parent / "models"

__all__ = ["MODELS_DIR", "model_path", "available_models", "make_signs", "make_poles",
           "GTSRB_LABELS", "POLE_LABELS", "save_dataset"]


def available_models() -> list[str]:
    """Names accepted by ``model_path`` (files and bundle folders in MODELS_DIR)."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in MODELS_DIR.iterdir()
                  if not p.name.startswith((".", "_")) and p.name != "__pycache__")


def model_path(name: str) -> Path:
    """Path of a shipped model file or bundle folder, e.g. ``model_path("signs.onnx")``.

    A bare stem is accepted too when unambiguous by convention: ``"signs"`` -> ``signs.onnx``.
    Unknown names raise XauditError listing the available names."""
    name = str(name)
    p = MODELS_DIR / name
    if "/" not in name and "\\" not in name and name not in ("", ".", "..") and p.exists():
        return p
    if "." not in name and (MODELS_DIR / f"{name}.onnx").is_file():
        return MODELS_DIR / f"{name}.onnx"
    avail = available_models()
    raise XauditError(f"unknown shipped model {name!r}; available: {', '.join(avail) if avail else '(none built yet: run experiments/train_models.py)'}")


def __getattr__(attr):  # lazy re-exports (PEP 562)
    if attr in ("make_signs", "make_poles", "GTSRB_LABELS", "POLE_LABELS", "save_dataset"):
        from . import generate
        return getattr(generate, attr)
    raise AttributeError(f"module 'xaudit.data' has no attribute {attr!r}")
