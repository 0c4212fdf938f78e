"""Contract of every registered explainer on every adapter we can build here:
explain_batch == singles, same seed -> identical, global RNGs untouched, input not
mutated, torch hooks released. Methods whose module is not there yet are skipped."""
from __future__ import annotations

import importlib
import random

import numpy as np
import pytest
import torch

from _gradnets import OnnxModel, ResNet, TorchModel, export_onnx
from _pertnets import TorchBlackBox, make_textures, train_tiny
from xaudit.explainers import METHODS, get_explainer

FAST = {
    "lime": {"num_samples": 80, "segmentation": "slic", "segmentation_params": {"n_segments": 12}},
    "anchors": {"segmentation": "slic", "segmentation_params": {"n_segments": 10}, "batch_size": 20,
                "min_samples_start": 20, "coverage_samples": 500},
    "occlusion": {"window": 8, "stride": 8},
    "ig": {"steps": 8},
}


def _available(name):
    mod, _ = METHODS[name]
    try:
        importlib.import_module(mod)
        return True
    except ModuleNotFoundError as e:
        if e.name == mod:
            return False
        raise


@pytest.fixture(scope="module")
def adapters():
    net = ResNet(n=3, seed=2)
    return {"torch": TorchModel(net, input_size=(32, 32)),
            "onnx": OnnxModel(export_onnx(net, (32, 32)), input_size=(32, 32)),
            "blackbox": TorchBlackBox(train_tiny())}


@pytest.fixture(scope="module")
def imgs():
    return make_textures(2, seed=3)[0]


def _rng_state():
    return (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())


def _hooks(model):
    mod = getattr(model, "module", None)
    if mod is None:
        return 0
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(getattr(m, "_forward_pre_hooks", {}))
               + len(getattr(m, "_full_backward_hooks", []) or [])
               for m in mod.modules())


@pytest.mark.parametrize("adapter", ["torch", "onnx", "blackbox"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_contract(method, adapter, adapters, imgs):
    if not _available(method):
        pytest.skip(f"{method} not implemented yet")
    model = adapters[adapter]
    ex = get_explainer(method, **FAST.get(method, {}))
    if ex.needs_gradients and not model.gradients_reachable:
        pytest.skip(f"{adapter} has no gradients")
    before_imgs = imgs.copy()
    state = _rng_state()
    hooks0 = _hooks(model)
    singles = [ex.explain(model, im) for im in imgs]
    batch = ex.explain_batch(model, list(imgs))
    again = get_explainer(method, **FAST.get(method, {})).explain(model, imgs[0])
    # batch invariance and determinism per seed
    for s, b in zip(singles, batch):
        assert np.array_equal(s.attribution, b.attribution) and s.target == b.target
    assert np.array_equal(singles[0].attribution, again.attribution)
    # hygiene
    assert np.array_equal(imgs, before_imgs)
    after = _rng_state()
    assert after[0] == state[0]
    assert np.array_equal(after[1], state[1])
    assert torch.equal(after[2], state[2])
    assert _hooks(model) == hooks0
    assert singles[0].attribution.shape == model.input_size
    assert np.isfinite(singles[0].attribution).all()
    if ex.uses_seed:
        other = ex.clone(seed=(ex.seed or 0) + 1).explain(model, imgs[0])
        assert other.seed != singles[0].seed
