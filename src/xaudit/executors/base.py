"""Tasks, results and the ordered, windowed scheduling loop shared by every executor.

An executor runs ``fn(model, task)`` for a stream of tasks on its workers (each worker
holds the model, loaded once) and yields one :class:`TaskResult` per task **in task
order**. At most ``window`` tasks are in flight or finished-but-not-yet-yielded, so the
driver's memory does not grow with the number of tasks (the task iterable is consumed
lazily). A task whose worker died (killed, crashed) is retried on a fresh worker up to
``retries`` times, then reported failed; a task that raised is reported failed at once
(its error as text) -- the other tasks are unaffected either way.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator


@dataclass
class Task:
    """One unit of work: explain ``image`` with ``method`` and ``seed`` (and ``params``).

    ``key`` is unique and stable across reruns (the resume ledger uses it). ``image`` is a
    *reference* resolved on the worker (:func:`xaudit.executors.images.resolve_image`): a
    file path, a :class:`~xaudit.executors.images.GeneratedImage`, or a (small) array.
    ``params``: method parameters and anything else the task function needs."""

    key: str
    image: Any = None
    method: str | None = None
    seed: int | None = None
    params: dict = field(default_factory=dict)


@dataclass
class TaskResult:
    """``ok`` with ``value`` (what the task function returned) or ``error`` (one line)."""

    index: int
    task: Any
    ok: bool
    value: Any = None
    error: str | None = None
    attempts: int = 1
    worker: str = ""
    seconds: float = 0.0
    loads: int = 0          # model loads in the worker process so far (1 = loaded once)
    user_error: bool = False  # the task raised an XauditError (bad input), not a crash

    @property
    def key(self) -> str:
        return getattr(self.task, "key", str(self.index))


@dataclass
class _Event:
    kind: str               # "done" | "lost"
    index: int
    outcome: Any = None     # worker.Outcome for "done"
    reason: str = ""        # for "lost"


class Executor:
    """Base class. Subclasses implement :meth:`_start`, :meth:`_free`, :meth:`_submit`,
    :meth:`_wait` and :meth:`close`."""

    name = "base"

    def __init__(self, spec=None, workers: int | None = None, threads: int | None = 1, retries: int = 2,
                 window: int | None = None, model=None):
        self.spec = spec
        self.workers = int(workers) if workers else 1
        self.threads = threads
        self.retries = int(retries)
        self._window = window
        self.model = model
        self.stats = {"tasks": 0, "failed": 0, "retried": 0, "workers_started": 0, "workers_lost": 0}

    # -- subclass hooks -------------------------------------------------------------
    def _start(self):
        pass

    def _free(self) -> int:
        raise NotImplementedError

    def _submit(self, index: int, fn, task):
        raise NotImplementedError

    def _wait(self) -> list:
        raise NotImplementedError

    def close(self):
        pass

    # -------------------------------------------------------------------------------
    @property
    def window(self) -> int:
        return int(self._window or max(4, 2 * self.workers * getattr(self, "depth", 1)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def map(self, fn, tasks: Iterable, window: int | None = None) -> Iterator[TaskResult]:
        """Run ``fn(model, task)`` for every task; yield :class:`TaskResult` in task order.
        ``fn`` must be picklable (a module-level function or a ``functools.partial`` of
        one) for the process and Ray executors. ``window`` overrides the executor's."""
        self._start()
        it = iter(tasks)
        retry: deque = deque()
        inflight: dict = {}
        done: dict = {}
        nxt_index = nxt_yield = 0
        exhausted = False
        window = int(window or self.window)
        while True:
            while self._free() > 0 and len(inflight) + len(done) < window:
                if retry:
                    index, task, attempts = retry.popleft()
                elif not exhausted:
                    try:
                        task = next(it)
                    except StopIteration:
                        exhausted = True
                        continue
                    index, attempts = nxt_index, 0
                    nxt_index += 1
                else:
                    break
                inflight[index] = (task, attempts + 1, time.perf_counter())
                self._submit(index, fn, task)
            while nxt_yield in done:
                r = done.pop(nxt_yield)
                nxt_yield += 1
                self.stats["tasks"] += 1
                self.stats["failed"] += 0 if r.ok else 1
                yield r
            if exhausted and not inflight and not retry and not done:
                return
            if not inflight:
                continue
            for ev in self._wait():
                task, attempts, t0 = inflight.pop(ev.index)
                if ev.kind == "done":
                    o = ev.outcome
                    done[ev.index] = TaskResult(ev.index, task, o.ok, o.value, o.error, attempts, o.worker,
                                                o.seconds, o.loads, bool(getattr(o, "user_error", False)))
                elif attempts <= self.retries:
                    self.stats["retried"] += 1
                    retry.append((ev.index, task, attempts))
                else:
                    done[ev.index] = TaskResult(ev.index, task, False, None,
                                                f"WorkerLost: {ev.reason} (tried {attempts} times)", attempts,
                                                "", time.perf_counter() - t0)


class LocalExecutor(Executor):
    """In-process loop (the default): the driver is the only worker. With ``model`` given
    it is reused (no second load); otherwise the spec is loaded once."""

    name = "local"

    def __init__(self, spec=None, workers=None, threads=1, retries=0, window=None, model=None):
        super().__init__(spec, 1, threads, retries, window or 1, model)
        self._pending = None
        self._saved_threads = None

    def _start(self):
        from . import worker
        if self.threads is not None and self._saved_threads is None:
            import torch
            self._saved_threads = torch.get_num_threads()
        worker.init_worker(self.spec, self.threads, model=self.model)
        if self.model is None:
            self.model = worker.get_model()

    def _free(self):
        return 0 if self._pending is not None else 1

    def _submit(self, index, fn, task):
        self._pending = (index, fn, task)

    def _wait(self):
        from . import worker
        index, fn, task = self._pending
        self._pending = None
        worker._STATE["model"] = self.model
        worker.set_threads(self.threads)
        return [_Event("done", index, worker.run_one(fn, task))]

    def close(self):
        if self._saved_threads is not None:
            import torch
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None
