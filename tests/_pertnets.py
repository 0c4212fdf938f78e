"""A small *trained* classifier for the perturbation-explainer tests (built in seconds).

Task: 32x32 images, a textured patch (horizontal stripes / vertical stripes / checks) on
a smooth noisy background; the class is the texture, so the evidence is local and is
destroyed by mean-colour perturbation - LIME and Anchors have something to find.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn as nn

from xaudit.model import Model, Preprocessing

SIZE = 32


def make_textures(n, seed=0, size=SIZE):
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, size, size, 3), np.float32)
    labels = rng.integers(0, 3, n)
    masks = np.zeros((n, size, size), bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        base = rng.random(3) * 0.6 + 0.2
        grad = (yy / size)[..., None] * (rng.random(3) - 0.5) * 0.4
        img = base + grad + rng.normal(0, 0.03, (size, size, 3))
        s = rng.integers(10, 16)
        y0, x0 = rng.integers(0, size - s, 2)
        c = labels[i]
        pat = ((yy // 2) % 2) if c == 0 else ((xx // 2) % 2) if c == 1 else (((yy // 2) + (xx // 2)) % 2)
        col = rng.random(3)
        region = (yy >= y0) & (yy < y0 + s) & (xx >= x0) & (xx < x0 + s)
        img[region] = (col * 0.3 + 0.7 * pat[..., None])[region]
        masks[i] = region
        imgs[i] = np.clip(img, 0, 1)
    return imgs, labels, masks


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                               nn.MaxPool2d(2), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.f(x).amax((2, 3)))


@functools.lru_cache(maxsize=4)
def train_tiny(seed=0, steps=120):
    g = torch.Generator().manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim > 1 else 0.01))
    x, y, _ = make_textures(1024, seed)
    X = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    Y = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for s in range(steps):
            idx = torch.randint(0, len(X), (64,), generator=g)
            loss = nn.functional.cross_entropy(net(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(old)
    return net.eval()


class TorchBlackBox(Model):
    """Minimal black-box adapter over an eager module (logits out)."""

    format = "torch"

    def __init__(self, module, input_size=(SIZE, SIZE), labels=("hstripes", "vstripes", "checks")):
        self.module = module.eval()
        self._setup(source="<tiny texture net>", labels=list(labels), input_size=input_size,
                    preprocessing=Preprocessing(), output_kind="logits", batch_size=64)

    def _forward_native(self, native):
        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(native))).numpy()


class TextureCentre(nn.Module):
    """Hand-built black box that needs *many* superpixels: class 0 ("textured") when the
    centre-weighted share of high-local-variance pixels exceeds ``t0``; class 1 otherwise.
    Mean-colour perturbation removes texture, so an anchor must keep a good part of the
    centre - a non-trivial search (used by the Anchors benchmark). Input NCHW or NHWC."""

    def __init__(self, size=SIZE, t0=0.6, nhwc=False):
        super().__init__()
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        c = (size - 1) / 2
        w = torch.exp(-(((yy - c) ** 2 + (xx - c) ** 2) / (2 * (size / 3) ** 2)))
        self.register_buffer("w", (w / w.sum()).float())
        self.t0, self.nhwc = t0, nhwc

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        m = nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        v = (nn.functional.avg_pool2d(x * x, 3, 1, 1, count_include_pad=False) - m * m).sum(1)
        tex = torch.sigmoid((v - 0.01) * 400)
        t = (tex * self.w).sum((1, 2))
        z = 30 * (t - self.t0)
        return torch.softmax(torch.stack([z, -z], 1), 1)


def make_noise_images(n, seed=0, size=SIZE):
    rng = np.random.default_rng(seed)
    base = rng.random((n, 1, 1, 3)) * 0.5 + 0.25
    return np.clip(base + rng.normal(0, 0.25, (n, size, size, 3)), 0, 1).astype(np.float32)
