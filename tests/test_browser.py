"""Real-browser check: the MLflow UI shows xaudit's runs and metrics, and report.html renders
with all its images, in headless Debian Chromium driven by Playwright.

Run with ``pytest -m browser tests/test_browser.py``. Screenshots are written to the test's
temp folder and, when ``XAUDIT_BROWSER_ARTIFACTS`` names a folder, copied there.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from _mlflow_server import mlflow_server
from _xaudit_results import make_explain_dir, make_monitor_dir, make_stability_dir

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("XAUDIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
                 "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _keep(path: Path):
    dst = os.environ.get("XAUDIT_BROWSER_ARTIFACTS")
    if dst:
        Path(dst).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(dst) / path.name)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """A store produced by a short demo (plus explain/monitor runs if the demo had to skip steps)."""
    import argparse

    import xaudit.tracking as xt
    from xaudit.cli import main
    d = tmp_path_factory.mktemp("browser-demo")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    rc = main(["demo", "--quick", "--steps", "explain,stability", "--out", str(d / "demo"), "--tracking-uri", uri,
               "-q"])
    assert rc == 0
    from mlflow.tracking import MlflowClient
    c = MlflowClient(uri)
    eid = c.get_experiment_by_name("xaudit").experiment_id
    runs = c.search_runs([eid])
    if len(runs) < 3:   # demo steps not available yet: add an explain and a monitor run
        a = argparse.Namespace(tracking_uri=uri, experiment="xaudit", no_track=False, run_name=None, quiet=True)
        with xt.command_run(a, "explain", params={"method": "lime"}) as r:
            ed = make_explain_dir(d / "extra" / "explain", n=1)
            r.log_metrics({"target_prob": 0.91})
            r.log_artifacts(ed)
        with xt.command_run(a, "monitor") as r:
            r.log_metrics({"violations": 1})
            r.log_artifacts(make_monitor_dir(d / "extra" / "monitor"))
        runs = c.search_runs([eid])
    return {"uri": uri, "dir": d, "experiment_id": eid, "runs": runs}


def test_mlflow_ui_shows_runs_and_metrics(browser, demo_store, tmp_path):
    info = demo_store
    top = {r.info.run_id for r in info["runs"] if "mlflow.parentRunId" not in r.data.tags}
    parent_names = sorted({r.info.run_name for r in info["runs"] if r.info.run_id in top})
    # runs of the first two levels (demo + each command's run; per-seed runs are one level deeper)
    names = sorted({r.info.run_name for r in info["runs"]
                    if r.info.run_id in top or r.data.tags.get("mlflow.parentRunId") in top})
    demo_run = next(r for r in info["runs"] if r.info.run_name == "demo")
    metric = "steps_done" if "steps_done" in demo_run.data.metrics else sorted(demo_run.data.metrics)[0]
    with mlflow_server(info["uri"], info["dir"] / "server") as url:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{url}/#/experiments/{info['experiment_id']}/runs")
        page.get_by_text("demo", exact=True).first.wait_for(timeout=60_000)
        close = page.get_by_role("button", name="Close")
        if close.count():
            close.first.click()   # the assistant side panel
        for n in parent_names:
            assert page.get_by_text(n, exact=True).count() >= 1, n
        # expand nested runs (each command's own run under the demo run)
        expanders = page.locator("button[data-component-id*='runnamecellrenderer']")
        for i in range(expanders.count()):
            expanders.nth(i).click()
        for n in names:
            page.get_by_text(n, exact=True).first.wait_for(timeout=20_000)
        shot = tmp_path / "mlflow-runs.png"
        page.screenshot(path=str(shot))
        _keep(shot)
        # chart view: one chart per metric, titled by the metric's key
        page.locator("label:has(input[value=CHART])").click()
        search = page.get_by_placeholder("Search metric charts")
        search.wait_for(timeout=20_000)
        search.fill(metric)
        page.get_by_text(metric, exact=True).first.wait_for(timeout=20_000)
        try:   # let the chart itself draw (plotly) before the screenshot
            page.locator(".js-plotly-plot").first.wait_for(timeout=20_000)
        except Exception:  # noqa: BLE001 - the chart title is the assertion; the drawing is cosmetic
            pass
        page.wait_for_timeout(1500)
        shot2 = tmp_path / "mlflow-charts.png"
        page.screenshot(path=str(shot2))
        _keep(shot2)
        page.close()
    assert shot.stat().st_size > 10_000


def test_report_renders_with_images(browser, demo_store, tmp_path):
    from xaudit.report import build_report
    root = tmp_path / "res"
    make_explain_dir(root / "explain", n=2)
    make_stability_dir(root / "stability")
    make_monitor_dir(root / "monitor")
    reports = [build_report(root, tmp_path / "report.html")]
    demo_report = demo_store["dir"] / "demo" / "report.html"
    if demo_report.exists():
        reports.append(demo_report)
    for rep in reports:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(rep.resolve().as_uri())
        page.wait_for_load_state("load")
        imgs = page.evaluate("""() => Array.from(document.images).map(i => ({
            src: i.src.slice(0, 22), complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))""")
        if rep == reports[0] or any(rep.parent.rglob("*.png")):
            assert imgs, rep
        bad = [i for i in imgs if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
        assert not bad, bad
        assert all(i["src"].startswith("data:image/png;base64") for i in imgs)
        shot = tmp_path / f"report-{rep.parent.name}.png"
        page.screenshot(path=str(shot), full_page=True)
        _keep(shot)
        page.close()
