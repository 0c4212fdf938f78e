"""Anchors: xaudit's native Anchors vs alibi's ``AnchorImage`` at threshold 0.95: model calls,
seconds, anchor size, precision re-estimated on 1 000 fresh samples.

Same model on both sides (a hand-built black box whose anchors need several superpixels,
``tests/_pertnets.TextureCentre``, exported to ONNX with NHWC RGB [0,1] input and run by
onnxruntime on both sides: xaudit through its ONNX adapter), same images, same superpixels
(slic, 25 segments; alibi gets them through ``segmentation_fn``), same parameters
(threshold 0.95, delta 0.1, tau 0.15, batch_size 100, beam_size 1, p_sample 0.5, 10 000
coverage samples, mean-colour perturbation). alibi pins numpy<2, so it runs in its own venv
(``ALIBI_PYTHON``, default ``/work/alibi-venv/bin/python``) through a subprocess; without
it the alibi side is reported as "skipped: alibi not installed". Each image has its own
seed; the figures are medians over the images (the repetitions here). xaudit runs its
``default`` configuration and, in full mode, ``alibi_like`` (alibi's KL-LUCB exploration
rate, 100-sample pulls, no extra candidates) to show where the savings come from.
Target: xaudit needs >= 5x fewer model calls than alibi (median of the per-image ratios).

    python benchmarks/bench_anchors.py [--quick] [--repeats N]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

if __name__ != "__main__":
    from . import _common as C

ALIBI_SCRIPT = r'''
import json, sys, time
import numpy as np, onnxruntime as ort
from alibi.explainers import AnchorImage
d = np.load(sys.argv[1]); onnx_path = sys.argv[2]; params = json.loads(sys.argv[3])
so = ort.SessionOptions(); so.intra_op_num_threads = 1
sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
calls = [0]
def predict(x):
    x = np.asarray(x, np.float32); calls[0] += len(x)
    return sess.run(None, {name: x})[0]
out = []
for i in range(len(d["images"])):
    img = d["images"][i].astype(np.float32); segs = d["segments"][i]
    ex = AnchorImage(predict, img.shape, segmentation_fn=lambda _im, s=segs: s, seed=params["seed"] + i)
    calls[0] = 0; t0 = time.perf_counter()
    e = ex.explain(img, threshold=params["threshold"], delta=params["delta"], tau=params["tau"],
                   batch_size=params["batch_size"], p_sample=0.5, coverage_samples=10000, beam_size=1)
    out.append({"calls": calls[0], "seconds": time.perf_counter() - t0,
                "precision": float(np.atleast_1d(e.precision)[0]) if e.precision is not None else None,
                "coverage": float(e.coverage) if e.coverage is not None else None,
                "features": [int(f) for f in e.raw["feature"]]})
print(json.dumps(out))
'''

PARAMS = dict(threshold=0.95, delta=0.1, tau=0.15, batch_size=100, seed=0)
SEGMENTS = 25


def alibi_python() -> tuple[str | None, str]:
    """(python, alibi version) or (None, reason)."""
    py = os.environ.get("ALIBI_PYTHON", "/work/alibi-venv/bin/python")
    if not Path(py).exists():
        return None, "alibi not installed"
    r = subprocess.run([py, "-c", "import alibi; print(alibi.__version__)"], capture_output=True, text=True)
    if r.returncode != 0:
        return None, "alibi not installed"
    return py, r.stdout.strip()


def build_model(tmp: Path, t0=0.7):
    """ONNX export of the black box + xaudit's ONNX adapter over it."""
    import torch
    from _pertnets import TextureCentre

    from xaudit.loader import load_model
    path = tmp / "texture_centre.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TextureCentre(t0=t0, nhwc=True).eval(), (torch.zeros(1, 32, 32, 3),), str(path),
                          dynamo=False, opset_version=13, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    (tmp / "labels.txt").write_text("textured\nplain\n")
    model = load_model(str(path), layout="NHWC", value_range="0-1", output_kind="probabilities",
                       labels=str(tmp / "labels.txt"))
    return model, path


def run(quick: bool = False, repeats: int = 3) -> dict:
    from _pertnets import make_noise_images

    from xaudit.explainers.anchors import Anchors, precision_of
    from xaudit.explainers.segmentation import segment
    n = max(3, int(repeats)) if quick else max(10, int(repeats))
    imgs = make_noise_images(n, seed=123)
    segs = np.stack([segment(im, "slic", 0, n_segments=SEGMENTS) for im in imgs])
    configs = {"default": {}}
    if not quick:
        configs["alibi_like"] = {"lucb_rate": "theory", "lucb_pull": None, "extra_candidates": 0}
    res: dict = {"images": n, "params": PARAMS, "segments": SEGMENTS, "xaudit": {}}
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        model, onnx_path = build_model(td)
        res["model"] = f"TextureCentre black box, ONNX via xaudit's ONNX adapter ({model.input_size[0]} px)"
        targets_true = [int(model.predict(im[None])[0].argmax()) for im in imgs]
        for cfg, extra in configs.items():
            rows = []
            for i, im in enumerate(imgs):
                t0 = time.perf_counter()
                e = Anchors(seed=i, segmentation="slic", segmentation_params={"n_segments": SEGMENTS},
                            threshold=0.95, delta=0.1, tau=0.15, batch_size=100, **extra).explain(model, im)
                secs = time.perf_counter() - t0
                fresh = precision_of(model, e.image, e.meta["anchor"], e.arrays["segments"], e.target, n=1000,
                                     seed=777 + i)
                rows.append({"calls": e.model_calls, "seconds": secs, "precision": e.meta["precision"],
                             "fresh_precision": fresh, "coverage": e.meta["coverage"],
                             "anchor_size": len(e.meta["anchor"]), "superpixels": e.meta["num_superpixels"]})
            res["xaudit"][cfg] = rows
            C.log(f"anchors xaudit {cfg}: median calls {np.median([r['calls'] for r in rows]):.0f}")
        py, info = alibi_python()
        res["alibi_python"] = py
        if py is None:
            res["alibi"] = None
            res["alibi_skipped"] = info
        else:
            res["alibi_version"] = info
            np.savez(td / "d.npz", images=imgs, segments=segs)
            r = subprocess.run([py, "-c", ALIBI_SCRIPT, str(td / "d.npz"), str(onnx_path), json.dumps(PARAMS)],
                               capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
            if r.returncode != 0:       # alibi is there but failed: a real failure of the benchmark
                raise RuntimeError("alibi AnchorImage failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
            res["alibi"] = json.loads(r.stdout.strip().splitlines()[-1])
            for i, row in enumerate(res["alibi"]):   # re-estimate alibi's anchors with the same sampler
                row["fresh_precision"] = precision_of(model, imgs[i], row["features"], segs[i], targets_true[i],
                                                      n=1000, seed=777 + i)
                row["anchor_size"] = len(row["features"])
    table, targets = [], []

    def row_of(who, rows):
        return {"tool": who, "model calls (median)": float(np.median([r["calls"] for r in rows])),
                "seconds (median)": float(np.median([r["seconds"] for r in rows])),
                "anchor size (median)": float(np.median([r["anchor_size"] for r in rows])),
                "coverage (mean)": float(np.mean([r["coverage"] or 0 for r in rows])),
                "fresh precision mean / min": f"{np.mean([r['fresh_precision'] for r in rows]):.3f} / "
                                              f"{min(r['fresh_precision'] for r in rows):.3f}"}
    for cfg, rows in res["xaudit"].items():
        table.append(row_of(f"xaudit ({cfg})", rows))
    if res["alibi"]:
        table.append(row_of(f"alibi {res.get('alibi_version', '')} AnchorImage", res["alibi"]))
        al = np.array([r["calls"] for r in res["alibi"]], float)
        at = np.array([r["seconds"] for r in res["alibi"]], float)
        for cfg, rows in res["xaudit"].items():
            xs = np.array([r["calls"] for r in rows], float)
            xt = np.array([r["seconds"] for r in rows], float)
            res[f"calls_ratio_alibi_over_{cfg}"] = C.stats(al / xs)
            res[f"time_ratio_alibi_over_{cfg}"] = C.stats(at / xt)
            table[[t["tool"] for t in table].index(f"xaudit ({cfg})")].update(
                {"alibi calls / xaudit calls": res[f"calls_ratio_alibi_over_{cfg}"]["median"],
                 "alibi s / xaudit s": res[f"time_ratio_alibi_over_{cfg}"]["median"]})
        targets.append(C.target(">= 5x fewer model calls than alibi", res["calls_ratio_alibi_over_default"]["median"],
                                ">=", 5.0, case=f"{n} images, threshold 0.95", unit="x",
                                why="xaudit's sample reuse and early stopping saved less than 5x on these images"))
    else:
        targets.append(C.target(">= 5x fewer model calls than alibi", None, ">=", 5.0,
                                case=f"{n} images, threshold 0.95", skipped=res["alibi_skipped"]))
    notes = ["Calls = images sent to the model during the search (the fresh-precision re-estimate, 1 000 "
             "samples per anchor, is done afterwards with xaudit's sampler for both tools and not counted).",
             *(["The `alibi_like` row runs xaudit with alibi's bandit settings: its calls are close to alibi's, so the "
             "saving comes from the settings documented in docs/perturbation.md, not from a different problem."] if "alibi_like" in configs else [])]
    if not res["alibi"]:
        notes.append(f"alibi side skipped: {res['alibi_skipped']} (set ALIBI_PYTHON to a python with alibi and "
                     "onnxruntime, e.g. `python3 -m venv /work/alibi-venv && /work/alibi-venv/bin/pip install "
                     "alibi onnxruntime`).")
    return {"description": __doc__.split("\n\n")[0].replace("\n", " "), **res, "table": table, "targets": targets,
            "notes": notes, **({"skipped_parts": ["alibi: " + res["alibi_skipped"]]} if not res["alibi"] else {})}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.__main__ import script_main
    script_main("anchors")
