"""Ray executor (marker ``ray``; run with ``pytest -m ray``): same results as local and
process bit for bit, one model load per actor, killed actor -> its tasks retried,
shipped model bytes."""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from _executor_helpers import attributions, raising_task, slow_task, write_sign_pngs

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")


def _signs_pt():
    from xaudit.data import model_path
    return str(model_path("signs.pt"))


def _spec():
    from xaudit.executors import ModelSpec
    return ModelSpec.of(_signs_pt())


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module (its start-up is the slow part), with enough
    logical CPUs for the executors of several tests at once; executors reuse it."""
    import logging
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=8, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def rayex(ray_instance):
    from xaudit.executors import get_executor
    ex = get_executor("ray", _spec(), workers=2)
    yield ex
    ex.close()


def test_ray_local_process_identical_and_loads_once(rayex, tmp_path):
    from xaudit.executors import Task, generated_images, get_executor
    from xaudit.executors.tasks import explain_task, load_count_task

    def tasks():
        return (Task(key=r.stem, image=r, method="lime", seed=7, params={"explainer": {"num_samples": 120}})
                for r in generated_images("signs", 3, seed=3))

    runs = {}
    for name in ("local", "process"):
        with get_executor(name, _spec(), workers=2) as ex:
            runs[name] = [r.value["explanation"] for r in ex.map(explain_task, tasks())]
    res = list(rayex.map(explain_task, tasks()))
    assert all(r.ok for r in res), [r.error for r in res]
    runs["ray"] = [r.value["explanation"] for r in res]
    for a, b, c in zip(runs["local"], runs["process"], runs["ray"]):
        assert np.array_equal(a.attribution, b.attribution) and np.array_equal(a.attribution, c.attribution)
        assert np.array_equal(a.arrays["weights"], c.arrays["weights"])
    loads = list(rayex.map(load_count_task, [Task(key=str(i)) for i in range(8)]))
    assert all(r.value[1] == 1 for r in loads)
    assert {i["loads"] for i in rayex.actor_info()} == {1}


def test_ray_failed_task_reported(rayex):
    from xaudit.executors import Task
    res = list(rayex.map(raising_task, [Task(key=f"t{i}", params={"fail": i == 1}) for i in range(3)]))
    assert [r.ok for r in res] == [True, False, True] and "told to fail" in res[1].error


def test_ray_killed_actor_tasks_retried(rayex):
    from xaudit.executors import Task
    tasks = [Task(key=f"t{i}", seed=i, params={"sleep": 0.4}) for i in range(8)]
    pids = [i["pid"] for i in rayex.actor_info()]
    lost0 = rayex.stats["workers_lost"]
    got, killed = [], False
    for r in rayex.map(slow_task, tasks):
        got.append(r)
        if not killed:
            time.sleep(0.1)
            os.kill(pids[0], signal.SIGKILL)
            killed = True
    assert [r.key for r in got] == [t.key for t in tasks]
    assert all(r.ok for r in got), [r.error for r in got if not r.ok]
    assert rayex.stats["workers_lost"] == lost0 + 1
    assert any(r.attempts == 2 for r in got)
    assert pids[0] not in {r.value[1] for r in got[1:]}


def test_ray_ships_model_bytes(rayex):
    """ship_model=True: actors load the model from bytes put in the object store (as on a
    cluster without shared storage), not from the driver's path."""
    from xaudit.executors import Task, get_executor
    from xaudit.executors.tasks import predict_task
    from xaudit.data.generate import make_signs
    im = make_signs(1, seed=2)[0][0]
    ex = get_executor("ray", _spec(), workers=1, ship_model=True)
    try:
        (r,) = list(ex.map(predict_task, [Task(key="a", image=im)]))
        (w,) = ex.actor_info()
    finally:
        ex.close()
    assert r.ok and w["loads"] == 1
    m = _spec().load()
    assert np.array_equal(r.value, m.predict(m.preprocess(im)[None])[0])


def test_ray_explain_cli_matches_local(ray_instance, tmp_path, capsys):
    from xaudit.cli import main
    imgs = tmp_path / "imgs"
    write_sign_pngs(imgs, 3, seed=4)
    outs = {}
    for name in ("local", "ray"):
        rc = main(["explain", _signs_pt(), str(imgs), "--method", "lime", "--seed", "2", "--executor", name,
                   "--workers", "2", "--out", str(tmp_path / name), "--no-track", "--quiet", "--json"])
        so, err = capsys.readouterr()
        assert rc == 0, err
        assert len(json.loads(so)) == 3
        outs[name] = attributions(tmp_path / name)
    assert len(outs["local"]) == 3
    assert all(np.array_equal(v, outs["ray"][k]) for k, v in outs["local"].items())


def test_ray_evaluate_cli_matches_local(ray_instance, tmp_path, capsys):
    """``xaudit evaluate --executor ray``: the same numbers as the local loop."""
    from xaudit.cli import main
    from xaudit.data import generate
    d = tmp_path / "ds"
    ims, labs, masks = generate.make_signs(3, seed=8008)
    generate.save_dataset(d, ims, labs, masks, generate.GTSRB_LABELS)
    base = ["--no-track", "evaluate", _signs_pt(), "--dataset", str(d), "--methods", "gradcam,lime", "--n", "3",
            "--lime-samples", "30", "--sanity-n", "1", "--stability-n", "1", "--seeds", "1,11", "--steps", "4",
            "--random-orders", "1", "--quiet", "--json"]
    outs = {}
    for name in ("local", "ray"):
        rc = main(base + ["--out", str(tmp_path / name), "--executor", name, "--workers", "2"])
        so, err = capsys.readouterr()
        assert rc == 0, err
        outs[name] = json.loads(so)
    for m in ("gradcam", "lime"):
        a, b = outs["local"]["summary"][m], outs["ray"]["summary"][m]
        for k in ("pointing_game", "energy_in_mask", "deletion_auc", "insertion_auc", "sanity_spearman"):
            assert a[k] == b[k], (m, k)
