"""Explainer base class and the Explanation result (JSON meta + arrays).

Every method answers the same call::

    explainer = FullGrad(**params)               # parameters only, no work
    exp = explainer.explain(model, image, target=None)   # target: index or label
    exps = explainer.explain_batch(model, images, targets=None)

A new method subclasses :class:`Explainer` and overrides :meth:`Explainer._attribute`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import XauditError


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return o


# method -> "module:function(explanation, directory)" writing extra files next to the explanation
EXTRA_FILES = {"anchors": "xaudit.explainers.anchors:save_examples_png"}


@dataclass
class Explanation:
    """Result of one explanation.

    ``attribution`` is float32 (H, W) at the model's input size. ``meta`` holds
    method-specific JSON-able extras (e.g. ``completeness_error``, ``r2``,
    ``precision``); ``arrays`` holds named numpy arrays saved as ``<name>.npy``
    (e.g. ``segments``, ``weights``, ``anchor_mask``). ``image`` is the canonical
    input (H, W, 3) RGB [0, 1] the map explains (saved as ``input.npy``).
    """

    attribution: np.ndarray
    target: int
    target_label: str
    target_prob: float
    method: str
    params: dict = field(default_factory=dict)
    seed: int | None = None
    model_calls: int = 0
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    image: np.ndarray | None = None
    model: dict = field(default_factory=dict)   # source, format, sha256 ...
    source_image: str | None = None
    top: list = field(default_factory=list)    # [{"index","label","prob"}] of the prediction

    # -------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        return _jsonable({
            "method": self.method,
            "target": self.target,
            "target_label": self.target_label,
            "target_prob": float(self.target_prob),
            "params": self.params,
            "seed": self.seed,
            "model_calls": int(self.model_calls),
            "seconds": float(self.seconds),
            "image": self.source_image,
            "model": self.model,
            "top": self.top,
            "attribution_shape": list(self.attribution.shape),
            "arrays": sorted(self.arrays),
            **self.meta,
        })

    def save(self, directory, overlay: bool = True) -> Path:
        """Write ``attribution.npy``, ``overlay.png``, ``explanation.json`` (+ arrays)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "attribution.npy", np.asarray(self.attribution, np.float32))
        for name, arr in self.arrays.items():
            np.save(d / f"{name}.npy", np.asarray(arr))
        if self.image is not None:
            np.save(d / "input.npy", np.asarray(self.image, np.float32))
        (d / "explanation.json").write_text(json.dumps(self.to_dict(), indent=2))
        if overlay and self.image is not None:
            from ..plots import save_overlay
            save_overlay(self.image, self.attribution, d / "overlay.png", title=self.title())
        extra = EXTRA_FILES.get(self.method)
        if overlay and extra:  # method-specific pictures (e.g. anchors' examples.png)
            import importlib
            mod, fn = extra.split(":")
            getattr(importlib.import_module(mod), fn)(self, d)
        return d

    def title(self) -> str:
        return f"{self.method}: class {self.target} '{self.target_label}' (p={self.target_prob:.3f})"

    @classmethod
    def load(cls, directory) -> "Explanation":
        d = Path(directory)
        jp = d / "explanation.json"
        if not jp.exists():
            raise XauditError(f"{d} holds no explanation.json")
        meta = json.loads(jp.read_text())
        known = {"method", "target", "target_label", "target_prob", "params", "seed", "model_calls",
                 "seconds", "image", "model", "top", "attribution_shape", "arrays"}
        arrays = {n: np.load(d / f"{n}.npy", allow_pickle=False) for n in meta.get("arrays", [])
                  if (d / f"{n}.npy").exists()}
        img = np.load(d / "input.npy") if (d / "input.npy").exists() else None
        return cls(
            attribution=np.load(d / "attribution.npy"), target=meta["target"],
            target_label=meta["target_label"], target_prob=meta["target_prob"], method=meta["method"],
            params=meta.get("params", {}), seed=meta.get("seed"), model_calls=meta.get("model_calls", 0),
            seconds=meta.get("seconds", 0.0), meta={k: v for k, v in meta.items() if k not in known},
            arrays=arrays, image=img, model=meta.get("model", {}), source_image=meta.get("image"),
            top=meta.get("top", []),
        )


@dataclass
class Attribution:
    """What :meth:`Explainer._attribute` returns."""

    attribution: np.ndarray
    meta: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    model_calls: int | None = None   # None: counted from model.counter


class Explainer:
    """Base class. Parameters go to ``__init__`` and are stored as given (validated at
    use); ``explain`` does the work. Subclasses set ``name`` and ``needs_gradients``
    and implement ``_attribute``."""

    name: str = "base"
    needs_gradients: bool = False
    uses_seed: bool = False

    def __init__(self, **params):
        self._params = dict(params)

    # sklearn-like parameter access
    def get_params(self) -> dict:
        return dict(self._params)

    def set_params(self, **params) -> "Explainer":
        self._params.update(params)
        return self

    def clone(self, **params) -> "Explainer":
        p = self.get_params()
        p.update(params)
        return type(self)(**p)

    @property
    def seed(self):
        return self._params.get("seed") if self.uses_seed else None

    # ---------------------------------------------------------------------------
    def _attribute(self, model, x: np.ndarray, target: int, probs: np.ndarray) -> Attribution:
        raise NotImplementedError

    def _predict(self, model, x: np.ndarray) -> np.ndarray:
        """Probabilities (C,) of the canonical image ``x`` before attribution; gradient
        methods override this to reuse their own forward pass."""
        return model.predict(x[None])[0]

    def explain(self, model, image, target=None) -> Explanation:
        from ..images import to_canonical
        src = str(image) if isinstance(image, (str, Path)) else None
        x = to_canonical(image, model.input_size, model.preprocessing.resize)  # a private copy
        before = model.counter.samples
        t0 = time.perf_counter()
        probs = self._predict(model, x)
        tgt = int(np.argmax(probs)) if target is None else model.target_index(target)
        res = self._attribute(model, x, tgt, probs)
        seconds = time.perf_counter() - t0
        calls = (model.counter.samples - before) if res.model_calls is None else res.model_calls
        att = np.asarray(res.attribution, dtype=np.float32)
        if att.shape != tuple(model.input_size):
            raise RuntimeError(f"{self.name} returned a map of shape {att.shape}, expected {model.input_size}")
        order = np.argsort(-probs)[:5]
        return Explanation(
            attribution=att, target=tgt, target_label=model.label_of(tgt), target_prob=float(probs[tgt]),
            method=self.name, params=_jsonable(self.get_params()), seed=self.seed, model_calls=int(calls),
            seconds=seconds, meta=_jsonable(res.meta), arrays=res.arrays, image=x,
            model=model_summary(model), source_image=src,
            top=[{"index": int(i), "label": model.label_of(int(i)), "prob": float(probs[i])} for i in order],
        )

    def explain_batch(self, model, images, targets=None) -> list[Explanation]:
        targets = [None] * len(images) if targets is None else list(targets)
        if len(targets) != len(images):
            raise XauditError(f"{len(images)} images but {len(targets)} targets")
        return [self.explain(model, im, t) for im, t in zip(images, targets)]

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}({args})"


def model_summary(model) -> dict:
    d = {"source": model.source, "format": model.format}
    sha = getattr(model, "sha256", None)
    if sha:
        d["sha256"] = sha
    return d
