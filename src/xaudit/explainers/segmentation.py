"""Superpixels shared by LIME and Anchors (scikit-image quickshift / slic / felzenszwalb).

``segment(image, method="quickshift", seed=0, **params)`` is a pure function of the
image, the method, its parameters and the seed: results are cached (small LRU keyed by
a hash of the image bytes), so a seed sweep that fixes the segmentation segments once.

Labels are always ``0..K-1`` (int32), row-major order of first appearance is not
guaranteed; ``np.unique(segments)`` is ``arange(K)``.

Defaults follow the ``lime`` package: quickshift(kernel_size=4, max_dist=200,
ratio=0.2). Only quickshift is random (its seed breaks ties); slic and felzenszwalb
are deterministic, so their ``seed`` has no effect.
"""
from __future__ import annotations

import hashlib
import inspect
from collections import OrderedDict

import numpy as np

from ..errors import XauditError

SEGMENTATIONS = ("quickshift", "slic", "felzenszwalb")

DEFAULTS = {
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "slic": {"n_segments": 50, "compactness": 10.0, "sigma": 1.0},
    "felzenszwalb": {"scale": 100, "sigma": 0.5, "min_size": 20},
}

_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_CACHE_SIZE = 64


SMALL_SIDE = 128   # below this, quickshift's kernel_size default is 2 instead of lime's 4


def segmentation_params(method: str, params: dict | None = None, shape=None) -> dict:
    """Defaults of ``method`` updated by ``params`` (unknown keys rejected). With ``shape``
    (H, W, ...) and quickshift on an image smaller than 128 px whose ``kernel_size`` is not
    given, the default kernel_size is 2: lime's 4 yields only 3-8 superpixels at 64 px."""
    if method not in SEGMENTATIONS:
        raise XauditError(f"unknown segmentation {method!r}: choose one of {', '.join(SEGMENTATIONS)}")
    out = dict(DEFAULTS[method])
    if method == "quickshift" and shape is not None and min(shape[:2]) < SMALL_SIDE:
        out["kernel_size"] = 2
    for k, v in (params or {}).items():
        if v is None:
            continue
        if k not in out and k not in _extra_allowed(method):
            raise XauditError(f"segmentation {method!r} has no parameter {k!r} "
                              f"(known: {', '.join(sorted(set(out) | _extra_allowed(method)))})")
        out[k] = v
    return out


def _extra_allowed(method):
    import skimage.segmentation as s
    sig = inspect.signature(getattr(s, method))
    return {n for n in sig.parameters if n not in ("image", "rng", "random_seed", "channel_axis",
                                                   "return_tree", "mask")}


def _key(image: np.ndarray, method: str, params: dict, seed) -> tuple:
    h = hashlib.sha1(np.ascontiguousarray(image).view(np.uint8).tobytes()).hexdigest()
    return (h, image.shape, str(image.dtype), method, tuple(sorted(params.items())), seed)


def _relabel(seg: np.ndarray) -> np.ndarray:
    _, inv = np.unique(seg, return_inverse=True)
    return inv.reshape(seg.shape).astype(np.int32)


def segment(image, method: str = "quickshift", seed: int | None = 0, **params) -> np.ndarray:
    """Superpixel labels (H, W) int32 in ``0..K-1`` for a canonical RGB [0,1] image."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise XauditError(f"segmentation expects an (H, W, 3) image, got shape {img.shape}")
    p = segmentation_params(method, params, img.shape)
    key = _key(img, method, p, seed if method == "quickshift" else None)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit.copy()
    import skimage.segmentation as s
    x = np.asarray(img, dtype=np.float64)
    if method == "quickshift":
        sig = inspect.signature(s.quickshift).parameters
        kw = {"rng": int(seed or 0)} if "rng" in sig else {"random_seed": int(seed or 0)}
        seg = s.quickshift(x, **p, **kw)
    elif method == "slic":
        seg = s.slic(x, start_label=0, channel_axis=-1, **p)
    else:
        seg = s.felzenszwalb(x, channel_axis=-1, **p)
    seg = _relabel(seg)
    seg.setflags(write=False)
    _CACHE[key] = seg
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return seg.copy()


def mean_colour_image(image: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Each superpixel painted with its mean colour (lime's ``hide_color=None``)."""
    img = np.asarray(image, dtype=np.float64)
    k = int(segments.max()) + 1
    flat = segments.ravel()
    counts = np.bincount(flat, minlength=k).astype(np.float64)
    counts[counts == 0] = 1
    means = np.stack([np.bincount(flat, weights=img[..., c].ravel(), minlength=k) for c in range(3)], 1)
    means /= counts[:, None]
    return means[segments].astype(np.asarray(image).dtype)


def compose(image: np.ndarray, replacement: np.ndarray, segments: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Batch of images: superpixel ``j`` of sample ``i`` keeps ``image`` where ``on[i, j]``,
    else takes ``replacement`` (an (H,W,3) image or an (N,H,W,3) batch)."""
    on = np.asarray(on, dtype=bool)
    keep = on[:, segments]                       # (N, H, W)
    out = np.empty((len(on), *np.shape(image)), np.float32)
    out[:] = replacement                          # (H,W,3) broadcast or (N,H,W,3)
    img = np.ascontiguousarray(image, np.float32)
    if img.ndim == 3 and img.shape[:2] == segments.shape:
        # whole RGB pixels (12-byte units) per masked copy: the same bytes as the per-channel
        # copy below, ~5x faster (its innermost loop would run over only 3 channels)
        px = np.dtype((np.void, img.shape[-1] * img.itemsize))
        np.copyto(out.view(px).reshape(keep.shape), img.view(px).reshape(segments.shape), where=keep)
    else:
        np.copyto(out, img, where=keep[..., None])
    return out


def paint(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Per-superpixel values -> (H, W) float32 map."""
    return np.asarray(values, dtype=np.float32)[segments]


def default_batch(model) -> int:
    """Batch size for perturbation batches: the adapter's fixed batch if it has one, else
    its batch size capped so that a batch holds about 2**16 pixels (on CPU, very large
    batches of large images are memory-bound and slower per image: ResNet18 at 224 px ran
    1.6x slower per image at batch 256 than at batch 10 here, and a 64 px ResNet
    0.79 s per 500 images at batch 10, 0.82 at 16, 1.02 at 32, 1.39 at 64)."""
    if getattr(model, "fixed_batch", None):
        return int(model.fixed_batch)
    h, w = model.input_size
    return int(max(8, min(int(getattr(model, "batch_size", 64) or 64), 2 ** 16 // max(h * w, 1))))


def predict_masks(model, image, replacement, segments, on, batch_size) -> np.ndarray:
    """Probabilities for the images ``compose(image, replacement, segments, on)``, composed
    one batch at a time (cache-sized, never the whole perturbation set in memory)."""
    n = len(on)
    out = None
    for i in range(0, n, batch_size):
        pr = model.predict(compose(image, replacement, segments, on[i:i + batch_size]), batch_size=batch_size)
        if out is None:
            out = np.empty((n, pr.shape[1]), np.float32)
        out[i:i + len(pr)] = pr
    return out if out is not None else np.zeros((0, 0), np.float32)
