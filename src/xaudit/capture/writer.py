"""Append-only capture writer: SageMaker folder layout, one ``os.write`` per record.

Records land under ``{root}/{endpoint}/{variant}/yyyy/mm/dd/hh/<name>.jsonl``. Each record
is serialised to one line and written with a single ``os.write`` on a file descriptor
opened with ``O_APPEND`` (no user-space buffer to flush), so a killed process leaves
whole lines, except possibly a partial last one, which the reader skips and counts.
Files rotate when the UTC hour changes and when the next record would push the file
past ``max_bytes``.
"""
from __future__ import annotations

import os
import threading
import uuid
from datetime import datetime
from pathlib import Path

from .schema import dumps_line, make_record, utcnow

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class CaptureWriter:
    def __init__(self, root, endpoint: str = "xaudit", variant: str = "AllTraffic",
                 max_bytes: int = DEFAULT_MAX_BYTES, clock=utcnow):
        self.root = Path(root)
        self.endpoint = str(endpoint)
        self.variant = str(variant)
        self.max_bytes = int(max_bytes)
        self.clock = clock
        self._lock = threading.Lock()
        self._fd = None
        self._hour = None
        self._size = 0
        self.path: Path | None = None
        self.records = 0
        self.files = 0

    # ------------------------------------------------------------------ files
    def _open(self, now: datetime):
        self._close()
        d = self.root / self.endpoint / self.variant / now.strftime("%Y/%m/%d/%H")
        d.mkdir(parents=True, exist_ok=True)
        name = f"{now.strftime('%M-%S')}-{now.microsecond // 1000:03d}-{uuid.uuid4().hex[:12]}.jsonl"
        self.path = d / name
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._hour = now.strftime("%Y%m%d%H")
        self._size = os.fstat(self._fd).st_size
        self.files += 1

    def _close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self):
        with self._lock:
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ records
    def write_record(self, record: dict, now: datetime | None = None) -> Path:
        line = dumps_line(record)
        now = now or self.clock()
        with self._lock:
            if (self._fd is None or now.strftime("%Y%m%d%H") != self._hour
                    or (self._size and self._size + len(line) > self.max_bytes)):
                self._open(now)
            view = memoryview(line)
            while view:  # a regular file takes the whole line in one write; loop only for safety
                n = os.write(self._fd, view)
                view = view[n:]
            self._size += len(line)
            self.records += 1
            return self.path

    def capture(self, input_data: bytes, input_content_type: str, output_data: str,
                inference_id: str | None = None) -> dict:
        now = self.clock()
        rec = make_record(input_data, input_content_type, output_data, inference_time=now,
                          inference_id=inference_id)
        self.write_record(rec, now)
        return rec
