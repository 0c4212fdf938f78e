"""Azure Custom Vision export bundles (folder or ``.zip``).

A bundle holds ``model.onnx`` or ``model.pb``, ``labels.txt`` (index order) and usually
``cvexport.manifest`` / ``metadata_properties.json``. The inner model is loaded by the
ONNX or TF adapter with Custom Vision's preprocessing: BGR, 0-255, no mean/std outside
the graph (older exports subtract the mean inside with ``ImageScaler``), and the
documented resize policy ``custom-vision`` (longest side <= 1600, center square crop,
resize to 256, center crop to the input size). Zips are extracted safely (no absolute
paths, no ``..``, no links, size-capped) into a cache folder keyed by the zip's sha256.
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from xaudit.errors import ModelLoadError

from . import read_labels, sha256_of

MODEL_NAMES = ("model.onnx", "model.pb")
MAX_UNCOMPRESSED = 2 << 30


def is_bundle_dir(p: Path) -> bool:
    return p.is_dir() and (any((p / n).is_file() for n in MODEL_NAMES) or (p / "cvexport.manifest").is_file())


def is_bundle_zip(p: Path) -> bool:
    try:
        with zipfile.ZipFile(p) as z:
            names = {PurePosixPath(n).name for n in z.namelist()}
    except (zipfile.BadZipFile, OSError):
        return False
    return bool(names & set(MODEL_NAMES)) or "cvexport.manifest" in names


def _cache_root() -> Path:
    root = os.environ.get("XAUDIT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                          os.path.join(os.path.expanduser("~"), ".cache"), "xaudit")
    return Path(root) / "bundles"


def safe_extract(zpath: Path, dest: Path) -> Path:
    """Extract ``zpath`` into ``dest`` refusing traversal, absolute paths and links."""
    try:
        z = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelLoadError(f"cannot open bundle {zpath}: {e}") from None
    with z:
        total = 0
        for info in z.infolist():
            name = info.filename
            pp = PurePosixPath(name.replace("\\", "/"))
            if name.startswith(("/", "\\")) or pp.is_absolute() or ".." in pp.parts or (pp.parts and ":" in pp.parts[0]):
                raise ModelLoadError(f"unsafe path {name!r} in bundle {zpath} (path traversal refused)")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ModelLoadError(f"bundle {zpath} contains a symbolic link {name!r} (refused)")
            total += info.file_size
            if total > MAX_UNCOMPRESSED:
                raise ModelLoadError(f"bundle {zpath} expands to more than {MAX_UNCOMPRESSED >> 30} GiB (refused)")
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
        for info in z.infolist():
            target = tmp / PurePosixPath(info.filename.replace("\\", "/"))
            if not str(target.resolve()).startswith(str(tmp.resolve())):
                raise ModelLoadError(f"unsafe path {info.filename!r} in bundle {zpath} (path traversal refused)")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process extracted it first
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _find_root(d: Path) -> Path:
    if is_bundle_dir(d):
        return d
    for sub in sorted(d.rglob("*")):
        if sub.is_dir() and is_bundle_dir(sub):
            return sub
    raise ModelLoadError(f"{d} is not a Custom Vision export: no model.onnx / model.pb found")


def load(source, **ov):
    p = Path(source)
    if not p.exists():
        raise ModelLoadError(f"model not found: {p}")
    sha = sha256_of(p)
    if p.is_file():
        dest = _cache_root() / sha[:24]
        if not dest.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
            safe_extract(p, dest)
        root = _find_root(dest)
    else:
        root = _find_root(p)
    manifest = {}
    mf = root / "cvexport.manifest"
    if mf.is_file():
        try:
            manifest = json.loads(mf.read_text(encoding="utf-8-sig"))
        except (OSError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"cannot read {mf}: {e}") from None
    meta_props = {}
    mp = root / "metadata_properties.json"
    if mp.is_file():
        try:
            meta_props = json.loads(mp.read_text(encoding="utf-8-sig"))
        except (OSError, json.JSONDecodeError):
            meta_props = {}
    model_file = root / manifest.get("ModelFileName", "") if manifest.get("ModelFileName") else None
    if model_file is None or not model_file.is_file():
        model_file = next((root / n for n in MODEL_NAMES if (root / n).is_file()), None)
    if model_file is None:
        raise ModelLoadError(f"{p}: the bundle has no model.onnx or model.pb")
    label_file = root / manifest.get("LabelFileName", "labels.txt")
    defaults = {"color": "bgr", "value_range": "0-255", "resize": "custom-vision"}
    if ov.get("labels") is None:
        if not label_file.is_file():
            raise ModelLoadError(f"{p}: the bundle has no labels.txt (pass --labels FILE)")
        defaults["labels"] = read_labels(label_file)
    if model_file.suffix == ".onnx":
        from . import onnx as inner_mod
        inner = "onnx"
    else:
        from . import tf_frozen as inner_mod
        inner = "tf_frozen"
    m = inner_mod.load(model_file, defaults=defaults, **ov)
    m.format = "custom_vision"
    m.source = str(source)
    m.sha256 = sha
    m.extra_info.update({"bundle_inner_format": inner, "bundle_root": str(root),
                         "manifest": manifest or None, "metadata_properties": meta_props or None})
    return m
