"""Issue 8 evidence on the shipped models (``xaudit.evaluation.evaluate``, one shared
evaluation per model, module scope):

* honest sign model (``signs.pt``) on generated signs: FullGrad pointing game >= 0.9; every
  method's deletion AUC below its random-order baseline; every gradient method passes the
  parameter-randomisation check (Spearman < 0.5);
* pole models (``poles_honest.pt`` vs ``poles_biased.pt``) on the same generated poles: every
  method puts more attribution on the background for the biased model.

Smaller than the CLI defaults to keep the suite fast (fewer images, LIME 300 samples);
docs/evaluation.md has the full-size numbers (``--n 200``, defaults)."""
from __future__ import annotations

import pytest

from xaudit.data import model_path
from xaudit.evaluation import ALL_METHODS, GRADIENT_METHODS, evaluate

pytestmark = pytest.mark.slow

N_SIGNS = 60
N_POLES = 36
FAST = {"lime": {"num_samples": 300}}


def _load(name):
    import xaudit
    return xaudit.load_model(str(model_path(name)))


def _run(name, dataset, n, sanity_n=12, stability_n=3, **kw):
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rep = evaluate(_load(name), dataset, ALL_METHODS, n=n, method_params=FAST, sanity_n=sanity_n,
                       stability_n=stability_n, **kw)
    finally:
        torch.set_num_threads(threads)
    print(f"\n{name} on {dataset}:\n" + rep.markdown())
    return rep


@pytest.fixture(scope="module")
def signs_report():
    return _run("signs.pt", "signs", N_SIGNS)


@pytest.fixture(scope="module")
def pole_reports():
    # background share only: no sanity / stability passes here
    return {k: _run(f"poles_{k}.pt", "poles", N_POLES, sanity_n=0, stability_n=0) for k in ("honest", "biased")}


def test_signs_fullgrad_pointing_game(signs_report):
    s = signs_report.summary["fullgrad"]
    assert signs_report.dataset["n_correct"] >= 0.9 * N_SIGNS
    assert s["pointing_game"] >= 0.9, s["pointing_game"]


@pytest.mark.parametrize("method", ALL_METHODS)
def test_signs_deletion_below_random(signs_report, method):
    s = signs_report.summary[method]
    assert s["deletion_auc"] < s["deletion_auc_random"], (method, s["deletion_auc"], s["deletion_auc_random"])


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_signs_gradient_methods_pass_randomisation(signs_report, method):
    s = signs_report.summary[method]
    assert s["sanity_images"] == 12
    assert s["sanity_spearman"] < 0.5 and s["sanity_pass"], (method, s["sanity_spearman"])


def test_signs_report_shape(signs_report):
    for m in ALL_METHODS:
        s = signs_report.summary[m]
        assert s["n_images"] == N_SIGNS and s["seconds_per_image"] > 0 and s["model_calls_per_image"] >= 1
        assert s["insertion_auc"] > s["insertion_auc_random"], (m, s)
    assert signs_report.summary["lime"]["stability"]["images"] == 3
    assert signs_report.summary["occlusion"]["stability"] == "deterministic"


@pytest.mark.parametrize("method", ALL_METHODS)
def test_poles_biased_model_uses_more_background(pole_reports, method):
    h, b = pole_reports["honest"].summary[method], pole_reports["biased"].summary[method]
    assert h["n_correct"] >= 10 and b["n_correct"] >= 10
    assert b["background_share"] > h["background_share"], (method, h["background_share"], b["background_share"])
