"""Seeded synthetic image datasets with ground-truth evidence masks.

* ``make_signs(n, seed, size=64)``: 43 traffic-sign classes named as in GTSRB
  (``GTSRB_LABELS``, class 14 = "Stop"), drawn procedurally: shape (circle, triangle,
  inverted triangle, octagon, diamond), border / fill colour and a symbolic glyph
  (bars, dots, rings, arrows ...), on random backgrounds (gradients, blobs, smooth
  noise) with scale / position jitter, blur and pixel noise. Mask = the sign region.
* ``make_poles(n, seed, size=64, biased=False, swap_background=False)``: 3 pole classes
  (``POLE_LABELS``) on background families (urban, sky, forest, dusk, field). Mask = the pole.
  ``biased=True`` is the "clever Hans" variant: the background family agrees with the class
  95 % of the time and the pole cue is weakened (wolf-vs-husky). ``swap_background=True``
  draws the background from another class's family.

Every random choice comes from ``numpy.random.default_rng(seed)``; global RNG state
(``random``, ``np.random``, torch) is never touched. Same seed -> identical arrays.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["GTSRB_LABELS", "POLE_LABELS", "SIGN_SPECS", "BACKGROUND_FAMILIES", "POLE_FAMILY",
           "make_signs", "make_poles", "iter_signs", "iter_poles", "save_dataset"]

GTSRB_LABELS = [
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)",
    "Speed limit (60km/h)", "Speed limit (70km/h)", "Speed limit (80km/h)",
    "End of speed limit (80km/h)", "Speed limit (100km/h)", "Speed limit (120km/h)",
    "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop",
    "No vehicles", "Vehicles over 3.5 metric tons prohibited", "No entry",
    "General caution", "Dangerous curve to the left", "Dangerous curve to the right",
    "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right",
    "Road work", "Traffic signals", "Pedestrians", "Children crossing",
    "Bicycles crossing", "Beware of ice/snow", "Wild animals crossing",
    "End of all speed and passing limits", "Turn right ahead", "Turn left ahead",
    "Ahead only", "Go straight or right", "Go straight or left", "Keep right",
    "Keep left", "Roundabout mandatory", "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
]
POLE_LABELS = ["concrete", "steel", "tree"]

RED, WHITE, BLACK = (200, 25, 35), (240, 240, 235), (25, 25, 25)
BLUE, YELLOW, GREY = (25, 70, 185), (245, 200, 25), (90, 90, 90)

# class -> (shape, border colour, fill colour, glyph, glyph colour)
_RW = ("circle", RED, WHITE)
_TRI = ("triangle", RED, WHITE)
_BL = ("circle", BLUE, BLUE)
_END = ("circle", GREY, WHITE)
SIGN_SPECS = [
    (*_RW, "dot1", BLACK), (*_RW, "dot2", BLACK), (*_RW, "dot3", BLACK),      # 0-2
    (*_RW, "dot4", BLACK), (*_RW, "vbar", BLACK), (*_RW, "hbar", BLACK),      # 3-5
    (*_END, "adiag", BLACK), (*_RW, "vbar2", BLACK), (*_RW, "vbar3", BLACK),  # 6-8
    (*_RW, "square2", BLACK), (*_RW, "tri", BLACK),                          # 9-10
    (*_TRI, "plus", BLACK), ("diamond", WHITE, YELLOW, "none", BLACK),       # 11-12
    ("inv_triangle", RED, WHITE, "none", BLACK),                             # 13
    ("octagon", WHITE, RED, "hbar2", WHITE),                                 # 14 Stop
    (*_RW, "none", BLACK), (*_RW, "square", BLACK),                          # 15-16
    ("circle", RED, RED, "hbar", WHITE),                                     # 17 No entry
    (*_TRI, "excl", BLACK), (*_TRI, "arrow_left", BLACK), (*_TRI, "arrow_right", BLACK),  # 18-20
    (*_TRI, "zigzag", BLACK), (*_TRI, "bumps", BLACK), (*_TRI, "diag", BLACK),           # 21-23
    (*_TRI, "vbar2", BLACK), (*_TRI, "tri", BLACK), (*_TRI, "dot3v", BLACK),             # 24-26
    (*_TRI, "ring", BLACK), (*_TRI, "dot2", BLACK), (*_TRI, "ring2", BLACK),             # 27-29
    (*_TRI, "asterisk", BLACK), (*_TRI, "square", BLACK),                                # 30-31
    (*_END, "diag", BLACK),                                                              # 32
    (*_BL, "arrow_right", WHITE), (*_BL, "arrow_left", WHITE), (*_BL, "arrow_up", WHITE),  # 33-35
    (*_BL, "fork_right", WHITE), (*_BL, "fork_left", WHITE),                             # 36-37
    (*_BL, "arrow_downright", WHITE), (*_BL, "arrow_downleft", WHITE),                   # 38-39
    (*_BL, "ring", WHITE), (*_END, "cross", BLACK), (*_END, "hbar2", BLACK),             # 40-42
]
assert len(SIGN_SPECS) == len(GTSRB_LABELS) == 43

SS = 4  # supersampling factor for antialiased drawing


# ----------------------------------------------------------------------------- backgrounds
def _smooth_noise(rng, size, cells):
    g = rng.random((cells, cells)).astype(np.float32)
    im = Image.fromarray((g * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(im, np.float32) / 255.0


def _gradient(rng, size, c0, c1):
    a = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return np.asarray(c0, np.float32) * (1 - t[..., None]) + np.asarray(c1, np.float32) * t[..., None]


def _blobs(rng, img, k, colours=None, soft=True):
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(k):
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(size * 0.08, size * 0.35, 2)
        col = (np.asarray(colours[rng.integers(len(colours))], np.float32) + rng.normal(0, 12, 3)
               if colours is not None else rng.uniform(0, 255, 3))
        d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
        a = np.exp(-d * 1.5) if soft else (d < 1).astype(np.float32)
        a = a * rng.uniform(0.4, 0.9)
        img = img * (1 - a[..., None]) + col * a[..., None]
    return img


def _random_background(rng, size):
    img = _gradient(rng, size, rng.uniform(0, 255, 3), rng.uniform(0, 255, 3))
    img = _blobs(rng, img, int(rng.integers(0, 5)))
    nz = _smooth_noise(rng, size, int(rng.integers(3, 12))) - 0.5
    img = img + nz[..., None] * rng.uniform(0, 60)
    return img


BACKGROUND_FAMILIES = ["urban", "sky", "forest", "dusk", "field"]
POLE_FAMILY = {0: "urban", 1: "sky", 2: "forest"}  # class -> its family in the biased variant


def _family_background(rng, size, family):
    yy = np.mgrid[0:size, 0:size][0].astype(np.float32) / (size - 1)
    if family == "urban":
        g = rng.uniform(150, 200)
        img = _gradient(rng, size, (g, g, g + 5), (g - 30, g - 30, g - 25))
        for _ in range(int(rng.integers(3, 7))):  # buildings
            x0 = int(rng.integers(0, size)); w = int(rng.integers(size // 8, size // 3))
            top = int(rng.integers(size // 6, size * 2 // 3))
            c = rng.uniform(70, 150) + rng.normal(0, 6, 3)
            img[top:, x0:x0 + w] = c
            for wy in range(top + 3, size - 2, 6):  # windows
                for wx in range(x0 + 2, min(x0 + w, size) - 2, 5):
                    img[wy:wy + 2, wx:wx + 2] = c + rng.uniform(30, 70)
    elif family == "sky":
        img = _gradient(rng, size, (70, 130, 230), (170, 210, 250))
        img = _blobs(rng, img, int(rng.integers(1, 5)), [(250, 250, 252), (225, 230, 240)])
    elif family == "forest":
        img = _gradient(rng, size, (20, 70, 25), (60, 120, 45))
        img = _blobs(rng, img, int(rng.integers(4, 10)), [(30, 100, 30), (70, 140, 50), (15, 50, 20)])
    elif family == "dusk":
        img = _gradient(rng, size, (240, 140, 60), (90, 50, 120))
        img = _blobs(rng, img, int(rng.integers(0, 3)), [(250, 190, 120), (120, 60, 110)])
    elif family == "field":
        hz = rng.uniform(0.35, 0.65)
        sky = _gradient(rng, size, (150, 190, 230), (200, 220, 240))
        ground = _gradient(rng, size, (190, 180, 70), (120, 150, 50))
        m = (yy > hz)[..., None].astype(np.float32)
        img = sky * (1 - m) + ground * m
    else:  # pragma: no cover - internal
        raise ValueError(family)
    nz = _smooth_noise(rng, size, int(rng.integers(4, 10))) - 0.5
    return img + nz[..., None] * rng.uniform(10, 40)


def _finish(rng, img, blur_max=0.8, noise_max=7.0):
    """brightness/contrast jitter, blur, pixel noise -> uint8."""
    img = (img - 128) * rng.uniform(0.8, 1.15) + 128 + rng.uniform(-20, 20)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    r = rng.uniform(0, blur_max)
    if r > 0.15:
        im = im.filter(ImageFilter.GaussianBlur(r))
    out = np.asarray(im, np.float32) + rng.normal(0, rng.uniform(0, noise_max), img.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- signs
def _poly(cx, cy, r, n, start_deg):
    return [(cx + r * math.cos(math.radians(start_deg + 360 * k / n)),
             cy + r * math.sin(math.radians(start_deg + 360 * k / n))) for k in range(n)]


def _shape_poly(shape, cx, cy, r):
    if shape == "triangle":
        return _poly(cx, cy, r, 3, -90)
    if shape == "inv_triangle":
        return _poly(cx, cy, r, 3, 90)
    if shape == "octagon":
        return _poly(cx, cy, r, 8, 22.5)
    if shape == "diamond":
        return _poly(cx, cy, r, 4, -90)
    return None


def _draw_glyph(d, glyph, cx, cy, g, col):
    """Glyph in unit coordinates [-1,1] scaled by g around (cx, cy)."""
    def P(u, v):
        return (cx + u * g, cy + v * g)

    def rect(u0, v0, u1, v1):
        d.rectangle([P(u0, v0), P(u1, v1)], fill=col)

    def dot(u, v, rr):
        d.ellipse([P(u - rr, v - rr), P(u + rr, v + rr)], fill=col)

    def line(pts, w=0.24):
        d.line([P(u, v) for u, v in pts], fill=col, width=max(1, int(w * g)), joint="curve")

    def ring(u, v, rr, w=0.18):
        d.ellipse([P(u - rr, v - rr), P(u + rr, v + rr)], outline=col, width=max(1, int(w * g)))

    def arrow(angle_deg, ox=0.0, oy=0.0, s=1.0):
        a = math.radians(angle_deg)
        ca, sa = math.cos(a), math.sin(a)

        def R(u, v):
            return P(ox + s * (u * ca - v * sa), oy + s * (u * sa + v * ca))
        shaft = [(-0.75, -0.13), (0.15, -0.13), (0.15, 0.13), (-0.75, 0.13)]
        head = [(0.05, -0.45), (0.8, 0.0), (0.05, 0.45)]
        d.polygon([R(u, v) for u, v in shaft], fill=col)
        d.polygon([R(u, v) for u, v in head], fill=col)

    if glyph == "none":
        return
    if glyph == "dot1":
        dot(0, 0, 0.32)
    elif glyph == "dot2":
        dot(-0.45, 0, 0.28); dot(0.45, 0, 0.28)
    elif glyph == "dot3":
        dot(0, -0.45, 0.26); dot(-0.45, 0.38, 0.26); dot(0.45, 0.38, 0.26)
    elif glyph == "dot4":
        for u in (-0.42, 0.42):
            for v in (-0.42, 0.42):
                dot(u, v, 0.24)
    elif glyph == "dot3v":
        for v in (-0.6, 0, 0.6):
            dot(0, v, 0.22)
    elif glyph == "vbar":
        rect(-0.16, -0.75, 0.16, 0.75)
    elif glyph == "hbar":
        rect(-0.75, -0.17, 0.75, 0.17)
    elif glyph == "hbar2":
        rect(-0.75, -0.5, 0.75, -0.2); rect(-0.75, 0.2, 0.75, 0.5)
    elif glyph == "vbar2":
        rect(-0.5, -0.75, -0.2, 0.75); rect(0.2, -0.75, 0.5, 0.75)
    elif glyph == "vbar3":
        for u in (-0.6, 0.0, 0.6):
            rect(u - 0.12, -0.75, u + 0.12, 0.75)
    elif glyph == "plus":
        rect(-0.75, -0.15, 0.75, 0.15); rect(-0.15, -0.75, 0.15, 0.75)
    elif glyph == "cross":
        line([(-0.65, -0.65), (0.65, 0.65)], 0.28); line([(-0.65, 0.65), (0.65, -0.65)], 0.28)
    elif glyph == "asterisk":
        rect(-0.8, -0.09, 0.8, 0.09); rect(-0.09, -0.8, 0.09, 0.8)
        line([(-0.6, -0.6), (0.6, 0.6)], 0.16); line([(-0.6, 0.6), (0.6, -0.6)], 0.16)
    elif glyph == "diag":
        line([(-0.75, 0.75), (0.75, -0.75)], 0.3)
    elif glyph == "adiag":
        line([(-0.75, -0.75), (0.75, 0.75)], 0.3)
    elif glyph == "square":
        rect(-0.5, -0.5, 0.5, 0.5)
    elif glyph == "square2":
        rect(-0.8, -0.3, -0.2, 0.3); rect(0.2, -0.3, 0.8, 0.3)
    elif glyph == "tri":
        d.polygon([P(0, -0.65), P(0.65, 0.5), P(-0.65, 0.5)], fill=col)
    elif glyph == "ring":
        ring(0, 0, 0.6)
    elif glyph == "ring2":
        ring(-0.45, 0.1, 0.33, 0.14); ring(0.45, 0.1, 0.33, 0.14)
    elif glyph == "excl":
        rect(-0.14, -0.8, 0.14, 0.25); dot(0, 0.6, 0.17)
    elif glyph == "zigzag":
        line([(-0.55, 0.75), (0.45, 0.25), (-0.45, -0.25), (0.55, -0.75)], 0.22)
    elif glyph == "bumps":
        d.pieslice([P(-0.85, -0.2), P(-0.05, 0.6)], 180, 360, fill=col)
        d.pieslice([P(0.05, -0.2), P(0.85, 0.6)], 180, 360, fill=col)
        rect(-0.85, 0.2, 0.85, 0.4)
    elif glyph == "arrow_right":
        arrow(0)
    elif glyph == "arrow_left":
        arrow(180)
    elif glyph == "arrow_up":
        arrow(-90)
    elif glyph == "arrow_downright":
        arrow(45)
    elif glyph == "arrow_downleft":
        arrow(135)
    elif glyph in ("fork_right", "fork_left"):
        sgn = 1 if glyph == "fork_right" else -1
        rect(-0.13 - 0.35 * sgn, -0.3, 0.13 - 0.35 * sgn, 0.85)
        arrow(-90, -0.35 * sgn, -0.3, 0.6)
        arrow(0 if sgn > 0 else 180, 0.25 * sgn, 0.3, 0.6)
    else:  # pragma: no cover - internal
        raise ValueError(glyph)


_GLYPH_TINTS = {BLACK: [BLACK, (25, 50, 150), (0, 105, 40)], WHITE: [WHITE, YELLOW, (120, 225, 255)]}


def glyph_colour(label: int):
    """Glyph colour of a class: the spec colour, tinted by ``label % 3`` (black -> black /
    navy / dark green, white -> white / yellow / light cyan; Stop keeps white). The tint is an
    extra, deliberately easy cue that keeps 43 classes learnable in a few CPU minutes."""
    gcol = SIGN_SPECS[label][4]
    if label == 14 or gcol not in _GLYPH_TINTS:
        return gcol
    return _GLYPH_TINTS[gcol][label % 3]


def _sign_layer(rng, label, size):
    """-> RGB float (size,size,3), alpha float (size,size) of one sign."""
    shape, border, fill, glyph, _ = SIGN_SPECS[label]
    gcol = glyph_colour(label)
    S = size * SS
    r = rng.uniform(0.32, 0.45) * size
    cx = rng.uniform(r + 1, size - r - 1)
    cy = rng.uniform(r + 1, size - r - 1)
    r, cx, cy = r * SS, cx * SS, cy * SS
    jit = lambda c: tuple(int(np.clip(v + rng.normal(0, 10), 0, 255)) for v in c)  # noqa: E731
    border, fill, gcol = jit(border), jit(fill), jit(gcol)
    im = Image.new("RGB", (S, S), (0, 0, 0))
    al = Image.new("L", (S, S), 0)
    d, da = ImageDraw.Draw(im), ImageDraw.Draw(al)
    bw = rng.uniform(0.14, 0.2)
    poly = _shape_poly(shape, cx, cy, r)
    if poly is None:
        box = [cx - r, cy - r, cx + r, cy + r]
        d.ellipse(box, fill=border); da.ellipse(box, fill=255)
        ri = r * (1 - bw)
        d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=fill)
        g, gy = 0.6 * r, cy
    else:
        d.polygon(poly, fill=border); da.polygon(poly, fill=255)
        k = 2.0 if "triangle" in shape else 1.0  # border width along the normal
        d.polygon(_shape_poly(shape, cx, cy, r * (1 - bw * k)), fill=fill)
        if shape == "triangle":
            g, gy = 0.38 * r, cy + 0.05 * r
        elif shape == "inv_triangle":
            g, gy = 0.3 * r, cy - 0.05 * r
        else:
            g, gy = 0.55 * r, cy
    _draw_glyph(d, glyph, cx, gy, g, gcol)
    # rotate slightly
    ang = float(rng.uniform(-8, 8))
    im = im.rotate(ang, resample=Image.BILINEAR, center=(cx, cy))
    al = al.rotate(ang, resample=Image.BILINEAR, center=(cx, cy))
    im = np.asarray(im.resize((size, size), Image.BOX), np.float32)
    al = np.asarray(al.resize((size, size), Image.BOX), np.float32) / 255.0
    return im, al


def make_signs(n: int, seed: int, size: int = 64):
    """-> images uint8 (n,size,size,3) RGB, labels int64 (n,), masks bool (n,size,size).

    Labels are balanced-random (uniform over the 43 classes); mask = pixels whose sign
    coverage is >= 50 %. ``iter_signs`` yields the same images one at a time."""
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    labels = np.empty(n, np.int64)
    for i, (im, lab, m) in enumerate(iter_signs(n, seed, size)):
        images[i], labels[i], masks[i] = im, lab, m
    return images, labels, masks


def iter_signs(n: int, seed: int, size: int = 64):
    """Streaming form of :func:`make_signs` (identical images): yields ``(image uint8
    (size,size,3), label int, mask bool (size,size))`` without holding the set."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(GTSRB_LABELS), size=n).astype(np.int64)
    for i in range(n):
        bg = _random_background(rng, size)
        sign, alpha = _sign_layer(rng, int(labels[i]), size)
        img = bg * (1 - alpha[..., None]) + sign * alpha[..., None]
        yield _finish(rng, img), int(labels[i]), alpha >= 0.5


# ----------------------------------------------------------------------------- poles
_POLE_STYLE = {  # base colour, width range (fraction of size)
    0: ((185, 180, 170), (0.16, 0.22)),   # concrete: light, wide, speckled, rings
    1: ((95, 110, 130), (0.08, 0.12)),    # steel: blue-grey, thin, vertical highlight, crossarm
    2: ((105, 70, 40), (0.12, 0.18)),     # tree: brown, bark streaks
}


def _pole_layer(rng, label, size, weak):
    base, (w0, w1) = _POLE_STYLE[label]
    if weak:  # clever-Hans variant: similar widths, colours pulled toward one grey, faint texture
        w0, w1 = 0.11, 0.15
        base = tuple(0.35 * np.asarray(base) + 0.65 * np.asarray((130, 125, 120)))
    w = max(3, int(round(rng.uniform(w0, w1) * size)))
    x0 = int(rng.integers(2, size - w - 2))
    top = int(rng.integers(0, size // 6))
    col = np.asarray(base, np.float32) + rng.normal(0, 8, 3)
    H = size - top
    u = (np.arange(w, dtype=np.float32) + 0.5) / w  # across the pole
    shade = 0.75 + 0.35 * np.sin(np.pi * u)  # cylinder shading
    tex_amp = 0.35 if weak else 1.0
    patch = np.ones((H, w, 1), np.float32) * col * shade[None, :, None]
    if label == 0:
        patch += rng.normal(0, 14 * tex_amp, (H, w, 1))  # speckle
        for yy in range(int(rng.integers(3, 8)), H, int(rng.integers(9, 15))):
            patch[yy:yy + 1] -= 35 * tex_amp  # formwork rings
    elif label == 1:
        hl = int(w * rng.uniform(0.3, 0.6))
        patch[:, hl:hl + max(1, w // 4)] += 70 * tex_amp  # specular highlight
    else:
        streaks = rng.normal(0, 1, (1, w, 1)).repeat(H, 0)
        streaks += rng.normal(0, 0.5, (H, w, 1))
        patch += streaks * 22 * tex_amp
    rgb = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)
    rgb[top:, x0:x0 + w] = patch
    alpha[top:, x0:x0 + w] = 1
    if label == 1 and not weak:  # crossarm
        ay = top + int(rng.integers(2, 6))
        a0, a1 = max(0, x0 - w), min(size, x0 + 2 * w)
        rgb[ay:ay + 2, a0:a1] = col * 1.1
        alpha[ay:ay + 2, a0:a1] = 1
    return np.clip(rgb, 0, 255), alpha


def make_poles(n: int, seed: int, size: int = 64, biased: bool = False, swap_background: bool = False):
    """-> images uint8 (n,size,size,3) RGB, labels int64 (n,) over POLE_LABELS, masks bool.

    Backgrounds: ``biased=False`` -> family uniform over BACKGROUND_FAMILIES, independent
    of the class. ``biased=True`` -> the class's family (concrete: urban, steel: sky,
    tree: forest) with probability 0.95, else another family; the pole cue is weakened.
    ``swap_background=True`` -> always the family of a *different* class (overrides the
    correlation; combine with ``biased=True`` to test the clever-Hans model on the same
    weakened poles). ``iter_poles`` yields the same images one at a time."""
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    labels = np.empty(n, np.int64)
    for i, (im, lab, m) in enumerate(iter_poles(n, seed, size, biased, swap_background)):
        images[i], labels[i], masks[i] = im, lab, m
    return images, labels, masks


def iter_poles(n: int, seed: int, size: int = 64, biased: bool = False, swap_background: bool = False):
    """Streaming form of :func:`make_poles` (identical images): yields ``(image, label, mask)``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(POLE_LABELS), size=n).astype(np.int64)
    for i in range(n):
        c = int(labels[i])
        if swap_background:
            others = [POLE_FAMILY[k] for k in POLE_FAMILY if k != c]
            fam = others[int(rng.integers(len(others)))]
        elif biased:
            if rng.random() < 0.95:
                fam = POLE_FAMILY[c]
            else:
                rest = [f for f in BACKGROUND_FAMILIES if f != POLE_FAMILY[c]]
                fam = rest[int(rng.integers(len(rest)))]
        else:
            fam = BACKGROUND_FAMILIES[int(rng.integers(len(BACKGROUND_FAMILIES)))]
        bg = _family_background(rng, size, fam)
        pole, alpha = _pole_layer(rng, c, size, weak=biased)
        img = bg * (1 - alpha[..., None]) + pole * alpha[..., None]
        yield _finish(rng, img, blur_max=0.6, noise_max=5.0), c, alpha >= 0.5


# ----------------------------------------------------------------------------- saving
def save_dataset(directory, images, labels, masks, label_names) -> Path:
    """Write ``images/NNNNN.png``, ``masks/NNNNN.png`` (0/255) and ``labels.csv``
    (columns: image, mask, label, label_name). Returns the directory."""
    d = Path(directory)
    (d / "images").mkdir(parents=True, exist_ok=True)
    (d / "masks").mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(images))))
    with open(d / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask", "label", "label_name"])
        for i, (im, lb, mk) in enumerate(zip(images, labels, masks)):
            name = f"{i:0{width}d}.png"
            Image.fromarray(np.asarray(im, np.uint8)).save(d / "images" / name)
            Image.fromarray(np.asarray(mk, bool).astype(np.uint8) * 255).save(d / "masks" / name)
            w.writerow([f"images/{name}", f"masks/{name}", int(lb), label_names[int(lb)]])
    return d
