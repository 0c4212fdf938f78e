"""baseline + audit commands end to end on a real ONNX model and a real capture."""
import json
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
from PIL import Image

import _monitor_helpers as h
from xaudit.capture import CaptureWriter
from xaudit.serve import format_prediction


def cli(*argv):
    return subprocess.run([sys.executable, "-m", "xaudit", "--no-track", "--quiet", *map(str, argv)],
                          capture_output=True, text=True, timeout=600)


def test_baseline_then_audit(tmp_path):
    mf = h.make_onnx(tmp_path / "m.onnx")
    labels = mf.with_suffix(".labels.txt")
    model = h.load(mf)
    ref = tmp_path / "ref"
    ref.mkdir()
    imgs = h.images(120, seed=1)
    preds = model.predict(model.preprocess_batch(list(imgs))).argmax(1)
    rows = []
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(ref / f"{i:03d}.png")
        rows.append(f"{i:03d}.png,{preds[i] if i % 5 else (preds[i] + 1) % h.NCLS}")
    (ref / "labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    r = cli("baseline", mf, ref, "--labels", labels, "--labels-csv", ref / "labels.csv", "--out", tmp_path / "b.json")
    assert r.returncode == 0, r.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["model"]["num_classes"] == h.NCLS and b["model"]["sha256"] and b["n"] == 120
    assert abs(b["calibration"]["reference_accuracy"] - 0.8) < 1e-9
    # capture: images of the class with most examples, pushed to one class
    target = int(np.bincount(preds, minlength=h.NCLS).argmax())
    w = CaptureWriter(tmp_path / "cap", "ep")
    pool = [im for im, p in zip(h.images(600, seed=9), model.predict(
        model.preprocess_batch(list(h.images(600, seed=9)))).argmax(1)) if p == target][:40]
    from xaudit.images import encode_png
    for im in pool:
        x = model.preprocess(im)
        w.capture(encode_png(x), "image/png", json.dumps(format_prediction(model, model.predict(x)[0])))
    w.close()
    out = tmp_path / "audit"
    r = cli("audit", tmp_path / "cap", "--model", mf, "--labels", labels, "--baseline", tmp_path / "b.json",
            "--explain", "2", "--references", "2", "--method", "occlusion", "--out", out)
    assert r.returncode == 3, r.stdout + r.stderr
    a = json.loads((out / "audit.json").read_text())
    cls = [c for c in a["classes"] if c["class_index"] == target]
    assert cls and len(cls[0]["captured"]) == 2 and len(cls[0]["reference"]) == 2
    assert (out / "audit.png").stat().st_size > 1000
    assert (out / "violations.json").exists() and (out / "report.png").exists()
    assert list((out / f"class_{target}" / "captured_00").glob("attribution.npy"))
    # another model's baseline -> exit 2
    other = h.make_onnx(tmp_path / "o.onnx", n_classes=3)
    r = cli("audit", tmp_path / "cap", "--model", other, "--baseline", tmp_path / "b.json", "--out", out)
    assert r.returncode == 2


def test_adversarial_scenario_pipeline(tmp_path):
    """The scenario core on a small real ONNX model: DeepFool to class 1, serve with 50 %
    capture, monitor flags class 1 only in the adversarial window, audit runs."""
    from xaudit.monitoring.scenario import run_scenario
    mf = h.make_onnx(tmp_path / "m.onnx")
    m = h.load(mf)
    imgs = h.images(200, seed=3)
    labels = m.predict(m.preprocess_batch(list(imgs))).argmax(1)
    masks = np.zeros((200, h.SIZE, h.SIZE), bool)
    masks[:, 4:12, 4:12] = True
    r = run_scenario(mf, tmp_path / "out", imgs, labels, masks, h.images(100, seed=4), target=1, n_clean=80,
                     n_mixed=120, explain=2, say=lambda *a: None)
    assert r["attack"]["success_rate"] > 0.7  # a 3-feature colour model cannot always be pushed
    assert r["monitor"]["adversarial"]["target_flagged"] and not r["monitor"]["clean"]["target_flagged"]
    assert r["monitor"]["adversarial"]["exit_code"] == 3 and r["audit_exit_code"] == 3
    assert r["pass"] and (tmp_path / "out" / "audit" / "audit.png").exists()


def test_baseline_from_capture_window(tmp_path):
    mf = h.make_onnx(tmp_path / "m.onnx")
    model = h.load(mf)
    from datetime import timedelta
    t0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
    w = CaptureWriter(tmp_path / "cap", "ep")
    for i, im in enumerate(h.images(60, seed=4)):
        x = model.preprocess(im)
        t = t0 + timedelta(minutes=i)
        from xaudit.capture import make_record
        w.write_record(make_record(b"x", "image/png", json.dumps(format_prediction(model, model.predict(x)[0])),
                                   inference_time=t), t)
    w.close()
    r = cli("baseline", mf, "--from-capture", tmp_path / "cap", "--start", "2026-11-22T10:00:00Z",
            "--end", "2026-11-22T10:30:00Z", "--out", tmp_path / "b.json")
    assert r.returncode == 0, r.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["n"] == 30 and b["source"]["kind"] == "capture" and len(b["softmax_samples"]) == 30
    assert sum(len(v) for v in b["per_class_softmax"].values()) <= 30
    for argv in (["--start", "noon"], ["--start", "2027-01-01T00:00:00Z", "--end", "2027-01-02T00:00:00Z"]):
        r = cli("baseline", mf, "--from-capture", tmp_path / "cap", *argv, "--out", tmp_path / "c.json")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
