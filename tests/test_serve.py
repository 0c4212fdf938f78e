"""xaudit serve over real loopback HTTP (uvicorn subprocess): content types, errors,
load with capture, kill -9 during load."""
import base64
import io
import json
import os
import signal
import threading
import time
import uuid

import httpx
import numpy as np
import pytest
from scipy import stats

import _monitor_helpers as h
from xaudit.capture import ReadStats, iter_records, validate_record


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return h.make_onnx(tmp_path_factory.mktemp("m") / "colour.onnx")


@pytest.fixture(scope="module")
def model(model_file):
    return h.load(model_file)


def _expected(model, imgs):
    return model.predict(model.preprocess_batch(list(imgs)))


def test_content_types_and_errors(model_file, model, tmp_path):
    proc, url = h.start_server(model_file, tmp_path / "cap", pct=100, max_bytes=200_000)
    try:
        imgs = h.images(3, seed=5)
        exp = _expected(model, imgs)
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.get("/ping").status_code == 200
            r = c.post("/invocations", content=h.png(imgs[0]), headers={"content-type": "image/png"})
            assert r.status_code == 200 and np.allclose(r.json()["probabilities"], exp[0], atol=1e-5)
            from PIL import Image
            b = io.BytesIO()
            Image.fromarray(imgs[1]).save(b, format="JPEG", quality=95)
            for ct in ("image/jpeg", "application/x-image"):
                r = c.post("/invocations", content=b.getvalue(), headers={"content-type": ct})
                assert r.status_code == 200 and len(r.json()["probabilities"]) == h.NCLS
            npy = io.BytesIO()
            np.save(npy, imgs)
            r = c.post("/invocations?top_k=2", content=npy.getvalue(), headers={"content-type": "application/x-npy"})
            preds = r.json()["predictions"]
            assert np.allclose([p["probabilities"] for p in preds], exp, atol=1e-5)
            assert [t["index"] for t in preds[0]["top_k"]] == list(np.argsort(-exp[0])[:2])
            assert preds[0]["top_k"][0]["label"] == f"class{np.argmax(exp[0])}"
            body = {"instances": [imgs[0].tolist(), base64.b64encode(h.png(imgs[2])).decode(),
                                  {"b64": base64.b64encode(h.png(imgs[1])).decode()}]}
            r = c.post("/invocations", json=body, headers={"x-top-k": "1"})
            got = np.array([p["probabilities"] for p in r.json()["predictions"]])
            assert np.allclose(got, exp[[0, 2, 1]], atol=1e-5)
            # errors: 4xx with a JSON message, server keeps serving
            for content, ct, code in [(b"not an image", "image/png", 400), (b"{", "application/json", 400),
                                      (b'{"instances": []}', "application/json", 400),
                                      (b"\x00" * 10, "application/x-npy", 400), (b"x", "text/plain", 415),
                                      (b"", "image/png", 400), (b"x" * 300_000, "image/png", 413)]:
                r = c.post("/invocations", content=content, headers={"content-type": ct})
                assert r.status_code == code and r.json()["error"], (ct, r.text)
            assert c.get("/ping").status_code == 200
    finally:
        proc.kill()
        proc.wait()
    recs, st = [], ReadStats()
    recs = list(iter_records(tmp_path / "cap", stats=st))
    assert len(recs) == 5 and st.malformed == 0  # failed requests are not captured
    assert {r.input_content_type for r in recs} == {"image/png", "image/jpeg", "application/x-image",
                                                    "application/x-npy", "application/json"}
    assert recs[0].input_bytes() == h.png(imgs[0])


def _load(url, bodies, clients, results, errors, stop=None):
    idx = iter(range(len(bodies)))
    lock = threading.Lock()

    def worker():
        with httpx.Client(base_url=url, timeout=60) as c:
            while True:
                if stop is not None and stop.is_set():
                    return
                with lock:
                    i = next(idx, None)
                if i is None:
                    return
                try:
                    r = c.post("/invocations", content=bodies[i], headers={"content-type": "image/png"})
                    results[i] = r.json()["probabilities"] if r.status_code == 200 else r.status_code
                except httpx.HTTPError as e:
                    errors.append(e)
                    if stop is not None:
                        return
    ts = [threading.Thread(target=worker) for _ in range(clients)]
    for t in ts:
        t.start()
    return ts


def test_load_32_clients_2000_requests(model_file, model, tmp_path):
    n = 2000
    imgs = h.images(n, seed=11)
    bodies = [h.png(im) for im in imgs]
    exp = _expected(model, imgs)
    proc, url = h.start_server(model_file, tmp_path / "cap", pct=50, seed=3)
    results, errors = [None] * n, []
    try:
        for t in _load(url, bodies, 32, results, errors):
            t.join()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert not errors
    assert all(isinstance(r, list) for r in results)
    assert np.allclose(np.array(results), exp, atol=1e-5)  # every response correct (and for its own request)
    lines = [ln for f in sorted((tmp_path / "cap").rglob("*.jsonl")) for ln in f.read_bytes().split(b"\n") if ln]
    recs = [json.loads(ln) for ln in lines]
    for r in recs:
        validate_record(r)
    ids = [r["eventMetadata"]["eventId"] for r in recs]
    assert len(set(ids)) == len(ids) and all(uuid.UUID(i).version == 4 for i in ids)
    lo, hi = stats.binom.ppf(0.0005, n, 0.5), stats.binom.isf(0.0005, n, 0.5)
    assert lo <= len(recs) <= hi, (len(recs), lo, hi)
    # each captured output matches the prediction for its captured input
    by_png = {b: i for i, b in enumerate(bodies)}
    for r in recs[:200]:
        i = by_png[base64.b64decode(r["captureData"]["endpointInput"]["data"])]
        assert np.allclose(json.loads(r["captureData"]["endpointOutput"]["data"])["probabilities"], exp[i], atol=1e-5)
    print(f"load: {n} requests, {len(recs)} captured (99.9 % bounds {lo:.0f}-{hi:.0f})")


def test_kill_9_during_load_leaves_whole_lines(model_file, tmp_path):
    n = 3000
    imgs = h.images(200, seed=2)
    bodies = [h.png(imgs[i % 200]) for i in range(n)]
    proc, url = h.start_server(model_file, tmp_path / "cap", pct=100, seed=1)
    results, errors, stop = [None] * n, [], threading.Event()
    ts = _load(url, bodies, 32, results, errors, stop)
    time.sleep(0.5)
    deadline = time.time() + 30
    while sum(r is not None for r in results) < 300 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in ts:
        t.join()
    done = sum(isinstance(r, list) for r in results)
    assert 300 <= done < n
    files = sorted((tmp_path / "cap").rglob("*.jsonl"))
    whole = 0
    for f in files:
        data = f.read_bytes()
        parts = data.split(b"\n")
        for p in parts[:-1]:  # all but a possible partial tail are complete records
            validate_record(json.loads(p))
            whole += 1
    assert whole >= done  # every answered request was captured (100 %) before its response
    # simulate the crash's partial last line and check the reader skips and counts it
    with open(files[-1], "ab") as fh:
        fh.write(files[0].read_bytes().split(b"\n")[0][:57])
    st = ReadStats()
    assert sum(1 for _ in iter_records(tmp_path / "cap", stats=st)) == whole
    assert st.malformed == 1 and st.malformed_reasons["truncated line"] == 1
