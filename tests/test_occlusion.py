"""Occlusion: windows, baselines, batching, evidence where the model looks."""
from __future__ import annotations

import numpy as np
import pytest

from _pertnets import TorchBlackBox, make_textures, train_tiny
from xaudit.errors import XauditError
from xaudit.explainers.occlusion import Occlusion


@pytest.fixture(scope="module")
def model():
    return TorchBlackBox(train_tiny())


def test_evidence_on_the_textured_patch(model):
    imgs, labels, masks = make_textures(6, seed=21)
    inside, outside = [], []
    for img, m in zip(imgs, masks):
        e = Occlusion(window=6, stride=2, baseline="mean").explain(model, img)
        inside.append(e.attribution[m].mean())
        outside.append(e.attribution[~m].mean())
    assert np.mean(inside) > np.mean(outside)


@pytest.mark.parametrize("baseline", ["black", "mean", "blur", 0.5])
def test_baselines_and_batching(model, baseline):
    img = make_textures(1, seed=5)[0][0]
    a = Occlusion(window=8, stride=4, baseline=baseline, batch_size=256).explain(model, img)
    b = Occlusion(window=8, stride=4, baseline=baseline, batch_size=3).explain(model, img)
    assert np.allclose(a.attribution, b.attribution, atol=1e-6)
    n = a.meta["windows"]
    assert n == 7 * 7 and a.model_calls == n + 1


def test_bad_parameters(model):
    img = make_textures(1, seed=5)[0][0]
    with pytest.raises(XauditError):
        Occlusion(baseline="purple").explain(model, img)
    with pytest.raises(XauditError):
        Occlusion(window=0).explain(model, img)
    with pytest.raises(XauditError):
        Occlusion(colour=1)
