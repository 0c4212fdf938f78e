"""Evidence on the shipped sign models and the generated sign dataset (ground-truth masks):
completeness, pointing game, sanity check. Skips until the shipped assets exist."""
from __future__ import annotations

import numpy as np
import pytest

generate = pytest.importorskip("xaudit.data.generate")
loader = pytest.importorskip("xaudit.loader")
if not hasattr(loader, "load_model"):
    pytest.skip("xaudit.loader.load_model is not available yet", allow_module_level=True)

from xaudit.explainers import get_explainer  # noqa: E402

N_POINTING = 60
SEED = 2024


def _shipped(name):
    from xaudit import data
    try:
        p = data.model_path(name)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"shipped model {name} not available: {e}")
    from pathlib import Path
    if not Path(p).exists():
        pytest.skip(f"shipped model {name} not available")
    return loader.load_model(str(p))


@pytest.fixture(scope="module")
def signs():
    return generate.make_signs(N_POINTING, seed=SEED)


@pytest.mark.parametrize("name", ["signs.pt", "signs.onnx", "signs_cv", "signs_cv.zip"])
def test_shipped_completeness(name, signs):
    """The shipped BatchNorm ResNet (TorchScript: BN folded by freeze; ONNX / Custom Vision:
    BN folded by the exporter) -- completeness <= 1e-4 through every route."""
    model = _shipped(name)
    assert model.gradients_reachable, model.gradients_reason
    for im in signs[0][:4]:
        e = get_explainer("fullgrad").explain(model, im)
        assert e.meta["completeness_error"] <= 1e-4, (name, e.meta)
        assert e.meta["score"] == "logit"
        assert e.meta["spatial_bias_layers"] >= 5


def test_shipped_formats_agree(signs):
    """TorchScript, ONNX and Custom Vision versions of the sign model give the same map
    (up to BN folding in the bias split)."""
    maps = {n: get_explainer("fullgrad").explain(_shipped(n), signs[0][0], 0).attribution
            for n in ("signs.pt", "signs.onnx", "signs_cv")}
    for n, a in maps.items():
        assert np.corrcoef(a.ravel(), maps["signs.pt"].ravel())[0, 1] > 0.99, n


def pointing_game(model, method, images, labels, masks, tolerance=0, **kw):
    """-> (hit rate over correctly classified images, n correct)."""
    from scipy.ndimage import binary_dilation
    probs = model.predict(model.preprocess_batch(list(images)))
    correct = np.where(probs.argmax(1) == labels)[0]
    ex = get_explainer(method, **kw)
    hits = 0
    for i in correct:
        a = ex.explain(model, images[i], int(labels[i])).attribution
        if method == "ig":
            a = np.abs(a)
        y, x = np.unravel_index(np.argmax(a), a.shape)
        m = masks[i] if not tolerance else binary_dilation(masks[i], iterations=tolerance)
        hits += bool(m[y, x])
    return hits / max(len(correct), 1), len(correct)


N_POINTING_FULL = 200  # 60 images left a standard error of ~4 points around the 90 % target


@pytest.mark.slow
def test_pointing_game_fullgrad():
    """Issue 4: the FullGrad maximum falls inside the sign on >= 90 % of correctly classified
    images (exact mask, no tolerance); Grad-CAM and IG reported alongside (IG on 60 images:
    50 integration steps each)."""
    model = _shipped("signs.pt")
    images, labels, masks = generate.make_signs(N_POINTING_FULL, seed=SEED)
    acc = float((model.predict(model.preprocess_batch(list(images))).argmax(1) == labels).mean())
    if acc < 0.8:
        pytest.skip(f"the shipped sign model is not trained (accuracy {acc:.2f} on generated signs): "
                    "rebuild it with experiments/train_models.py")
    rates = {m: pointing_game(model, m, images, labels, masks) for m in ("fullgrad", "gradcam")}
    rates["ig"] = pointing_game(model, "ig", images[:N_POINTING], labels[:N_POINTING], masks[:N_POINTING])
    print("pointing game on generated signs:", {k: round(v[0], 3) for k, v in rates.items()},
          "correct:", rates["fullgrad"][1])
    assert rates["fullgrad"][1] >= 0.95 * N_POINTING_FULL
    assert rates["fullgrad"][0] >= 0.9, rates
    assert rates["gradcam"][0] >= 0.9 and rates["ig"][0] >= 0.9, rates


def test_sanity_randomised_model(signs):
    """Adebayo et al.: the shipped model with re-randomised weights gives unrelated maps."""
    import torch
    from scipy.stats import spearmanr
    model = _shipped("signs.pt")
    rnd = _shipped("signs.pt")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in rnd.module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (p.std() if p.numel() > 1 else 0.1))
    rhos = []
    for im, lab in zip(signs[0][:8], signs[1][:8]):
        a = get_explainer("fullgrad").explain(model, im, int(lab)).attribution
        b = get_explainer("fullgrad").explain(rnd, im, int(lab)).attribution
        rhos.append(spearmanr(a.ravel(), b.ravel()).statistic)
    print("sanity spearman fullgrad (shipped vs randomised):", np.round(rhos, 3))
    assert np.mean(rhos) < 0.5
