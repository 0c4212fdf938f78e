"""Seed-stability sweeps: metrics, files, reuse of work, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _pertnets import TorchBlackBox, make_textures, train_tiny
from xaudit.errors import XauditError
from xaudit.explainers.lime import Lime
from xaudit.stability import DEFAULT_SEEDS, pair_metrics, spearman, stability_sweep, top_pixels

LIME = {"num_samples": 150, "segmentation": "slic", "segmentation_params": {"n_segments": 20}}


@pytest.fixture(scope="module")
def model():
    return TorchBlackBox(train_tiny())


@pytest.fixture(scope="module")
def imgs():
    return make_textures(2, seed=31)[0]


def test_metrics_helpers():
    a = np.arange(100, dtype=float).reshape(10, 10)
    assert spearman(a, a) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert top_pixels(a).sum() == 5


def test_lime_sweep_matches_single_explanations_and_saves(model, imgs, tmp_path):
    seeds = (1, 11, 21)
    before = model.counter.samples
    rep = stability_sweep(model, list(imgs), "lime", seeds=seeds, vary="sampling", **LIME)
    # batched multi-seed path == one explanation per seed
    for s, e in zip(seeds, rep.images[0].explanations):
        single = Lime(seed=s, vary="sampling", **LIME).explain(model, imgs[0])
        assert np.allclose(single.attribution, e.attribution, atol=1e-6)
    # segmentation fixed -> superpixel ids comparable, sign agreement reported
    s = rep.images[0].summary
    for k in ("topk_jaccard", "spearman", "sign_agreement"):
        assert 0 <= s[k]["mean"] <= 1 or k == "spearman"
        assert s[k]["worst"] <= s[k]["mean"] + 1e-12
    assert rep.model_calls <= len(imgs) * (len(seeds) * (150 - 1) + 1) + 2
    d = rep.save(tmp_path / "sweep")
    data = json.loads((d / "stability.json").read_text())
    assert data["seeds"] == list(seeds) and "summary" in data
    assert len(data["images"][0]["pairwise"]["topk_jaccard"]) == 3
    assert (d / "grid.png").exists() and (d / "std.png").exists()
    assert (d / "00-image0" / "seed-11" / "segments.npy").exists()
    assert model.counter.samples > before


def test_vary_segmentation_uses_pixel_regions(model, imgs):
    rep = stability_sweep(model, imgs[0], "lime", seeds=(1, 2), vary="both", num_samples=60,
                          segmentation="quickshift", segmentation_params={"kernel_size": 2})
    s = rep.images[0].summary
    assert "topk_jaccard" in s and "spearman" in s


def test_anchors_and_occlusion_sweeps(model, imgs, tmp_path):
    rep = stability_sweep(model, imgs[0], "anchors", seeds=(1, 11, 21), segmentation="slic",
                          segmentation_params={"n_segments": 20})
    s = rep.images[0].summary
    assert "anchor_jaccard" in s and "precision_spread" in s and s["precision_spread"] >= 0
    rep.save(tmp_path / "a")
    assert (tmp_path / "a" / "seed-21" / "anchor_mask.npy").exists()
    occ = stability_sweep(model, imgs[0], "occlusion", seeds=(1, 2), window=8)
    assert occ.images[0].summary["spearman"]["mean"] == pytest.approx(1.0)


def test_bad_input(model, imgs):
    with pytest.raises(XauditError):
        stability_sweep(model, imgs[0], "lime", seeds=(1,))
    with pytest.raises(XauditError):
        stability_sweep(model, imgs[0], "lime", seeds=(1, 1))
    with pytest.raises(XauditError):
        stability_sweep(model, imgs[0], "lime", vary="x")
    assert DEFAULT_SEEDS == (1, 11, 21, 31, 41, 51, 61, 71, 81)


def test_cli(tmp_path, imgs):
    """End to end through the CLI on a plain ONNX file (black-box path)."""
    from PIL import Image
    import torch
    from xaudit.cli import main
    net = train_tiny()
    onnx_path = tmp_path / "tiny.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(onnx_path), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    img_path = tmp_path / "img.png"
    Image.fromarray((imgs[0] * 255).round().astype(np.uint8)).save(img_path)
    try:
        from xaudit.loader import load_model
        load_model(str(onnx_path))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"ONNX loader not available yet: {e}")
    out = tmp_path / "out"
    rc = main(["--no-track", "stability", str(onnx_path), str(img_path), "--method", "lime", "--seeds", "1,11,21",
               "--num-samples", "100", "--segmentation", "slic", "--out", str(out), "--quiet"])
    assert rc == 0
    assert (out / "stability.json").exists() and (out / "grid.png").exists() and (out / "seed-21").is_dir()
    assert main(["--no-track", "stability", str(onnx_path), str(img_path), "--seeds", "1"]) == 2
    assert main(["--no-track", "stability", str(onnx_path), str(img_path), "--method", "anchors",
                 "--num-samples", "5"]) == 2


def test_cli_tracked_with_model_object(tmp_path, imgs, monkeypatch):
    """The CLI path end to end (progress, files, MLflow parent + one nested run per seed) on a
    real model object; the loader is bypassed only until xaudit.loader.load_model lands."""
    from PIL import Image
    import xaudit.loader
    from xaudit.cli import main
    model = TorchBlackBox(train_tiny())
    monkeypatch.setattr(xaudit.loader, "load_model", lambda src, **kw: model)
    img_path = tmp_path / "pole.png"
    Image.fromarray((imgs[1] * 255).round().astype(np.uint8)).save(img_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    rc = main(["--tracking-uri", uri, "stability", "m.onnx", str(img_path), "--method", "lime", "--seeds", "1,11,21",
               "--num-samples", "80", "--segmentation", "slic", "--out", str(out), "--quiet"])
    assert rc == 0
    data = json.loads((out / "stability.json").read_text())
    assert data["seeds"] == [1, 11, 21] and data["method"] == "lime"
    for f in ("grid.png", "std.png", "seed-1/explanation.json", "seed-21/segments.npy"):
        assert (out / f).exists(), f
    from mlflow.tracking import MlflowClient
    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("xaudit")
    runs = c.search_runs([exp.experiment_id], max_results=50)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    parents = [r for r in runs if not r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and sorted(r.info.run_name for r in children) == ["seed-1", "seed-11", "seed-21"]
    assert any(k.startswith("topk_jaccard") for k in parents[0].data.metrics)
    assert all("target_prob" in r.data.metrics for r in children)
