"""Executors (local / process): same results bit for bit, model loaded once per worker,
killed workers, failed tasks, resume. Ray: tests/test_executors_ray.py (marker ray)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _cli import run_main as _main
from _executor_helpers import (attributions, kill_self_task, ledger_lines, raising_task, slow_task,
                               write_sign_pngs)

def _signs_pt():
    from xaudit.data import model_path
    p = Path(model_path("signs.pt"))
    if not p.exists():
        pytest.skip("shipped signs.pt missing")
    return str(p)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("exec-images")
    write_sign_pngs(d, 4, seed=5)
    return d


def _spec():
    from xaudit.executors import ModelSpec
    return ModelSpec.of(_signs_pt())


@pytest.fixture(scope="module")
def pool():
    """One 2-process pool shared by the tests that do not kill its workers."""
    from xaudit.executors import get_executor
    ex = get_executor("process", _spec(), workers=2)
    yield ex
    ex.close()


# ------------------------------------------------------------------------------ API
def test_process_matches_local_bit_for_bit_and_loads_once(pool):
    """LIME (the method whose floats depend on torch's thread count) through the local
    loop and a 2-process pool: identical attributions; each worker loaded the model once
    (however many tasks and map calls it served)."""
    from xaudit.executors import Task, generated_images, get_executor
    from xaudit.executors.tasks import explain_task, load_count_task

    def tasks():
        return (Task(key=r.stem, image=r, method="lime", seed=7, params={"explainer": {"num_samples": 120}})
                for r in generated_images("signs", 3, seed=3))

    with get_executor("local", _spec()) as ex:
        loc = [r.value["explanation"] for r in ex.map(explain_task, tasks())]
    ex = pool
    res = list(ex.map(explain_task, tasks()))
    loads = list(ex.map(load_count_task, [Task(key=str(i)) for i in range(6)]))
    pids = set(ex.pids())
    assert [r.index for r in res] == [0, 1, 2] and all(r.ok for r in res)
    for a, r in zip(loc, res):
        b = r.value["explanation"]
        assert np.array_equal(a.attribution, b.attribution)
        assert np.array_equal(a.arrays["weights"], b.arrays["weights"])
        assert a.meta["r2"] == b.meta["r2"] and a.target == b.target
    # one model load per worker process, however many tasks it ran
    assert all(r.ok and r.value[1] == 1 and r.loads == 1 for r in loads)
    assert {int(r.value[0].split(":")[1]) for r in loads} <= pids
    assert len({r.worker for r in res}) == 2


def test_results_in_order_with_bounded_window(pool):
    """Tasks of uneven length come back in task order; the task iterable is consumed
    lazily (never more than the window ahead of what has been yielded)."""
    from xaudit.executors import Task
    pulled = []

    def tasks():
        for i in range(10):
            pulled.append(i)
            yield Task(key=f"t{i}", seed=i, params={"sleep": 0.3 if i % 3 == 0 else 0.02})

    got = []
    for r in pool.map(slow_task, tasks(), window=4):
        assert len(pulled) <= r.index + 1 + 4
        got.append(r.value[0])
    assert got == [f"t{i}" for i in range(10)]


def test_killed_worker_task_retried_nothing_lost():
    """SIGKILL one worker while it holds a task: that task is retried on a fresh worker,
    every other result arrives intact and in order."""
    from xaudit.executors import Task, get_executor
    tasks = [Task(key=f"t{i}", seed=i, params={"sleep": 0.4}) for i in range(8)]
    with get_executor("process", _spec(), workers=2) as ex:
        got, killed = [], None
        for r in ex.map(slow_task, tasks):
            got.append(r)
            if killed is None:
                time.sleep(0.1)             # the next tasks are running now
                killed = ex.pids()[0]
                os.kill(killed, signal.SIGKILL)
        stats = dict(ex.stats)
    assert [r.key for r in got] == [t.key for t in tasks]
    assert all(r.ok for r in got), [r.error for r in got if not r.ok]
    assert stats["workers_lost"] == 1 and stats["retried"] == 1
    assert sum(r.attempts == 2 for r in got) == 1
    assert killed not in {r.value[1] for r in got if r.attempts == 2}
    with get_executor("local", _spec()) as ex:   # the same tasks in-process: same predictions
        ref = [r.value[2] for r in ex.map(slow_task, [Task(key=t.key, seed=t.seed, params={"sleep": 0}) for t in tasks])]
    assert all(np.array_equal(r.value[2], a) for r, a in zip(got, ref))


def test_poison_task_reported_after_retries_others_kept():
    """A task that kills every worker it runs on: reported failed after the retries."""
    from xaudit.executors import Task, get_executor
    tasks = [Task(key=f"t{i}", seed=i, params={"sleep": 0.05}) for i in range(5)]
    with get_executor("process", _spec(), workers=2, retries=1) as ex:
        res = list(ex.map(_dispatch, tasks))
    assert [r.key for r in res] == [t.key for t in tasks]
    bad = [r for r in res if not r.ok]
    assert [r.key for r in bad] == ["t2"] and bad[0].attempts == 2
    assert "WorkerLost" in bad[0].error and "signal 9" in bad[0].error
    assert all(r.ok for r in res if r.key != "t2")


def _dispatch(model, task):
    return (kill_self_task if task.key == "t2" else slow_task)(model, task)


def test_failing_task_reported_with_its_error(pool):
    from xaudit.executors import Task, get_executor
    tasks = [Task(key=f"t{i}", params={"fail": i == 1}) for i in range(3)]
    for ex in (get_executor("local", _spec()), pool):
        res = list(ex.map(raising_task, tasks))
        assert [r.ok for r in res] == [True, False, True]
        assert res[1].error == "ValueError: task t1 was told to fail" and res[1].attempts == 1


def test_executor_option_errors():
    from xaudit.errors import XauditError
    from xaudit.executors import get_executor
    with pytest.raises(XauditError, match="unknown executor"):
        get_executor("dask", _spec())
    with pytest.raises(XauditError, match="--workers"):
        get_executor("process", _spec(), workers=0)
    with pytest.raises(XauditError, match="--ray-address"):
        get_executor("process", _spec(), ray_address="auto")


def test_model_spec_packs_sidecars(tmp_path):
    from xaudit.executors import ModelSpec
    from xaudit.executors.worker import unpack
    spec = ModelSpec.of(_signs_pt())
    b = spec.packed()
    assert "model/signs.pt" in b["files"] and "model/signs.pt.json" in b["files"]
    local = unpack(b, spec)
    assert Path(local.source).name == "signs.pt" and Path(local.source).exists()
    m1, m2 = spec.load(), local.load()
    assert m1.labels == m2.labels and m1.input_size == m2.input_size


# ------------------------------------------------------------------------------ CLI
def test_explain_cli_local_vs_process_identical(images, tmp_path, capsys):
    outs = {}
    for name in ("local", "process"):
        out = tmp_path / name
        rc, so, err = _main(["explain", _signs_pt(), str(images), "--method", "lime", "--seed", "3",
                             "--executor", name, "--workers", "2", "--out", str(out), "--no-track", "--quiet"],
                            capsys)
        assert rc == 0, err
        outs[name] = attributions(out)
    assert sorted(outs["local"]) == [f"sign{i:03d}" for i in range(4)]
    for k, a in outs["local"].items():
        assert np.array_equal(a, outs["process"][k]), k
        for f in ("overlay.png", "explanation.json", "weights.npy", "segments.npy", "input.npy"):
            assert (tmp_path / "process" / k / f).exists()


def test_explain_cli_failed_task_partial_results(images, tmp_path, capsys):
    """One unreadable image among good ones: the good ones are written, the bad one is
    listed (stderr line, --json row with its error), exit code 4."""
    d = tmp_path / "mixed"
    d.mkdir()
    for p in sorted(images.glob("*.png"))[:2]:
        (d / p.name).write_bytes(p.read_bytes())
    (d / "broken.png").write_bytes(b"this is not a png")
    out = tmp_path / "o"
    rc, so, err = _main(["explain", _signs_pt(), str(d), "--method", "gradcam", "--executor", "process",
                         "--workers", "2", "--out", str(out), "--no-track", "--json"], capsys)
    assert rc == 4, err
    rows = json.loads(so)
    assert [r.get("failed", False) for r in rows] == [True, False, False]
    assert rows[0]["image"].endswith("broken.png") and rows[0]["error"]
    assert "xaudit: explanation failed: broken: " in err
    assert (out / "sign000" / "attribution.npy").exists() and (out / "sign001" / "overlay.png").exists()
    assert not (out / "broken" / "attribution.npy").exists()
    # a single bad image alone is bad input: exit 2, one line
    rc, so, err = _main(["explain", _signs_pt(), str(d / "broken.png"), "--out", str(tmp_path / "o2"), "--no-track"],
                        capsys)
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_explain_cli_resume_after_kill(images, tmp_path):
    """Kill the driver (SIGKILL) mid-run; the rerun with the same --out keeps the finished
    explanations (not recomputed) and does only the rest."""
    src = tmp_path / "imgs"
    write_sign_pngs(src, 6, seed=9)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "xaudit", "explain", _signs_pt(), str(src), "--method", "lime", "--seed", "1",
           "--out", str(out), "--no-track", "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while len([r for r in ledger_lines(out) if r["status"] == "done"]) < 2 and time.time() - t0 < 120:
        if p.poll() is not None:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = [r["key"] for r in ledger_lines(out) if r["status"] == "done"]
    assert 2 <= len(done) < 6, f"interrupted too late or too early: {done}"
    mtimes = {k: (out / k / "attribution.npy").stat().st_mtime_ns for k in done}
    r = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"({len(done)} from an earlier run)" in r.stderr
    assert {k: (out / k / "attribution.npy").stat().st_mtime_ns for k in done} == mtimes
    assert len(attributions(out)) == 6
    assert len([x for x in ledger_lines(out) if x["status"] == "done"]) == 6
    # a third run has nothing left to do
    r = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "(6 from an earlier run)" in r.stderr


def test_explain_cli_other_params_start_over(images, tmp_path, capsys):
    out = tmp_path / "o"
    base = ["explain", _signs_pt(), str(images), "--out", str(out), "--no-track", "--quiet"]
    assert _main(base + ["--method", "gradcam"], capsys)[0] == 0
    rc, so, err = _main(base + ["--method", "occlusion"], capsys)
    assert rc == 0
    assert all(json.loads((out / f"sign{i:03d}" / "explanation.json").read_text())["method"] == "occlusion"
               for i in range(4))


def test_stability_cli_process_matches_local_and_resumes(images, tmp_path, capsys):
    outs = {}
    for name in ("local", "process"):
        out = tmp_path / name
        rc, so, err = _main(["stability", _signs_pt(), str(images), "--num-samples", "80", "--seeds", "1,2",
                             "--executor", name, "--workers", "2", "--out", str(out), "--no-track", "--quiet",
                             "--json"], capsys)
        assert rc == 0, err
        outs[name] = json.loads(so)
        assert (out / "grid.png").exists() and (out / "std.png").exists() and outs[name]["failed"] == []
    a, b = attributions(tmp_path / "local"), attributions(tmp_path / "process")
    assert len(a) == 8 and all(np.array_equal(a[k], b[k]) for k in a)
    strip = lambda d: [(im["image"], im["pairwise"], im["summary"]) for im in d["images"]]  # noqa: E731
    assert strip(outs["local"]) == strip(outs["process"])
    # rerun on the same --out: nothing recomputed, same stability.json
    rc, so, err = _main(["stability", _signs_pt(), str(images), "--num-samples", "80", "--seeds", "1,2",
                         "--out", str(tmp_path / "local"), "--no-track", "--quiet", "--json"], capsys)
    assert rc == 0 and json.loads(so)["model_calls"] == 0
    assert strip(json.loads(so)) == strip(outs["local"])


def test_audit_cli_process_matches_local(tmp_path):
    import _monitor_helpers as h
    from xaudit.capture import CaptureWriter
    from xaudit.images import encode_png
    from xaudit.serve import format_prediction
    mf = h.make_onnx(tmp_path / "m.onnx")
    model = h.load(mf)
    imgs = h.images(300, seed=9)
    preds = model.predict(model.preprocess_batch(list(imgs))).argmax(1)
    target = int(np.bincount(preds, minlength=h.NCLS).argmax())
    w = CaptureWriter(tmp_path / "cap", "ep")
    for im in [im for im, p in zip(imgs, preds) if p == target][:30]:
        x = model.preprocess(im)
        w.capture(encode_png(x), "image/png", json.dumps(format_prediction(model, model.predict(x)[0])))
    w.close()
    res = {}
    for name in ("local", "process"):
        out = tmp_path / f"audit-{name}"
        r = subprocess.run([sys.executable, "-m", "xaudit", "--no-track", "--quiet", "audit", str(tmp_path / "cap"),
                            "--model", str(mf), "--explain", "3", "--method", "lime", "--executor", name,
                            "--workers", "2", "--out", str(out)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 3, r.stderr
        a = json.loads((out / "audit.json").read_text())
        assert a["failed"] == [] and len(a["classes"][0]["captured"]) == 3
        res[name] = attributions(out)
    assert len(res["local"]) == 3
    assert all(np.array_equal(v, res["process"][k]) for k, v in res["local"].items())
