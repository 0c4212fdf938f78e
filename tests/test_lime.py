"""LIME: equivalence with the real ``lime`` package, determinism, outputs."""
from __future__ import annotations

import numpy as np
import pytest

from _pertnets import TorchBlackBox, make_textures, train_tiny
from xaudit.errors import XauditError
from xaudit.explainers import get_explainer
from xaudit.explainers.base import Explanation
from xaudit.explainers.lime import Lime, cosine_to_ones, weighted_ridge

SLIC = {"segmentation": "slic", "segmentation_params": {"n_segments": 25}}


@pytest.fixture(scope="module")
def model():
    return TorchBlackBox(train_tiny())


@pytest.fixture(scope="module")
def images():
    return make_textures(20, seed=7)[0]


def test_matches_lime_image_top5_on_20_images(model, images):
    from lime import lime_image
    jac = []
    for i, img in enumerate(images):
        exp = Lime(seed=i, num_samples=500, **SLIC).explain(model, img)
        segs = exp.arrays["segments"]
        ref = lime_image.LimeImageExplainer(random_state=i).explain_instance(
            img.astype(np.float64), lambda b: model.predict(b.astype(np.float32)), labels=(exp.target,),
            top_labels=None, hide_color=None, num_samples=500, batch_size=100,
            segmentation_fn=lambda _im: segs, random_seed=i)  # random_seed given: lime draws no seed from its stream
        w = np.zeros(segs.max() + 1)
        for f, v in ref.local_exp[exp.target]:
            w[f] = v
        a, b = set(np.argsort(-exp.arrays["weights"])[:5]), set(np.argsort(-w)[:5])
        jac.append(len(a & b) / len(a | b))
        assert abs(ref.score - exp.meta["r2"]) < 1e-3  # same samples; float32 vs float64 pixels
    assert np.mean(jac) >= 0.9, jac


def test_weighted_ridge_matches_sklearn():
    from sklearn.linear_model import Ridge
    rng = np.random.default_rng(0)
    X = rng.integers(0, 2, (200, 12)).astype(float)
    y = X @ rng.normal(size=12) + rng.normal(0, 0.1, 200)
    w = rng.random(200)
    coef, b, r2 = weighted_ridge(X, y, w, 1.0)
    ref = Ridge(alpha=1.0).fit(X, y, sample_weight=w)
    assert np.allclose(coef, ref.coef_, atol=1e-8) and abs(b - ref.intercept_) < 1e-8
    assert abs(r2 - ref.score(X, y, sample_weight=w)) < 1e-10
    from sklearn.metrics import pairwise_distances
    assert np.allclose(cosine_to_ones(X), pairwise_distances(X, np.ones((1, 12)), metric="cosine").ravel())


def test_outputs_determinism_and_seeds(model, images, tmp_path):
    img = images[0].copy()
    e1 = Lime(seed=3, num_samples=300, **SLIC).explain(model, img)
    e2 = Lime(seed=3, num_samples=300, **SLIC).explain(model, img)
    e3 = Lime(seed=4, num_samples=300, **SLIC).explain(model, img)
    assert np.array_equal(e1.attribution, e2.attribution)
    assert not np.array_equal(e1.arrays["weights"], e3.arrays["weights"])
    assert np.array_equal(img, images[0])
    assert e1.model_calls == 300
    k = e1.arrays["segments"].max() + 1
    assert e1.arrays["weights"].shape == (k,)
    assert np.allclose(e1.attribution, e1.arrays["weights"][e1.arrays["segments"]])
    assert -1 <= e1.meta["r2"] <= 1 and "intercept" in e1.meta
    d = e1.save(tmp_path / "x")
    assert (d / "segments.npy").exists() and (d / "weights.npy").exists()
    back = Explanation.load(d)
    assert np.array_equal(back.arrays["segments"], e1.arrays["segments"]) and back.meta["r2"] == e1.meta["r2"]


def test_vary_modes(model, images):
    img = images[1]
    qs = {"segmentation": "quickshift", "segmentation_params": {"kernel_size": 2}, "num_samples": 200}
    a = Lime(seed=1, vary="sampling", **qs).explain(model, img)
    b = Lime(seed=2, vary="sampling", **qs).explain(model, img)
    assert np.array_equal(a.arrays["segments"], b.arrays["segments"])
    assert not np.array_equal(a.arrays["weights"], b.arrays["weights"])
    c = Lime(seed=1, vary="segmentation", **qs).explain(model, img)
    assert c.meta["seeds"] == {"segmentation": 1, "sampling": 0}


@pytest.mark.parametrize("seg", ["quickshift", "slic", "felzenszwalb"])
def test_segmentations_and_registry(model, images, seg):
    e = get_explainer("lime", segmentation=seg, num_samples=50).explain(model, images[2])
    assert e.method == "lime" and e.attribution.shape == model.input_size


def test_bad_parameters(model, images):
    with pytest.raises(XauditError):
        Lime(bogus=1)
    with pytest.raises(XauditError):
        Lime(segmentation="watershed").explain(model, images[0])
    with pytest.raises(XauditError):
        Lime(vary="nothing").explain(model, images[0])
    with pytest.raises(XauditError):
        Lime(segmentation="slic", segmentation_params={"nope": 3}).explain(model, images[0])
