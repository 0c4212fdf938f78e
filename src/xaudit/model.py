"""The one Model interface every adapter implements.

Canonical input view
--------------------
Every model, whatever its format, is fed the same *canonical view* of an image:
a float32 array ``(H, W, 3)``, **RGB, values in [0, 1]**, already resized/cropped to
``model.input_size`` by the model's declared resize policy.  ``preprocess`` produces
it; ``predict`` takes a batch ``(N, H, W, 3)`` of it and converts it to the model's
*native* tensor (colour order, value range, mean/std, layout) internally, as declared
by :class:`Preprocessing`.  Explainers therefore perturb and attribute in one space,
and attribution maps are ``H x W`` at the model's input size.

Probabilities vs logits
-----------------------
``predict`` always returns probabilities ``(N, C)`` float32 whose rows sum to 1.
Each adapter declares ``output_kind``:

* ``"probabilities"`` when the graph ends in a Softmax / ZipMap (ONNX, TF ``loss:0``),
  rows are renormalised to sum to exactly 1;
* ``"logits"`` when it does not: a softmax is applied;
* ``"auto"`` (TorchScript / export files with no inspectable graph): decided once at
  load time on a probe batch: if every probe row is non-negative and sums to 1
  (±1e-3) the output is taken as probabilities, otherwise as logits.

The user can always declare it (``output="logits"`` / ``--output logits``).
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from .errors import ImageError, LabelError, UnsupportedOperation, XauditError

COLORS = ("rgb", "bgr")
RANGES = ("0-1", "0-255")
LAYOUTS = ("NCHW", "NHWC")
RESIZES = ("stretch", "center-crop", "custom-vision")
OUTPUT_KINDS = ("probabilities", "logits", "auto")


def _floats(value, name, n=3):
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    try:
        vals = tuple(float(v) for v in (value if np.ndim(value) else [value] * n))
    except (TypeError, ValueError):
        raise XauditError(f"--{name} expects {n} numbers like '0.485,0.456,0.406', got {value!r}") from None
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise XauditError(f"--{name} expects {n} numbers (one per channel), got {len(vals)}")
    return vals


@dataclass(frozen=True)
class Preprocessing:
    """How a canonical RGB [0,1] image becomes the model's native input tensor.

    ``mean``/``std`` are per channel, in the model's colour order and value range
    (e.g. Custom Vision: none; ImageNet torch: mean=(0.485,0.456,0.406) with range 0-1).
    """

    color: str = "rgb"
    value_range: str = "0-1"
    mean: tuple | None = None
    std: tuple | None = None
    layout: str = "NCHW"
    resize: str = "stretch"

    def __post_init__(self):
        if self.color not in COLORS:
            raise XauditError(f"colour order must be one of {COLORS}, got {self.color!r}")
        if self.value_range not in RANGES:
            raise XauditError(f"value range must be one of {RANGES}, got {self.value_range!r}")
        if self.layout not in LAYOUTS:
            raise XauditError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.resize not in RESIZES:
            raise XauditError(f"resize policy must be one of {RESIZES}, got {self.resize!r}")
        object.__setattr__(self, "mean", _floats(self.mean, "mean"))
        object.__setattr__(self, "std", _floats(self.std, "std"))
        if self.std is not None and any(s == 0 for s in self.std):
            raise XauditError("--std must not contain 0")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean) if self.mean else None
        d["std"] = list(self.std) if self.std else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(**{k: d[k] for k in ("color", "value_range", "mean", "std", "layout", "resize") if k in d})

    def with_overrides(self, **kw) -> "Preprocessing":
        kw = {k: v for k, v in kw.items() if v is not None}
        return replace(self, **kw) if kw else self

    # numpy and torch share the arithmetic; ``xp`` is the array namespace.
    def apply(self, batch):
        """Canonical (N,H,W,3) RGB [0,1] -> native tensor. Works on numpy arrays and
        torch tensors (differentiably); never modifies ``batch``."""
        is_np = isinstance(batch, np.ndarray)
        x = batch
        if self.color == "bgr":
            x = x[..., ::-1] if is_np else x.flip(-1)
        if self.value_range == "0-255":
            x = x * 255.0
        if self.mean is not None:
            m = np.asarray(self.mean, dtype=np.float32)
            x = x - (m if is_np else _t(m, x))
        if self.std is not None:
            s = np.asarray(self.std, dtype=np.float32)
            x = x / (s if is_np else _t(s, x))
        if self.layout == "NCHW":
            x = np.transpose(x, (0, 3, 1, 2)) if is_np else x.permute(0, 3, 1, 2)
        if is_np:
            return np.ascontiguousarray(x, dtype=np.float32)
        return x.contiguous()


def _t(arr, like):
    import torch
    return torch.as_tensor(arr, dtype=like.dtype, device=like.device)


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def looks_like_probabilities(rows: np.ndarray, tol: float = 1e-3) -> bool:
    rows = np.asarray(rows, dtype=np.float64)
    return bool(rows.size and np.all(rows >= -1e-6) and np.all(np.abs(rows.sum(axis=1) - 1) <= tol))


@dataclass
class CallCounter:
    """Counts forward evaluations (images) and batches sent to the model."""

    samples: int = 0
    batches: int = 0
    _lock: Any = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, n: int):
        with self._lock:
            self.samples += int(n)
            self.batches += 1


class Model:
    """Base class of every adapter. Subclasses set the attributes in ``__init__`` via
    :meth:`_setup` and implement :meth:`_forward_native` (and optionally
    :meth:`_differentiable` / :meth:`_check_gradients`)."""

    format: str = "unknown"

    def _setup(self, *, source, labels, input_size, preprocessing: Preprocessing,
               output_kind: str = "auto", fixed_batch: int | None = None,
               inputs: list | None = None, outputs: list | None = None,
               extra_info: dict | None = None, batch_size: int = 64):
        self.source = str(source)
        self.labels = [str(x) for x in labels] if labels is not None else None
        h, w = (int(v) for v in input_size)
        self.input_size = (h, w)
        self.preprocessing = preprocessing
        if output_kind not in OUTPUT_KINDS:
            raise XauditError(f"output kind must be one of {OUTPUT_KINDS}, got {output_kind!r}")
        self.output_kind = output_kind
        self.fixed_batch = fixed_batch
        self.inputs = inputs or []
        self.outputs = outputs or []
        self.extra_info = extra_info or {}
        self.batch_size = batch_size
        self.counter = CallCounter()
        self._grad_status = None
        self._num_classes = None

    # ------------------------------------------------------------------ adapter hooks
    def _forward_native(self, native: np.ndarray) -> np.ndarray:
        """native tensor (n, ...) -> raw outputs (n, C) (probabilities or logits)."""
        raise NotImplementedError

    def _check_gradients(self) -> tuple[bool, str]:
        return False, f"{self.format} models expose no gradients"

    def _differentiable(self):
        raise UnsupportedOperation(self.gradients_reason)

    # ------------------------------------------------------------------ public API
    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            self._num_classes = len(self.labels) if self.labels else self.predict(
                np.zeros((1, *self.input_size, 3), np.float32)).shape[1]
        return self._num_classes

    @property
    def gradients_reachable(self) -> bool:
        return self._gradients()[0]

    @property
    def gradients_reason(self) -> str:
        return self._gradients()[1]

    def _gradients(self):
        if self._grad_status is None:
            try:
                self._grad_status = self._check_gradients()
            except XauditError as e:  # conversion failures are a capability answer
                self._grad_status = (False, str(e))
        return self._grad_status

    def differentiable(self):
        """A :class:`xaudit.white_box.Differentiable` view (torch module returning
        pre-softmax logits). Raises UnsupportedOperation with the reason otherwise."""
        ok, why = self._gradients()
        if not ok:
            raise UnsupportedOperation(f"gradients are not reachable for {self.source}: {why}")
        return self._differentiable()

    def preprocess(self, image) -> np.ndarray:
        """Any Pillow-readable path/bytes/PIL image/array -> canonical (H,W,3) float32."""
        from .images import to_canonical
        return to_canonical(image, self.input_size, self.preprocessing.resize)

    def preprocess_batch(self, images: Sequence) -> np.ndarray:
        return np.stack([self.preprocess(im) for im in images]) if len(images) else \
            np.zeros((0, *self.input_size, 3), np.float32)

    def predict(self, batch, batch_size: int | None = None) -> np.ndarray:
        """Canonical batch (N,H,W,3) (or one (H,W,3) image) -> probabilities (N,C)."""
        arr = np.asarray(batch, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr[None]
        h, w = self.input_size
        if arr.ndim != 4 or arr.shape[1:] != (h, w, 3):
            raise ImageError(
                f"predict expects a canonical batch of shape (N, {h}, {w}, 3) (RGB, 0-1); got {arr.shape}. "
                "Use model.preprocess()/preprocess_batch() first")
        n = arr.shape[0]
        if n == 0:
            return np.zeros((0, self.num_classes), np.float32)
        step = self.fixed_batch or batch_size or self.batch_size
        outs = []
        for i in range(0, n, step):
            chunk = arr[i:i + step]
            m = chunk.shape[0]
            if self.fixed_batch and m < self.fixed_batch:  # pad a fixed-size batch
                pad = np.repeat(chunk[-1:], self.fixed_batch - m, axis=0)
                chunk = np.concatenate([chunk, pad])
            raw = np.asarray(self._forward_native(self.preprocessing.apply(chunk)))
            raw = raw.reshape(raw.shape[0], -1)[:m]
            self.counter.add(m)
            outs.append(raw)
        return self._to_probs(np.concatenate(outs))

    def _to_probs(self, raw: np.ndarray) -> np.ndarray:
        if self.output_kind == "logits":
            return softmax(raw)
        p = np.clip(np.asarray(raw, dtype=np.float64), 0, None)
        s = p.sum(axis=1, keepdims=True)
        s[s == 0] = 1
        return (p / s).astype(np.float32)

    def resolve_output_kind(self, probe: np.ndarray | None = None):
        """Decide ``"auto"`` once, on a probe batch (see module doc)."""
        if self.output_kind != "auto":
            return
        if probe is None:
            rng = np.random.default_rng(0)
            probe = rng.random((self.fixed_batch or 2, *self.input_size, 3), dtype=np.float32)
        raw = np.asarray(self._forward_native(self.preprocessing.apply(probe)))
        self.output_kind = "probabilities" if looks_like_probabilities(raw.reshape(raw.shape[0], -1)) else "logits"

    def check_labels(self):
        """Raise LabelError when the label count differs from the output width."""
        probe = np.zeros((1, *self.input_size, 3), np.float32)
        if self.fixed_batch:
            probe = np.repeat(probe, self.fixed_batch, axis=0)
        raw = np.asarray(self._forward_native(self.preprocessing.apply(probe)))
        width = raw.reshape(raw.shape[0], -1).shape[1]
        self._num_classes = width
        if self.labels is None:
            self.labels = [str(i) for i in range(width)]
        elif len(self.labels) != width:
            raise LabelError(
                f"{self.source}: {len(self.labels)} labels but the model outputs {width} classes; "
                "pass a matching --labels FILE")

    def info(self, with_gradients: bool = True) -> dict:
        p = self.preprocessing
        d = {
            "source": self.source,
            "format": self.format,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "input_size": list(self.input_size),
            "layout": p.layout,
            "color": p.color,
            "range": p.value_range,
            "mean": list(p.mean) if p.mean else None,
            "std": list(p.std) if p.std else None,
            "resize": p.resize,
            "output_kind": self.output_kind,
            "fixed_batch": self.fixed_batch,
            "num_classes": len(self.labels) if self.labels else None,
            "labels": self.labels,
        }
        if with_gradients:
            d["gradients_reachable"] = self.gradients_reachable
            d["gradients_reason"] = self.gradients_reason
        d.update(self.extra_info)
        return d

    def label_of(self, index: int) -> str:
        return self.labels[index] if self.labels and 0 <= index < len(self.labels) else str(index)

    def target_index(self, target) -> int:
        """Class index from an int, a digit string, or a label."""
        n = self.num_classes
        if target is None:
            raise XauditError("no target given")
        if isinstance(target, (int, np.integer)):
            idx = int(target)
        elif isinstance(target, str) and self.labels and target in self.labels:
            idx = self.labels.index(target)
        elif isinstance(target, str) and target.lstrip("-").isdigit():
            idx = int(target)
        else:
            raise XauditError(f"unknown target {target!r}: give a class index 0..{n - 1} or one of the labels")
        if not 0 <= idx < n:
            raise XauditError(f"target index {idx} out of range 0..{n - 1}")
        return idx

    def __repr__(self):
        return f"<{type(self).__name__} format={self.format} source={self.source!r} input={self.input_size} classes={len(self.labels or [])}>"
