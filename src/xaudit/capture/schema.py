"""SageMaker data-capture record schema (JSON Lines, one record per line).

```
{"captureData": {
   "endpointInput":  {"observedContentType": "image/png", "mode": "INPUT",
                      "data": "<base64>", "encoding": "BASE64"},
   "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                      "data": "[0.01, 0.9, ...]", "encoding": "JSON"}},
 "eventMetadata": {"eventId": "<uuid4>", "inferenceId": "<optional>",
                   "inferenceTime": "2026-11-22T10:15:03Z"},
 "eventVersion": "0"}
```
"""
from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta, timezone

from ..errors import XauditError

ENCODINGS = ("CSV", "JSON", "BASE64")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def format_time(dt: datetime) -> str:
    """SageMaker's inferenceTime format: UTC, second precision, 'Z' suffix."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime(TIME_FORMAT)


def parse_time(text: str, what: str = "time") -> datetime:
    """ISO 8601 -> aware UTC datetime. Accepts 'Z', offsets, fractional seconds, dates;
    naive times are taken as UTC. Raises XauditError (exit 2) on anything else."""
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=timezone.utc)
    s = str(text).strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise XauditError(f"bad {what} {text!r}: expected ISO 8601 like 2026-11-22T10:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '1h', '2d', '1h30m' -> timedelta (XauditError if invalid or <= 0)."""
    import re
    s = str(text).strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", s)
    if not parts or "".join(f"{a}{b}" for a, b in parts) != s.replace(" ", ""):
        raise XauditError(f"bad window {text!r}: expected a duration like 15m, 1h, 1d")
    mult = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    secs = sum(float(a) * mult[b] for a, b in parts)
    if secs <= 0:
        raise XauditError(f"bad window {text!r}: must be positive")
    return timedelta(seconds=secs)


def make_record(input_data: bytes, input_content_type: str, output_data: str,
                output_content_type: str = "application/json", *, event_id: str | None = None,
                inference_time: datetime | None = None, inference_id: str | None = None) -> dict:
    """One capture record: input as BASE64, output as the JSON response body."""
    meta = {"eventId": event_id or str(uuid.uuid4())}
    if inference_id:
        meta["inferenceId"] = str(inference_id)
    meta["inferenceTime"] = format_time(inference_time or utcnow())
    return {
        "captureData": {
            "endpointInput": {"observedContentType": input_content_type or "application/octet-stream",
                              "mode": "INPUT", "data": base64.b64encode(bytes(input_data)).decode("ascii"),
                              "encoding": "BASE64"},
            "endpointOutput": {"observedContentType": output_content_type, "mode": "OUTPUT",
                               "data": output_data, "encoding": "JSON"},
        },
        "eventMetadata": meta,
        "eventVersion": "0",
    }


def dumps_line(record: dict) -> bytes:
    """Compact one-line JSON + newline (no newline can occur inside: JSON escapes it)."""
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")


def validate_record(rec) -> None:
    """Raise ValueError naming the first schema problem of a parsed record."""
    if not isinstance(rec, dict):
        raise ValueError("record is not a JSON object")
    cd = rec.get("captureData")
    if not isinstance(cd, dict):
        raise ValueError("missing captureData")
    for key, mode in (("endpointInput", "INPUT"), ("endpointOutput", "OUTPUT")):
        part = cd.get(key)
        if not isinstance(part, dict):
            raise ValueError(f"missing captureData.{key}")
        if not isinstance(part.get("data"), str):
            raise ValueError(f"captureData.{key}.data is not a string")
        if part.get("encoding") not in ENCODINGS:
            raise ValueError(f"unknown encoding {part.get('encoding')!r} in captureData.{key}")
    md = rec.get("eventMetadata")
    if not isinstance(md, dict) or not isinstance(md.get("inferenceTime"), str):
        raise ValueError("missing eventMetadata.inferenceTime")


def decode_data(part: dict) -> bytes | str:
    """Decode captureData.endpointInput/endpointOutput ``data`` by its ``encoding``:
    BASE64 -> bytes, JSON / CSV -> str."""
    enc = part.get("encoding")
    data = part.get("data")
    if enc == "BASE64":
        return base64.b64decode(data, validate=False)
    if enc in ("JSON", "CSV"):
        return data
    raise ValueError(f"unknown encoding {enc!r}")
