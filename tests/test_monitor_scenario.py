"""The adversarial drift scenario end to end (xaudit.monitoring.scenario) on a small sign-like
model trained in the fixture: 16 coloured-disc "signs" with ground-truth masks, a BatchNorm
ResNet saved as TorchScript (+ sidecar), real ``xaudit serve`` subprocess over loopback,
``monitor`` per window, ``audit``, FullGrad mask shares. Independent of the shipped assets."""
from __future__ import annotations

import colorsys
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))

from _gradnets import ResNet  # noqa: E402

SIZE = 32
NCLS = 16
TARGET = 14


def toy_signs(n, seed, size=SIZE, classes=NCLS):
    """Coloured discs (class = hue) on a noisy grey background; masks = the discs."""
    rng = np.random.default_rng(seed)
    pal = np.array([colorsys.hsv_to_rgb(h, 0.9, 0.95) for h in np.linspace(0, 1, classes, endpoint=False)]) * 255
    labels = rng.integers(0, classes, n)
    yy, xx = np.mgrid[:size, :size]
    imgs = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    for i in range(n):
        img = np.clip(rng.normal(110, 25, 3) + rng.normal(0, 12, (size, size, 3)), 0, 255)
        r = rng.uniform(size * 0.2, size * 0.32)
        cy, cx = rng.uniform(r, size - r, 2)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[m] = np.clip(pal[labels[i]] + rng.normal(0, 10, (int(m.sum()), 3)), 0, 255)
        imgs[i], masks[i] = img, m
    return imgs, labels, masks


@pytest.fixture(scope="module")
def sign_model(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("signs")
    net = ResNet(n=NCLS, w=8, seed=0)
    x, y, _ = toy_signs(1024, 1)
    X = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    Y = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(150):
        idx = torch.randint(0, len(X), (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(net(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    path = d / "toysigns.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    (d / "toysigns.json").write_text(json.dumps({"input_size": [SIZE, SIZE],
                                                  "labels": [f"sign{i}" for i in range(NCLS)]}))
    return path


def test_targeted_deepfool_is_small_and_succeeds(sign_model):
    from xaudit.loader import load_model
    from xaudit.monitoring.scenario import targeted_deepfool
    model = load_model(str(sign_model))
    imgs, labels, _ = toy_signs(40, 5)
    imgs = imgs[labels != TARGET][:24]
    adv, ok, l2, linf = targeted_deepfool(model, imgs, TARGET, max_iter=100)
    assert ok.mean() >= 0.8  # this hue classifier is robust: some discs need large colour changes
    pred = model.predict(model.preprocess_batch(list(adv))).argmax(1)
    assert np.array_equal(pred == TARGET, ok)  # success is judged on the 8-bit images actually sent
    assert np.all(l2[ok] > 0) and np.all(linf <= 1.0)


def test_scenario_flags_target_in_adversarial_window_only(sign_model, tmp_path):
    from xaudit.monitoring.scenario import run_scenario
    imgs, labels, masks = toy_signs(240, 7)
    ref, _, _ = toy_signs(200, 8)
    r = run_scenario(sign_model, tmp_path / "out", imgs, labels, masks, ref, target=TARGET, n_clean=80,
                     n_mixed=160, explain=2, say=lambda *a: None)
    mon = r["monitor"]
    assert mon["clean"]["exit_code"] == 0 and not mon["clean"]["target_flagged"], mon["clean"]
    assert mon["adversarial"]["exit_code"] == 3 and mon["adversarial"]["target_flagged"], mon["adversarial"]
    assert r["pass"] is True
    # 50 % capture: totals are captured records, within loose binomial bounds
    assert 20 <= mon["clean"]["total"] <= 60 and 50 <= mon["adversarial"]["total"] <= 110
    assert r["audit_exit_code"] == 3
    audit = json.loads((tmp_path / "out" / "audit" / "audit.json").read_text())
    assert TARGET in [c["class_index"] for c in audit["classes"]]
    assert (tmp_path / "out" / "audit" / "audit.png").stat().st_size > 0
    for kind in ("clean", "adversarial"):
        ms = r["mask_share"][kind]
        assert ms["n"] > 0 and 0.0 <= ms["mean"] <= 1.0
    saved = json.loads((tmp_path / "out" / "adversarial_drift.json").read_text())
    assert saved["pass"] is True
