"""xaudit report: self-contained HTML from real --out folders."""
from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest

from xaudit.cli import main
from _xaudit_results import make_explain_dir, make_monitor_dir, make_stability_dir


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.refs = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for k in ("src", "href"):
            if k in a and tag != "img":
                self.refs.append(a[k])


def _parse(path):
    p = _Collect()
    p.feed(path.read_text())
    return p


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "res"
    make_explain_dir(root / "explain", n=2)
    make_stability_dir(root / "stability")
    make_monitor_dir(root / "monitor")
    return root


def test_report_self_contained(results, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(results), "--out", str(out), "--no-track"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    html = out.read_text()
    p = _parse(out)
    # 2 explanation overlays, grid, std, 2 stability charts, violations chart, windows chart, report.png
    assert len(p.imgs) >= 9
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1])
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing external: only in-page anchors
    assert all(r.startswith("#") for r in p.refs), p.refs
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", html)
    assert "<script" not in html and "@import" not in html
    for text in ("Stop", "class_share", "322", "topk_jaccard_mean", "Stability across seeds", "Monitoring",
                 "no data", "windows"):
        assert text in html


def test_report_default_out_and_single_explain(tmp_path):
    d = make_explain_dir(tmp_path / "e", n=1) / "img0"
    assert main(["report", str(d), "--no-track", "-q"]) == 0
    assert (d / "report.html").exists()
    assert len(_parse(d / "report.html").imgs) == 1


def test_report_bad_sources(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--no-track"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--no-track"]) == 2
    assert "no xaudit results" in capsys.readouterr().err


def _tracked_results(tmp_path):
    import argparse

    import xaudit.tracking as xt
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    a = argparse.Namespace(tracking_uri=uri, experiment="xaudit", no_track=False, run_name=None, quiet=True)
    res = tmp_path / "res"
    with xt.command_run(a, "monitor", params={"threshold": 0.5}) as run:
        make_monitor_dir(res)
        run.log_metrics({"share.14": 0.805})
        run.set_tags({"violation": True})
        run.log_artifacts(res)
    return uri, run, res


def _artifact_names(uri, run_id):
    from mlflow.tracking import MlflowClient
    return {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id)}


def test_report_from_run_id_is_logged_to_the_run(tmp_path, monkeypatch, capsys):
    uri, run, _ = _tracked_results(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["report", run.run_id, "--tracking-uri", uri, "-q"]) == 0
    out = tmp_path / f"report-{run.run_id[:8]}.html"
    assert capsys.readouterr().out.strip() == str(out)
    html = out.read_text()
    for text in ("MLflow run", run.run_id, "share.14", "0.805", "threshold", "class_share", "violation"):
        assert text in html, text
    assert len(_parse(out).imgs) >= 3   # report.png + violations chart + windows chart
    assert out.name in _artifact_names(uri, run.run_id)


def test_report_of_tracked_folder_is_logged_to_its_run(tmp_path):
    uri, run, res = _tracked_results(tmp_path)
    assert (res / "mlflow_run.json").is_file()
    assert main(["report", str(res), "-q"]) == 0
    assert "report.html" in _artifact_names(uri, run.run_id)


def test_unknown_run_id(tmp_path, capsys):
    uri, run, _ = _tracked_results(tmp_path)
    assert main(["report", "0" * 32, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "0" * 32 in err


def test_stability_seed_folders_not_repeated(tmp_path):
    from _xaudit_results import make_explanation
    d = make_stability_dir(tmp_path / "stab")
    for s in (1, 11, 21):
        make_explanation(s).save(d / f"seed-{s}")
    out = tmp_path / "r.html"
    assert main(["report", str(d), "--out", str(out), "--no-track"]) == 0
    # grid, std, pairwise heatmap, summary chart; not the 3 per-seed overlays again
    assert len(_parse(out).imgs) == 4
