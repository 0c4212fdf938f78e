"""Evidence tests for FullGrad / Grad-CAM / IG on torch, TorchScript and ONNX (real
onnxruntime, real exports; small models built here)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from _gradnets import OnnxModel, ResNet, TorchModel, export_onnx, script
from xaudit.errors import UnsupportedOperation
from xaudit.explainers import get_explainer
from xaudit.model import Preprocessing

PP = Preprocessing(mean=(0.5, 0.45, 0.4), std=(0.25, 0.25, 0.3))


@pytest.fixture(scope="module")
def img():
    return np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def bn_net():
    return ResNet(bn=True, seed=0)


@pytest.fixture(scope="module")
def plain_net():
    return ResNet(bn=False, seed=1)


def _fg(model, image, target=None):
    return get_explainer("fullgrad").explain(model, image, target)


# ------------------------------------------------------------------ completeness
@pytest.mark.parametrize("kind", ["torch", "torchscript", "onnx"])
@pytest.mark.parametrize("bn", [True, False])
def test_fullgrad_completeness(kind, bn, bn_net, plain_net, img):
    net = bn_net if bn else plain_net
    model = {"torch": lambda: TorchModel(net, preprocessing=PP),
             "torchscript": lambda: TorchModel(script(net), preprocessing=PP),
             "onnx": lambda: OnnxModel(export_onnx(net), preprocessing=PP)}[kind]()
    for target in (None, 0, 3):
        e = _fg(model, img, target)
        assert e.meta["completeness_error"] <= 1e-4, (kind, bn, target, e.meta)
        assert e.meta["score"] == "logit"
        assert e.meta["spatial_bias_layers"] >= 5
    if bn and kind == "torch":  # BN implicit biases are bias layers of their own
        kinds = {b.kind for b in model.differentiable().bias_layers}
        assert "batchnorm" in kinds
    e = _fg(model, img)
    assert e.attribution.shape == (32, 32) and e.attribution.dtype == np.float32
    assert np.isfinite(e.attribution).all() and e.attribution.max() > 0
    assert e.model_calls == 2  # one forward (also gives the prediction) + one backward


def test_fullgrad_onnx_equals_torch_bn_free(plain_net, img):
    a = _fg(TorchModel(plain_net, preprocessing=PP), img).attribution
    b = _fg(OnnxModel(export_onnx(plain_net), preprocessing=PP), img).attribution
    c = _fg(TorchModel(script(plain_net), preprocessing=PP), img).attribution
    assert np.abs(a - b).max() <= 1e-4
    assert np.abs(a - c).max() <= 1e-4


def test_trailing_softmax_uses_logits(img):
    logits_net = ResNet(bn=True, seed=3)
    sm_net = ResNet(bn=True, seed=3, softmax=True)
    ref = _fg(TorchModel(logits_net, preprocessing=PP), img)
    for m in (TorchModel(sm_net, preprocessing=PP), TorchModel(script(sm_net), preprocessing=PP),
              OnnxModel(export_onnx(sm_net), preprocessing=PP)):
        e = _fg(m, img)
        assert e.meta["score"] == "logit"
        assert abs(e.meta["target_logit"] - ref.meta["target_logit"]) < 1e-4
        assert e.meta["completeness_error"] <= 1e-4
        assert np.abs(e.attribution - ref.attribution).max() <= 1e-3


# ------------------------------------------------------------------ hooks, determinism, hygiene
class _Boom(ResNet):
    boom = False

    def forward(self, x):
        y = super().forward(x)
        if self.boom and torch.is_grad_enabled():
            raise RuntimeError("boom")
        return y


def test_hooks_removed_also_on_error(img):
    net = _Boom(bn=True, seed=2)
    model = TorchModel(net, preprocessing=PP)
    diff = model.differentiable()
    before = diff.hook_count()
    _fg(model, img)
    get_explainer("gradcam").explain(model, img)
    assert diff.hook_count() == before == 0
    net.boom = True
    with pytest.raises(RuntimeError, match="boom"):
        _fg(model, img)
    with pytest.raises(RuntimeError, match="boom"):
        get_explainer("gradcam").explain(model, img)
    assert diff.hook_count() == before
    net.boom = False


def test_deterministic_no_rng_no_mutation(bn_net, img):
    model = TorchModel(bn_net, preprocessing=PP)
    x = img.copy()
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state().clone())
    for name, kw in (("fullgrad", {}), ("gradcam", {}), ("ig", {"steps": 8})):
        a = get_explainer(name, **kw).explain(model, x).attribution
        b = get_explainer(name, **kw).explain(model, x).attribution
        assert np.array_equal(a, b), name
    assert np.array_equal(x, img)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.random.get_rng_state(), states[2])


def test_model_calls_counted(bn_net, img):
    model = TorchModel(bn_net, preprocessing=PP)
    assert get_explainer("gradcam").explain(model, img).model_calls == 2
    assert get_explainer("ig", steps=10).explain(model, img).model_calls == 1 + 20


def test_no_gradients_raises(img):
    class Black(TorchModel):
        def _check_gradients(self):
            return False, "black box"
    m = Black(ResNet(seed=4), preprocessing=PP)
    for name in ("fullgrad", "gradcam", "ig"):
        with pytest.raises(UnsupportedOperation, match="black box"):
            get_explainer(name).explain(m, img)


# ------------------------------------------------------------------ Grad-CAM
def test_gradcam_matches_captum(bn_net, img):
    from captum.attr import LayerGradCam

    from xaudit.explainers.gradcam import gradcam_map
    from xaudit.white_box import canonical_tensor
    model = TorchModel(bn_net, preprocessing=PP)
    diff = model.differentiable()
    x = canonical_tensor(img)
    for layer, mod in (("layer2", bn_net.layer2), ("layer1", bn_net.layer1), ("layer2.c1", bn_net.layer2.c1)):
        for target in (0, 2):
            ours, name = gradcam_map(diff, x, target, layer)
            ref = LayerGradCam(bn_net, mod).attribute(PP.apply(x), target=target, relu_attributions=True)
            assert ours.shape == ref[:, 0].shape
            assert torch.allclose(ours, ref[:, 0].detach(), atol=1e-5, rtol=1e-4), layer
    e = get_explainer("gradcam").explain(model, img)
    assert e.meta["layer"] == "layer2"  # last module with a spatial output
    assert e.attribution.shape == (32, 32)
    # the same map through the ONNX executor (node output name) and TorchScript
    ref_map = e.attribution
    om = OnnxModel(export_onnx(bn_net), preprocessing=PP)
    eo = get_explainer("gradcam").explain(om, img)
    assert np.abs(eo.attribution - ref_map).max() <= 1e-4 * max(1.0, ref_map.max())
    tsm = TorchModel(script(bn_net), preprocessing=PP)
    et = get_explainer("gradcam").explain(tsm, img)
    assert et.meta["layer"] == "layer2"  # module paths recovered from the TorchScript call stack
    assert np.abs(et.attribution - ref_map).max() <= 1e-4 * max(1.0, ref_map.max())
    e1 = get_explainer("gradcam", layer="layer1").explain(model, img).attribution
    t1 = get_explainer("gradcam", layer="layer1").explain(tsm, img).attribution
    assert np.abs(e1 - t1).max() <= 1e-4 * max(1.0, e1.max())
    with pytest.raises(UnsupportedOperation, match="no layer named"):
        get_explainer("gradcam", layer="nope").explain(model, img)
    with pytest.raises(UnsupportedOperation, match="no layer named"):
        get_explainer("gradcam", layer="nope").explain(om, img)


# ------------------------------------------------------------------ IG
@pytest.mark.parametrize("baseline", ["black", "blurred", "mean"])
def test_ig_baselines_and_delta(plain_net, img, baseline):
    model = TorchModel(plain_net, preprocessing=PP)
    e = get_explainer("ig", baseline=baseline, steps=64).explain(model, img)
    assert e.attribution.shape == (32, 32)
    base = e.arrays["baseline"]
    with torch.no_grad():
        diff = model.differentiable()
        f = diff.logits(torch.from_numpy(np.stack([img, base])))[:, e.target]
    gap = abs(float(f[0] - f[1]))
    assert e.meta["convergence_delta"] <= 0.05 * max(gap, 1e-3)
    assert abs(e.attribution.sum() - float(f[0] - f[1])) <= 0.05 * max(gap, 1e-3) + 1e-4


# ------------------------------------------------------------------ sanity check (Adebayo et al.)
def test_sanity_randomised_weights_change_maps(img):
    from scipy.stats import spearmanr
    trained = ResNet(bn=True, seed=5)
    rand = ResNet(bn=True, seed=6)
    for name in ("fullgrad", "gradcam"):
        a = get_explainer(name).explain(TorchModel(trained, preprocessing=PP), img, target=0).attribution
        b = get_explainer(name).explain(TorchModel(rand, preprocessing=PP), img, target=0).attribution
        rho = spearmanr(a.ravel(), b.ravel()).statistic
        assert rho < 0.5, (name, rho)


def test_concurrent_threads_do_not_mix_recordings(bn_net, img):
    from concurrent.futures import ThreadPoolExecutor
    imgs = [np.random.default_rng(i).random((32, 32, 3), dtype=np.float32) for i in range(6)]
    for model in (TorchModel(bn_net, preprocessing=PP), OnnxModel(export_onnx(bn_net), preprocessing=PP)):
        ref = [get_explainer("fullgrad").explain(model, im).attribution for im in imgs]
        ex = get_explainer("fullgrad")
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(lambda im: ex.explain(model, im).attribution, imgs))
        for a, b in zip(ref, got):
            assert np.abs(a - b).max() <= 1e-5


@pytest.mark.parametrize("softmax", [False, True])
def test_torch_export_program(softmax, img):
    """torch.export programs (ep.module()) hold empty module shells: run as aten graphs."""
    net = ResNet(bn=True, seed=9, softmax=softmax)
    prog = torch.export.export(net, (torch.zeros(2, 3, 32, 32),),
                               dynamic_shapes=({0: torch.export.Dim("n")},)).module()
    a, b = TorchModel(prog, preprocessing=PP), TorchModel(net, preprocessing=PP)
    assert a.differentiable().origin == "torch_export"
    for name in ("fullgrad", "gradcam"):
        ea, eb = get_explainer(name).explain(a, img), get_explainer(name).explain(b, img)
        assert np.abs(ea.attribution - eb.attribution).max() <= 1e-4, name
        if name == "fullgrad":
            assert ea.meta["completeness_error"] <= 1e-4 and ea.meta["score"] == "logit"
        else:
            assert ea.meta["layer"] == eb.meta["layer"] == "layer2"
    from xaudit.white_box.fx import for_fx_module
    static = torch.export.export(net, (torch.zeros(1, 3, 32, 32),)).module()
    assert for_fx_module(static, PP, (32, 32)).fixed_batch == 1


def test_saliency_matches_reference_order(bn_net, img):
    """The map equals the reference post-processing written out literally: per layer abs,
    min-max over (C,H,W), sum over channels, bilinear upsampling (align_corners=True), sum."""
    import torch.nn.functional as F

    from xaudit.explainers.fullgrad import decompose, saliency
    from xaudit.white_box import canonical_tensor
    diff = TorchModel(bn_net, preprocessing=PP).differentiable()
    dec = decompose(diff, canonical_tensor(img), 1)

    def post(t):
        t = t.abs()
        t = t - t.reshape(1, -1).min()
        t = t / (t.reshape(1, -1).max() + 1e-6)
        return t.sum(1, keepdim=True)
    ref = post(dec["input_grad"] * dec["native"])
    for _, t in dec["bias_terms"]:
        if t.ndim == 4:
            ref = ref + F.interpolate(post(t), size=(32, 32), mode="bilinear", align_corners=True)
    ours, used = saliency(dec, 1, (32, 32))
    assert used == sum(t.ndim == 4 for _, t in dec["bias_terms"])
    assert torch.allclose(ours, ref[:, 0], atol=1e-5)
