"""Streaming reader of SageMaker-style capture files (a folder tree, one file, or any
fsspec URL such as ``s3://bucket/prefix`` when ``s3fs`` is installed).

Records are yielded one by one (memory stays flat whatever the capture size). The
window ``[start, end)`` is applied to each record's ``eventMetadata.inferenceTime``;
the ``yyyy/mm/dd/hh`` folders are only used to skip whole hours that cannot
intersect the window. Malformed or truncated lines and records with an unknown
``encoding`` are skipped and counted (with the reason) in :class:`ReadStats`.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from ..errors import CaptureFormatError
from .schema import decode_data, parse_time, validate_record

_HOUR_RE = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{2})/[^/]+$")


@dataclass
class ReadStats:
    files: int = 0
    files_pruned: int = 0
    lines: int = 0
    records: int = 0
    predictions: int = 0
    outside_window: int = 0
    malformed: int = 0
    malformed_reasons: Counter = field(default_factory=Counter)
    first_time: str | None = None
    last_time: str | None = None

    def bad(self, reason: str):
        self.malformed += 1
        self.malformed_reasons[reason] += 1

    def to_dict(self) -> dict:
        return {"files": self.files, "files_pruned": self.files_pruned, "lines": self.lines,
                "records": self.records, "predictions": self.predictions,
                "outside_window": self.outside_window, "malformed": self.malformed,
                "malformed_reasons": dict(self.malformed_reasons),
                "first_time": self.first_time, "last_time": self.last_time}


@dataclass
class CaptureRecord:
    time: datetime
    event_id: str | None
    inference_id: str | None
    outputs: np.ndarray          # (k, C) probabilities (k predictions in this record)
    input_part: dict             # raw captureData.endpointInput (decode lazily)
    path: str = ""
    labels: dict | None = None   # class index -> label, when the output JSON names them

    @property
    def input_content_type(self) -> str:
        return str(self.input_part.get("observedContentType") or "")

    def input_bytes(self) -> bytes:
        d = decode_data(self.input_part)
        return d if isinstance(d, bytes) else d.encode("utf-8")


def parse_output(part: dict) -> np.ndarray:
    return _parse_output(part)[0]


def _labels_from(obj, out: dict):
    if isinstance(obj, dict):
        if "predicted_index" in obj and "predicted_label" in obj:
            out[int(obj["predicted_index"])] = str(obj["predicted_label"])
        for t in obj.get("top_k") or []:
            if isinstance(t, dict) and "index" in t and "label" in t:
                out[int(t["index"])] = str(t["label"])
        preds = obj.get("predictions")
        if isinstance(preds, list):
            for p in preds:
                _labels_from(p, out)


def _parse_output(part: dict):
    """captureData.endpointOutput -> (k, C) float array. Accepts a JSON list of
    probabilities, a list of lists, ``{"probabilities": ...}``, ``{"predictions": ...}``
    (lists or objects with "probabilities"/"scores"), CSV rows, or BASE64 of either."""
    data = decode_data(part)
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    enc = part.get("encoding")
    text = data.strip()
    if enc == "CSV" or (enc == "BASE64" and text[:1] not in "[{"):
        rows = [r for r in text.replace("\r", "").split("\n") if r.strip()]
        arr = np.array([[float(v) for v in r.split(",")] for r in rows], dtype=np.float64)
        labels = None
    else:
        obj = json.loads(text)
        arr = _json_probs(obj)
        labels = {}
        _labels_from(obj, labels)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] < 1 or arr.shape[0] < 1:
        raise ValueError(f"output has shape {arr.shape}, expected (k, classes)")
    if not np.all(np.isfinite(arr)):
        raise ValueError("output has non-finite values")
    return arr, (labels or None)


def _json_probs(obj) -> np.ndarray:
    if isinstance(obj, dict):
        for key in ("probabilities", "predictions", "scores", "probs", "outputs"):
            if key in obj:
                return _json_probs(obj[key])
        raise ValueError("output JSON object has no probabilities/predictions")
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        return np.stack([_json_probs(o).reshape(-1) for o in obj])
    arr = np.asarray(obj, dtype=np.float64)
    return arr


def list_files(source: str):
    """-> (fs, [paths]) of .jsonl files under ``source`` (folder, file or fsspec URL)."""
    import fsspec
    try:
        fs, root = fsspec.core.url_to_fs(str(source))
    except ImportError as e:
        raise CaptureFormatError(f"cannot read {source}: {e} (install the fsspec backend, e.g. s3fs)") from None
    except ValueError as e:
        raise CaptureFormatError(f"cannot read {source}: {e}") from None
    try:
        if not fs.exists(root):
            raise CaptureFormatError(f"capture not found: {source}")
        if fs.isfile(root):
            return fs, [root]
        files = sorted(p for p in fs.find(root) if p.endswith(".jsonl"))
    except (OSError, PermissionError) as e:
        raise CaptureFormatError(f"cannot read {source}: {e}") from None
    return fs, files


def _hour_of(path: str):
    m = _HOUR_RE.search(path.replace("\\", "/"))
    if not m:
        return None
    try:
        y, mo, d, h = (int(x) for x in m.groups())
        return datetime(y, mo, d, h, tzinfo=timezone.utc)
    except ValueError:
        return None


def iter_records(source, start=None, end=None, stats: ReadStats | None = None, files=None):
    """Yield :class:`CaptureRecord` with ``start <= inferenceTime < end`` (either bound
    optional), in file order. ``stats`` (a ReadStats) is filled as a side effect."""
    stats = stats if stats is not None else ReadStats()
    start = parse_time(start, "start") if start is not None else None
    end = parse_time(end, "end") if end is not None else None
    fs, paths = files if files is not None else list_files(source)
    for path in paths:
        hour = _hour_of(path)
        if hour is not None and ((start and hour + timedelta(hours=1) <= start) or (end and hour >= end)):
            stats.files_pruned += 1
            continue
        stats.files += 1
        with fs.open(path, "rb") as f:
            for raw in f:
                stats.lines += 1
                rec = _parse_line(raw, stats, path)
                if rec is None:
                    continue
                t = rec.time
                if (start and t < start) or (end and t >= end):
                    stats.outside_window += 1
                    continue
                stats.records += 1
                stats.predictions += rec.outputs.shape[0]
                ts = t.strftime("%Y-%m-%dT%H:%M:%SZ")
                if stats.first_time is None or ts < stats.first_time:
                    stats.first_time = ts
                if stats.last_time is None or ts > stats.last_time:
                    stats.last_time = ts
                yield rec


def _parse_line(raw: bytes, stats: ReadStats, path: str):
    if not raw.strip():
        return None  # blank lines are not records
    if not raw.endswith(b"\n"):
        # the last line of a file cut by a crash: skip unless it is complete JSON
        try:
            json.loads(raw)
        except ValueError:
            stats.bad("truncated line")
            return None
    try:
        rec = json.loads(raw)
    except ValueError:
        stats.bad("invalid JSON")
        return None
    try:
        validate_record(rec)
    except ValueError as e:
        msg = str(e)
        stats.bad("unknown encoding" if msg.startswith("unknown encoding") else msg)
        return None
    try:
        t = parse_time(rec["eventMetadata"]["inferenceTime"])
    except Exception:  # noqa: BLE001 - XauditError for a bad time inside data
        stats.bad("bad inferenceTime")
        return None
    cd = rec["captureData"]
    try:
        outputs, labels = _parse_output(cd["endpointOutput"])
    except Exception:  # noqa: BLE001 - any decoding problem is a malformed record
        stats.bad("undecodable output")
        return None
    md = rec["eventMetadata"]
    return CaptureRecord(time=t, event_id=md.get("eventId"), inference_id=md.get("inferenceId"),
                         outputs=outputs, input_part=cd["endpointInput"], path=path, labels=labels)


def read_all(source, start=None, end=None):
    """Convenience for small captures/tests: (list of records, ReadStats)."""
    st = ReadStats()
    return list(iter_records(source, start, end, st)), st
