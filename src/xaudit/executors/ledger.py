"""Resume ledger: one JSON line per finished task in ``<out>/.xaudit-tasks.jsonl``.

The first line holds the run's *fingerprint* (command, model, method, parameters ...).
After a task's output files are completely written, the driver appends
``{"key": ..., "status": "done", ...}`` with one ``os.write`` on an ``O_APPEND``
descriptor followed by ``fsync`` -- the commit point of the task. A rerun with the same
``--out`` and the same fingerprint skips the done tasks (a torn last line, from a kill
during the write, is ignored and its task redone). Failed tasks are recorded with
``"status": "failed"`` and are retried by the next run. A different fingerprint starts
over (the ledger is replaced; files are overwritten as the tasks run again).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

FILE = ".xaudit-tasks.jsonl"


def _norm(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class Ledger:
    def __init__(self, directory, fingerprint: dict, resume: bool = True):
        self.dir = Path(directory)
        self.path = self.dir / FILE
        self.fingerprint = _norm(fingerprint)
        self.done: dict = {}
        self.failed: dict = {}
        self.restarted = False      # an old ledger of another run was replaced
        self._fd = None
        if resume and self.path.exists():
            ok = self._read()
            if not ok:
                self.restarted = True
                self.done, self.failed = {}, {}
                self.path.unlink()
        elif self.path.exists():
            self.path.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._append({"ledger": 1, "fingerprint": self.fingerprint})

    def _read(self) -> bool:
        try:
            lines = self.path.read_bytes().split(b"\n")
        except OSError:
            return False
        try:
            head = json.loads(lines[0])
        except (ValueError, IndexError):
            return False
        if not isinstance(head, dict) or head.get("fingerprint") != self.fingerprint:
            return False
        for ln in lines[1:]:
            try:
                rec = json.loads(ln)
            except ValueError:
                continue        # torn last line
            if not isinstance(rec, dict) or "key" not in rec:
                continue
            if rec.get("status") == "done":
                self.done[rec["key"]] = rec
                self.failed.pop(rec["key"], None)
            elif rec.get("status") == "failed":
                self.failed[rec["key"]] = rec
        return True

    def _append(self, rec: dict):
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._fd, (json.dumps(rec, default=str, separators=(",", ":")) + "\n").encode())
        os.fsync(self._fd)

    def is_done(self, key: str) -> bool:
        return key in self.done

    def mark_done(self, key: str, **info):
        rec = {"key": key, "status": "done", **info}
        self._append(rec)
        self.done[key] = rec
        self.failed.pop(key, None)

    def mark_failed(self, key: str, error: str, **info):
        rec = {"key": key, "status": "failed", "error": error, **info}
        self._append(rec)
        self.failed[key] = rec

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def write_files(directory, files: dict):
    """Write ``{relative name: bytes}`` under ``directory``, each file atomically
    (temp file + rename), so no reader ever sees a torn file."""
    d = Path(directory)
    for name, data in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
