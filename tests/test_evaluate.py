"""``xaudit evaluate`` / xaudit.evaluation: metric helpers, dataset folders, task units,
CLI files + MLflow, bad input; evidence on the shipped models in test_evaluate_evidence.py."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from xaudit.data import generate, model_path
from xaudit.errors import XauditError
from xaudit.evaluation import (EvalConfig, Task, aggregate, auc, curves, energy_in_mask, evaluate, load_dataset,
                               make_tasks, pixel_order, pointing_hit, randomised_model, read_mask_dir, run_task)


@pytest.fixture(scope="module")
def signs_model():
    import xaudit
    return xaudit.load_model(str(model_path("signs.pt")))


@pytest.fixture(scope="module")
def sign_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("signs-ds")
    ims, labs, masks = generate.make_signs(4, seed=8008)
    generate.save_dataset(d, ims, labs, masks, generate.GTSRB_LABELS)
    return d


# ----------------------------------------------------------------------------- metric helpers
def test_pointing_and_energy():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    a = np.zeros((4, 4))
    a[0, 0] = 1.0
    assert pointing_hit(a, mask) == 1.0
    a[3, 3] = 2.0
    assert pointing_hit(a, mask) == 0.0
    tie = np.zeros((4, 4))
    tie[0, :] = 1.0                       # 4 maximal pixels, 2 inside the mask
    assert pointing_hit(tie, mask) == 0.5
    e = np.zeros((4, 4))
    e[0, 0], e[3, 3], e[1, 1] = 3.0, 1.0, -5.0   # negative attribution ignored
    assert energy_in_mask(e, mask) == pytest.approx(0.75)
    assert np.isnan(energy_in_mask(-np.ones((4, 4)), mask))


def test_pixel_order_ties_are_seeded():
    imp = np.zeros((8, 8))
    imp[2, 3] = 5
    o1 = pixel_order(imp, np.random.default_rng(0))
    o2 = pixel_order(imp, np.random.default_rng(0))
    o3 = pixel_order(imp, np.random.default_rng(1))
    assert o1[0] == 2 * 8 + 3 and np.array_equal(o1, o2) and not np.array_equal(o1, o3)
    assert sorted(o1.tolist()) == list(range(64))


def test_curves_endpoints(signs_model):
    ims, labs, _ = generate.make_signs(1, seed=8008)
    x = signs_model.preprocess(ims[0])
    cfg = EvalConfig(steps=8)
    order = np.arange(64 * 64)
    frac, d, i = curves(signs_model, x, int(labs[0]), order, cfg)
    p0 = signs_model.predict(x[None])[0, int(labs[0])]
    assert frac[0] == 0 and frac[-1] == 1 and len(d) == len(i) == 9
    assert d[0] == pytest.approx(p0, abs=1e-5) and i[-1] == pytest.approx(p0, abs=1e-5)
    assert d[-1] == pytest.approx(i[0], abs=1e-5)       # both ends are the blurred image
    assert auc(frac, np.ones(9)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- datasets
def test_read_mask_dir_reads_save_dataset(signs_model, sign_dir):
    ds = read_mask_dir(sign_dir, signs_model)
    ims, labs, masks = generate.make_signs(4, seed=8008)
    assert len(ds) == 4 and ds.labels == [int(v) for v in labs]
    assert all(np.array_equal(a, b) for a, b in zip(ds.masks, masks))
    assert np.allclose(ds.images[0], ims[0] / 255.0, atol=1e-6)
    ds2 = load_dataset(str(sign_dir), signs_model, n=2)
    assert len(ds2) == 2


def test_generated_datasets_fixed_seed(signs_model):
    a = load_dataset("signs", signs_model, n=3, backgrounds=0)
    b = load_dataset("signs", signs_model, n=3, backgrounds=2)
    assert a.source["seed"] == 8008 and np.array_equal(a.images[0], b.images[0])
    assert b.backgrounds.shape == (2, 64, 64, 3) and a.backgrounds is None
    p = load_dataset("poles", signs_model, n=2, backgrounds=0)
    assert p.source["variant"] == "biased" and p.source["seed"] == 9009


def test_folder_without_labels_and_resized_masks(signs_model, tmp_path):
    from PIL import Image
    (tmp_path / "masks").mkdir()
    img = np.zeros((128, 128, 3), np.uint8)
    img[32:96, 32:96] = 200
    m = np.zeros((128, 128), np.uint8)
    m[32:96, 32:96] = 255
    Image.fromarray(img).save(tmp_path / "a.png")          # images directly in DIR
    Image.fromarray(m).save(tmp_path / "masks" / "a.png")
    ds = read_mask_dir(tmp_path, signs_model)
    assert ds.labels == [None] and ds.masks[0].shape == (64, 64)
    assert ds.masks[0][16:48, 16:48].all() and not ds.masks[0][:15].any()


@pytest.mark.parametrize("layout, message", [
    ("no-masks", "no masks/ folder"), ("missing-mask", "has no mask"), ("bad-csv", "columns 'image' and 'label'"),
    ("no-images", "holds no images"), ("bad-label", "unknown target"),
])
def test_bad_layouts(signs_model, tmp_path, layout, message):
    from PIL import Image
    d = tmp_path / "ds"
    (d / "images").mkdir(parents=True)
    if layout != "no-masks":
        (d / "masks").mkdir()
    if layout != "no-images":
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(d / "images" / "x.png")
        if layout not in ("missing-mask", "no-masks"):
            Image.fromarray(np.zeros((64, 64), np.uint8)).save(d / "masks" / "x.png")
    if layout == "bad-csv":
        (d / "labels.csv").write_text("file,class\nx.png,1\n")
    if layout == "bad-label":
        (d / "labels.csv").write_text("image,label\nimages/x.png,not-a-sign\n")
    with pytest.raises(XauditError, match=message):
        load_dataset(str(d), signs_model, n=5)
    from xaudit.cli import main
    assert main(["--no-track", "evaluate", str(model_path("signs.pt")), "--dataset", str(d), "--n", "2",
                 "--methods", "fullgrad", "--quiet"]) == 2


# ----------------------------------------------------------------------------- tasks
def _same(a, b):
    if isinstance(a, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (np.ndarray, list)):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def test_tasks_pure_picklable_and_deterministic(signs_model, sign_dir):
    ds = read_mask_dir(sign_dir, signs_model)
    cfg = EvalConfig(steps=8, random_orders=2, sanity_n=1, stability_n=1, seeds=(1, 11),
                     method_params={"lime": {"num_samples": 40}})
    targets = signs_model.predict(np.stack(ds.images)).argmax(1)
    tasks = make_tasks(ds, targets, ["fullgrad", "lime"], cfg)
    kinds = [(t.kind, t.method, t.index, t.seed, t.primary) for t in tasks]
    assert ("random", None, 0, 1, True) in kinds and ("explain", "lime", 0, 11, False) in kinds
    assert ("explain", "lime", 1, 11, False) not in kinds            # stability on 1 image only
    assert sum(1 for k in kinds if k[0] == "random") == 4
    t = pickle.loads(pickle.dumps(tasks[2]))                         # travels to a worker
    r1, r2 = run_task(signs_model, tasks[2], cfg), run_task(signs_model, t, cfg)
    assert set(r1) == set(r2)
    for k in r1:
        if k != "seconds":
            assert _same(r1[k], r2[k]), k
    results = [run_task(signs_model, tk, cfg) for tk in tasks]
    assert all(isinstance(r, dict) and "key" in r for r in results)
    rep = aggregate(results, ds, targets, signs_model.predict(np.stack(ds.images)), ["fullgrad", "lime"], cfg,
                    model=signs_model)
    assert rep.summary["fullgrad"]["stability"] == "deterministic"
    assert rep.summary["lime"]["stability"]["images"] == 1
    assert rep.summary["fullgrad"]["sanity_images"] == 1


def test_randomised_model_and_na_reason(signs_model):
    from _pertnets import TorchBlackBox, train_tiny
    rnd, why = randomised_model(signs_model, 0)
    assert why is None and rnd.randomised_tensors >= 5
    x = signs_model.preprocess(generate.make_signs(1, seed=8008)[0][0])
    assert not np.allclose(rnd.predict(x[None]), signs_model.predict(x[None]), atol=1e-3)
    # the original is untouched, and the copy is cached per seed
    assert randomised_model(signs_model, 0)[0] is rnd
    blackbox = TorchBlackBox(train_tiny(steps=5))
    none, reason = randomised_model(blackbox, 0)
    assert none is None and "not reachable" in reason


def test_black_box_model_reports_na(tmp_path):
    from _pertnets import TorchBlackBox, make_textures, train_tiny
    model = TorchBlackBox(train_tiny(steps=20))
    ims, labels = make_textures(3, seed=5)[:2]
    d = tmp_path / "ds"
    masks = np.zeros((3, *ims.shape[1:3]), bool)
    masks[:, 4:20, 4:20] = True
    generate.save_dataset(d, (ims * 255).round().astype(np.uint8), labels, masks, ["hstripes", "vstripes", "checks"])
    rep = evaluate(model, str(d), ["occlusion"], n=3, steps=4, random_orders=1, sanity_n=2)
    s = rep.summary["occlusion"]
    assert s["sanity_spearman"] is None and "not reachable" in s["sanity_reason"]
    assert "n/a" in rep.markdown()
    with pytest.raises(XauditError, match="needs gradients"):
        evaluate(model, str(d), ["fullgrad"], n=3)


# ----------------------------------------------------------------------------- CLI
def test_cli_files_and_mlflow(tmp_path, sign_dir):
    from mlflow.tracking import MlflowClient

    from xaudit.cli import main
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    rc = main(["--tracking-uri", uri, "evaluate", str(model_path("signs.pt")), "--dataset", str(sign_dir),
               "--methods", "fullgrad,gradcam,lime", "--n", "3", "--lime-samples", "40", "--sanity-n", "2",
               "--stability-n", "1", "--seeds", "1,11", "--steps", "8", "--out", str(out), "--quiet"])
    assert rc == 0
    for f in ("evaluation.json", "evaluation.md", "evaluation.html", "evaluation.png"):
        assert (out / f).stat().st_size > 100, f
    data = json.loads((out / "evaluation.json").read_text())
    assert data["methods"] == ["fullgrad", "gradcam", "lime"] and data["dataset"]["n"] == 3
    assert len(data["images"]) == 3 and "fullgrad" in data["images"][0] and "random" in data["images"][0]
    for m in data["methods"]:
        s = data["summary"][m]
        for k in ("pointing_game", "energy_in_mask", "background_share", "deletion_auc", "deletion_auc_random",
                  "insertion_auc", "insertion_auc_random", "sanity_spearman", "stability", "seconds_per_image",
                  "model_calls_per_image"):
            assert k in s, (m, k)
    assert data["params"]["method_params"]["lime"] == {"num_samples": 40}
    assert len(data["curves"]["random"]["deletion"]) == 9
    html = (out / "evaluation.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert "src=\"http" not in html and "href=\"http" not in html
    assert "| fullgrad |" in (out / "evaluation.md").read_text()
    c = MlflowClient(tracking_uri=uri)
    run = c.search_runs([c.get_experiment_by_name("xaudit").experiment_id])[0]
    assert run.data.tags["xaudit.command"] == "evaluate"
    for m in ("fullgrad", "gradcam", "lime"):
        for k in ("pointing_game", "deletion_auc", "deletion_auc_random", "insertion_auc", "seconds_per_image"):
            assert f"{m}.{k}" in run.data.metrics, (m, k)
    assert "lime.stability_topk_jaccard" in run.data.metrics
    assert run.data.params["methods"] == "fullgrad,gradcam,lime"
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"evaluation.json", "evaluation.html", "evaluation.png", "evaluation.md"} <= arts
    from xaudit.report import build_report          # `xaudit report OUT` shows the table
    rh = build_report(out, tmp_path / "report.html").read_text()
    assert "faithfulness evaluation" in rh and "<td>gradcam</td>" in rh and "data:image/png;base64," in rh


def test_cli_json(tmp_path, sign_dir, capsys):
    from xaudit.cli import main
    rc = main(["--no-track", "evaluate", str(model_path("signs.onnx")), "--dataset", str(sign_dir), "--methods",
               "occlusion", "--n", "2", "--steps", "4", "--random-orders", "1", "--sanity-n", "1",
               "--out", str(tmp_path / "o"), "--json", "--quiet"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["summary"]["occlusion"]["stability"] == "deterministic" and d["dataset"]["n"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--methods", "fullgrad,nope"], "unknown method 'nope'"),
    (["--n", "0"], "--n must be >= 1"),
    (["--n", "-3"], "--n must be >= 1"),
    (["--dataset", "/no/such/dir"], "neither 'signs', 'poles' nor an existing folder"),
    (["--seeds", "1"], "at least 2 seeds"),
    (["--steps", "1"], "--steps must be >= 2"),
    (["--lime-samples", "1"], "--lime-samples must be >= 2"),
])
def test_cli_bad_input(argv, message, capsys, tmp_path):
    from xaudit.cli import main
    base = ["--no-track", "evaluate", str(model_path("signs.pt")), "--dataset", "signs", "--quiet",
            "--out", str(tmp_path / "o")]
    rc = main(base + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert "Traceback" not in err


def test_cli_dataset_file_not_dir(tmp_path, capsys):
    from xaudit.cli import main
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["--no-track", "evaluate", str(model_path("signs.pt")), "--dataset", str(f), "--quiet"]) == 2
    assert "not a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- executors, resume
def test_cli_process_executor_same_numbers_and_resume(tmp_path, sign_dir, capsys):
    """Tasks on 2 worker processes give the same numbers as the local executor; a rerun with
    the same --out resumes from the ledger (nothing recomputed, same numbers)."""
    from xaudit.cli import main
    base = ["--no-track", "evaluate", str(model_path("signs.pt")), "--dataset", str(sign_dir), "--methods",
            "fullgrad,lime", "--n", "3", "--lime-samples", "30", "--sanity-n", "1", "--stability-n", "1",
            "--seeds", "1,11", "--steps", "4", "--random-orders", "1", "--quiet", "--json"]
    outs = {}
    for name, extra in (("local", []), ("process", ["--executor", "process", "--workers", "2"]),
                        ("resumed", [])):
        out = tmp_path / ("local" if name == "resumed" else name)
        assert main(base + ["--out", str(out)] + extra) == 0, name
        outs[name] = json.loads(capsys.readouterr().out)
    for name in ("process", "resumed"):
        for m in ("fullgrad", "lime"):
            a, b = outs["local"]["summary"][m], outs[name]["summary"][m]
            for k in ("pointing_game", "energy_in_mask", "deletion_auc", "insertion_auc", "deletion_auc_random",
                      "sanity_spearman", "model_calls_per_image"):
                assert a[k] == b[k], (name, m, k)
            if m == "lime":
                assert a["stability"]["spearman"] == b["stability"]["spearman"]
    ledger = (tmp_path / "local" / ".xaudit-tasks.jsonl").read_text().splitlines()
    assert len(ledger) == 1 + 3 * 3 + 1    # fingerprint + 3 x (random, fullgrad, lime) + lime seed 11 on image 0


def test_lazy_dataset_streams_the_same_images(signs_model, tmp_path):
    """evaluate() streams its dataset (issue 9: the driver never holds the image set): the lazy
    form yields exactly the eager images, masks and labels, one at a time."""
    from xaudit.data.generate import GTSRB_LABELS, make_signs, save_dataset
    eager = load_dataset("signs", signs_model, n=5, backgrounds=0)
    lazy = load_dataset("signs", signs_model, n=5, backgrounds=0, lazy=True)
    assert len(lazy) == 5 and lazy.images == [] and lazy.masks == []
    items = list(lazy.items())
    assert [i for i, *_ in items] == list(range(5))
    for (i, im, mk, lab) in items:
        assert np.array_equal(im, eager.images[i]) and np.array_equal(mk, eager.masks[i]) and lab == eager.labels[i]
    d = save_dataset(tmp_path / "ds", *make_signs(3, seed=4), GTSRB_LABELS)
    le, ll = read_mask_dir(d, signs_model), read_mask_dir(d, signs_model, lazy=True)
    assert ll.images == [] and ll.labels == le.labels and len(ll) == 3
    assert all(np.array_equal(a[1], b) for a, b in zip(ll.items(), le.images))
    # the streamed evaluation equals the one on the materialised dataset
    kw = dict(steps=4, random_orders=1, sanity_n=0, stability_n=0)
    r1 = evaluate(signs_model, "signs", ["gradcam"], n=5, anchor_backgrounds=0, **kw)
    r2 = evaluate(signs_model, eager, ["gradcam"], n=5, **kw)
    def strip(summ):   # timings differ between runs
        return {m: {k: v for k, v in d.items() if "second" not in k} for m, d in summ.items()}
    assert strip(r1.summary) == strip(r2.summary) and r1.dataset["mask_fraction"] == r2.dataset["mask_fraction"]
