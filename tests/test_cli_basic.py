"""`xaudit info` / `xaudit predict` and the bad-input contract: one-line message, exit 2."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _gradnets import SmallCNN, custom_vision_onnx, export_onnx  # noqa: E402

from xaudit.cli import main  # noqa: E402

LABELS = ["zeta", "alpha", "mid"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    net = SmallCNN(n=3, seed=1)
    torch.jit.script(net).save(str(d / "net.pt"))
    (d / "net.json").write_text(json.dumps({"labels": LABELS, "input_size": [32, 32]}))
    (d / "net.onnx").write_bytes(export_onnx(net, (32, 32)))
    (d / "labels.txt").write_text("\n".join(LABELS))
    cv = d / "cv"
    cv.mkdir()
    (cv / "model.onnx").write_bytes(custom_vision_onnx(net, (32, 32), labels=LABELS, bias=(0.0, 0.0, 0.0)))
    (cv / "labels.txt").write_text("\n".join(LABELS))
    imgs = d / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(imgs / f"im{i}.png")
    (d / "notimage.png").write_text("this is not a png")
    (d / "junk.onnx").write_bytes(b"\x00\x01garbage")
    (d / "model.xyz").write_bytes(b"????")
    (d / "three.txt").write_text("a\nb\n")
    return d


def _one_line_error(capsys, rc, expect_rc=2, contains=None):
    err = capsys.readouterr().err.strip()
    assert rc == expect_rc, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("xaudit: error:") and "Traceback" not in err
    if contains:
        assert contains in err, err
    return err


def test_info_json(setup, capsys):
    assert main(["info", str(setup / "net.onnx"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "onnx" and info["labels"] == LABELS and info["layout"] == "NCHW"
    assert info["gradients_reachable"] is True and info["input_size"] == [32, 32]


def test_info_human(setup, capsys):
    assert main(["info", str(setup / "cv")]) == 0
    out = capsys.readouterr().out
    assert "custom_vision" in out and "BGR" in out and "gradients" in out


def test_predict_json_identical_top1_across_formats(setup, capsys):
    tops = {}
    for src in ("net.pt", "net.onnx", "cv"):
        assert main(["predict", str(setup / src), str(setup / "imgs"), "--json", "--top-k", "2", "--quiet"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert len(res) == 3 and all(len(r["top"]) == 2 for r in res)
        assert set(res[0]["top"][0]) == {"index", "label", "prob"}
        tops[src] = [r["top"][0]["index"] for r in res]
    assert tops["net.pt"] == tops["net.onnx"]


def test_predict_table(setup, capsys):
    assert main(["predict", str(setup / "net.pt"), str(setup / "imgs" / "im0.png")]) == 0
    out = capsys.readouterr().out
    assert "im0.png" in out and "%" in out


def test_missing_model(setup, capsys):
    _one_line_error(capsys, main(["info", str(setup / "nope.onnx")]), contains="not found")


def test_unknown_format(setup, capsys):
    _one_line_error(capsys, main(["info", str(setup / "model.xyz")]), contains="unknown model format")


def test_corrupt_model(setup, capsys):
    _one_line_error(capsys, main(["info", str(setup / "junk.onnx")]), contains="junk.onnx")


def test_undecodable_image(setup, capsys):
    _one_line_error(capsys, main(["predict", str(setup / "net.onnx"), str(setup / "notimage.png")]),
                    contains="cannot decode image")


def test_missing_image(setup, capsys):
    _one_line_error(capsys, main(["predict", str(setup / "net.onnx"), str(setup / "nope.png")]),
                    contains="image not found")


def test_label_count_mismatch(setup, capsys):
    _one_line_error(capsys, main(["info", str(setup / "net.onnx"), "--labels", str(setup / "three.txt")]),
                    contains="2 labels but the model outputs 3")


def test_bad_override(setup, capsys):
    _one_line_error(capsys, main(["info", str(setup / "net.onnx"), "--mean", "1,2"]), contains="--mean")


def test_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict"])
    assert e.value.code == 2


def test_zip_traversal_cli(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XAUDIT_CACHE", str(tmp_path / "cache"))
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(setup / "cv" / "model.onnx", "model.onnx")
        zf.writestr("../x.txt", "boom")
    _one_line_error(capsys, main(["info", str(z)]), contains="traversal")


def test_console_script_subprocess(setup, tmp_path):
    exe = shutil.which("xaudit") or str(Path(sys.executable).parent / "xaudit")
    env = dict(os.environ)
    r = subprocess.run([exe, "predict", str(setup / "nope.onnx"), "x.png"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("xaudit: error:") and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([exe, "predict", str(setup / "net.onnx"), str(setup / "imgs"), "--json"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 3
