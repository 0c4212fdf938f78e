"""Reading and decoding images; resize/crop policies to a model's input size.

Canonical view: float32 (H, W, 3), RGB, values in [0, 1].

Resize policies:

* ``stretch``: bilinear resize to (H, W), aspect ratio not kept.
* ``center-crop``: resize the shorter side to max(H, W), then center-crop (H, W).
* ``custom-vision``: Azure Custom Vision's documented scoring preprocessing: downscale
  so the longest side is <= 1600, center-crop to a square, resize to 256, center-crop
  to the network input size (input sizes above 256 resize to that size instead).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def read_image(image) -> Image.Image:
    """Path / bytes / file object / PIL image / array -> PIL RGB image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(_array_to_uint8(image))
    try:
        if isinstance(image, (bytes, bytearray, memoryview)):
            im = Image.open(io.BytesIO(bytes(image)))
        elif isinstance(image, (str, os.PathLike)):
            p = Path(image)
            if not p.exists():
                raise ImageError(f"image not found: {p}")
            if p.suffix.lower() == ".npy":
                return Image.fromarray(_array_to_uint8(np.load(p, allow_pickle=False)))
            im = Image.open(p)
        else:
            im = Image.open(image)
        im.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        name = image if isinstance(image, (str, os.PathLike)) else "<bytes>"
        raise ImageError(f"cannot decode image {name}: {e}") from None
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im.convert("RGBA"), mask=im.convert("RGBA").split()[-1])
        return bg
    return im.convert("RGB")


def _array_to_uint8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))  # CHW -> HWC
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ImageError(f"cannot interpret array of shape {a.shape} as an image (expected HxWx3)")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageError("image array contains NaN or inf")
    if a.max() <= 1.0 + 1e-6:
        a = a * 255.0
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def _center_crop(im: Image.Image, w: int, h: int) -> Image.Image:
    W, H = im.size
    left, top = max(0, (W - w) // 2), max(0, (H - h) // 2)
    return im.crop((left, top, left + w, top + h))


def resize(im: Image.Image, size: tuple[int, int], policy: str = "stretch") -> Image.Image:
    h, w = size
    if im.size == (w, h):
        return im
    if policy == "stretch":
        return im.resize((w, h), Image.BILINEAR)
    if policy == "center-crop":
        W, H = im.size
        s = max(h, w) / min(W, H)
        im = im.resize((max(w, round(W * s)), max(h, round(H * s))), Image.BILINEAR)
        return _center_crop(im, w, h)
    if policy == "custom-vision":
        W, H = im.size
        if max(W, H) > 1600:
            s = 1600 / max(W, H)
            im = im.resize((round(W * s), round(H * s)), Image.BILINEAR)
        m = min(im.size)
        im = _center_crop(im, m, m)
        mid = max(256, h, w)
        im = im.resize((mid, mid), Image.BILINEAR)
        return _center_crop(im, w, h)
    raise ImageError(f"unknown resize policy {policy!r}")


def to_canonical(image, size: tuple[int, int], policy: str = "stretch") -> np.ndarray:
    """Any image -> canonical float32 (H, W, 3) RGB in [0, 1]. A float array that is
    already canonical at the right size is copied unchanged (no re-quantisation)."""
    h, w = size
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape == (h, w, 3) \
            and image.dtype.kind == "f" and image.size and 0 <= image.min() and image.max() <= 1:
        return image.astype(np.float32, copy=True)
    im = resize(read_image(image), (h, w), policy)
    return np.asarray(im, dtype=np.float32) / 255.0


def list_images(paths) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image paths."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTS))
        elif p.exists():
            out.append(p)
        else:
            raise ImageError(f"image not found: {p}")
    if not out:
        raise ImageError(f"no images found in {', '.join(map(str, paths))}")
    return out


def to_uint8(canonical: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(canonical) * 255.0), 0, 255).astype(np.uint8)


def encode_png(canonical: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(canonical)).save(buf, format="PNG")
    return buf.getvalue()
