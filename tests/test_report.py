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
    # 2 explanation overlays, grid, std, 2 stability charts, violations chart, report.png
    assert len(p.imgs) >= 8
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1])
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing external: only in-page anchors
    assert all(r.startswith("#") for r in p.refs), p.refs
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", html)
    assert "<script" not in html and "@import" not in html
    for text in ("Stop", "class_share", "322", "topk_jaccard_mean", "Stability across seeds", "Monitoring"):
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
