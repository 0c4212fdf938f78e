"""Pointing game and model-randomisation sanity check on a model trained here, on a
small synthetic sign-like dataset with ground-truth masks (coloured shapes on noisy,
cluttered backgrounds). Stands in for the shipped sign set (tests/test_gradients_signs.py
asserts the >= 90 % FullGrad target there); numbers are printed (pytest -s) and reported
in docs/gradients.md."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation
from scipy.stats import spearmanr

from _gradnets import ResNet, TorchModel
from xaudit.explainers import get_explainer

pytestmark = pytest.mark.slow  # trains a small model (~20 s alone, minutes on a loaded box)

SIZE = 32
COLOURS = np.array([[0.9, 0.1, 0.1], [0.1, 0.3, 0.9], [0.95, 0.8, 0.1], [0.1, 0.7, 0.2]])


def make_shapes(n, seed, size=SIZE, clutter=3):
    """-> images (n,H,W,3) float32 [0,1], labels, masks: class = shape + colour."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, size, size, 3), np.float32)
    Y = rng.integers(0, 4, n)
    M = np.zeros((n, size, size), bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        base = rng.random(3) * 0.6 + 0.2
        grad = (rng.random((1, 1, 3)) - 0.5) * 0.4
        img = base + grad * (xx[..., None] / size) + rng.normal(0, 0.06, (size, size, 3))
        for _ in range(clutter):
            cy, cx = rng.integers(0, size, 2)
            r = rng.integers(2, 4)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.random(3)
        r = rng.integers(5, 8)
        cy, cx = rng.integers(r + 1, size - r - 1, 2)
        c = Y[i]
        if c == 0:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        elif c == 1:
            m = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        elif c == 2:
            m = (yy - cy <= r) & (yy - cy >= -r) & (abs(xx - cx) <= (yy - cy + r) / 2)
        else:
            m = abs(yy - cy) + abs(xx - cx) <= r
        img[m] = COLOURS[c] + rng.normal(0, 0.03, 3)
        X[i] = np.clip(img, 0, 1)
        M[i] = m
    return X, Y, M


@pytest.fixture(scope="module")
def trained():
    X, Y, _ = make_shapes(1200, 0)
    net = ResNet(bn=True, w=12, seed=0)
    net.train()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    rng = np.random.default_rng(1)
    Xt = torch.from_numpy(X).permute(0, 3, 1, 2).contiguous()
    Yt = torch.from_numpy(Y)
    for _ in range(6):
        perm = rng.permutation(len(X))
        for i in range(0, len(X), 64):
            idx = torch.from_numpy(perm[i:i + 64])
            opt.zero_grad()
            F.cross_entropy(net(Xt[idx]), Yt[idx]).backward()
            opt.step()
    net.eval()
    return net


@pytest.fixture(scope="module")
def val():
    return make_shapes(60, 7)


def pointing(model, method, X, Y, M, tolerance=1):
    pred = model.predict(X).argmax(1)
    ok = np.where(pred == Y)[0]
    hits = 0
    for i in ok:
        a = get_explainer(method).explain(model, X[i], int(Y[i])).attribution
        a = np.abs(a) if method == "ig" else a
        y, x = np.unravel_index(np.argmax(a), a.shape)
        hits += bool(binary_dilation(M[i], iterations=tolerance)[y, x] if tolerance else M[i][y, x])
    return hits / len(ok), len(ok)


def test_pointing_game_trained_model(trained, val):
    X, Y, M = val
    model = TorchModel(trained, input_size=(SIZE, SIZE))
    rates = {m: pointing(model, m, X, Y, M) for m in ("fullgrad", "gradcam", "ig")}
    area = float(binary_dilation(M[0], iterations=1).mean())
    print("pointing game (tolerance 1 px):", {k: round(v[0], 3) for k, v in rates.items()},
          "correct:", rates["fullgrad"][1], "mask area ~", round(area, 3))
    assert rates["fullgrad"][1] >= 0.9 * len(X)       # the model is accurate
    # far above the chance level (mask area ~ 10-20 % of the image)
    assert rates["fullgrad"][0] >= 0.55
    assert rates["gradcam"][0] >= 0.8


def test_sanity_trained_vs_randomised(trained, val):
    """Adebayo et al.: re-initialising all weights must change the maps."""
    X, Y, _ = val
    rand = ResNet(bn=True, w=12, seed=123)
    a_model, r_model = TorchModel(trained, input_size=(SIZE, SIZE)), TorchModel(rand, input_size=(SIZE, SIZE))
    out = {}
    for method in ("fullgrad", "gradcam", "ig"):
        rhos = []
        for i in range(10):
            a = get_explainer(method).explain(a_model, X[i], int(Y[i])).attribution
            b = get_explainer(method).explain(r_model, X[i], int(Y[i])).attribution
            rhos.append(spearmanr(a.ravel(), b.ravel()).statistic)
        out[method] = float(np.mean(rhos))
        assert np.mean(rhos) < 0.5, (method, rhos)
    print("sanity: mean Spearman trained vs randomised:", {k: round(v, 3) for k, v in out.items()})
