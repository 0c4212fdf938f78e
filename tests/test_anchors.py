"""Anchors: precision of the returned anchor on fresh samples, outputs, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from _pertnets import TorchBlackBox, make_textures, train_tiny
from xaudit.errors import XauditError
from xaudit.explainers.anchors import Anchors, kl_lower, kl_upper, precision_of

SLIC = {"segmentation": "slic", "segmentation_params": {"n_segments": 40}}


@pytest.fixture(scope="module")
def model():
    return TorchBlackBox(train_tiny())


@pytest.fixture(scope="module")
def images():
    return make_textures(6, seed=11)[0]


def test_kl_bounds():
    p = np.array([0.5, 0.9, 0.99])
    lv = np.array([0.05, 0.05, 0.05])
    lo, hi = kl_lower(p, lv), kl_upper(p, lv)
    assert np.all(lo < p) and np.all(hi > p) and np.all(hi <= 1) and np.all(lo >= 0)
    assert kl_lower(np.array([0.9]), np.array([0.001]))[0] > kl_lower(np.array([0.9]), np.array([0.1]))[0]


@pytest.mark.parametrize("i", range(4))
def test_anchor_precision_on_fresh_samples(model, images, i):
    exp = Anchors(seed=i, **SLIC).explain(model, images[i])
    fresh = precision_of(model, exp.image, exp.meta["anchor"], exp.arrays["segments"], exp.target, n=1000,
                         seed=1000 + i)
    assert exp.meta["success"]
    assert fresh >= 0.95 - 0.05, (fresh, exp.meta)
    mask = exp.arrays["anchor_mask"]
    assert mask.dtype == bool and mask.shape == model.input_size
    assert np.array_equal(mask, np.isin(exp.arrays["segments"], exp.meta["anchor"]))
    assert np.array_equal(exp.attribution, mask.astype(np.float32))
    assert 0 < exp.meta["coverage"] <= 1 and exp.model_calls > 0


def test_outputs_files_and_determinism(model, images, tmp_path):
    img = images[4].copy()
    a = Anchors(seed=5, **SLIC).explain(model, img)
    b = Anchors(seed=5, **SLIC).explain(model, img)
    assert np.array_equal(img, images[4])
    assert a.meta["anchor"] == b.meta["anchor"] and a.model_calls == b.model_calls
    assert np.array_equal(a.attribution, b.attribution)
    d = a.save(tmp_path / "a")
    for f in ("anchor_mask.npy", "segments.npy", "overlay.png", "explanation.json"):
        assert (d / f).exists(), f
    if len(a.arrays["examples"]):
        assert (d / "examples.png").stat().st_size > 1000


def test_background_images(model, images):
    bgs = make_textures(3, seed=99)[0]
    e = Anchors(seed=1, backgrounds=bgs, **SLIC).explain(model, images[5])
    fresh = precision_of(model, e.image, e.meta["anchor"], e.arrays["segments"], e.target, n=1000,
                         backgrounds=bgs)
    assert fresh >= 0.9
    with pytest.raises(XauditError):
        Anchors(backgrounds=np.zeros((2, 5, 5, 3))).explain(model, images[0])


def test_bad_parameters(model, images):
    with pytest.raises(XauditError):
        Anchors(nope=1)
    with pytest.raises(XauditError):
        Anchors(threshold=1.5).explain(model, images[0])
