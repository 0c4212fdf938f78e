"""``process``: a pool of worker processes on this machine.

Workers are started with the ``spawn`` method (a fresh interpreter: safe with torch,
whose OpenMP thread pool does not survive ``fork``), each with torch set to ``threads``
intra-op threads (default 1) and its own copy of the model, loaded once on its first
task. One task at a time per worker over a pipe, so the driver always knows which task a
worker held: when a worker dies (killed, segfault, out of memory) only that task is
retried, on a freshly started worker.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import sys
from contextlib import contextmanager
from multiprocessing.connection import wait as mp_wait

from .base import Executor, _Event
from .worker import Outcome


def _main(conn, spec, threads):  # worker process
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the driver's business
    from . import worker
    worker.init_worker(spec, threads)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        index, payload = msg
        try:
            fn, task = pickle.loads(payload)
        except Exception as e:  # noqa: BLE001 - e.g. a task function defined in the driver's __main__
            conn.send((index, Outcome(False, None, f"cannot unpickle the task in the worker: {type(e).__name__}: "
                                      f"{e} (task functions must be importable: define them in a module)")))
            continue
        out = worker.run_one(fn, task)
        try:
            conn.send((index, out))
        except Exception as e:  # noqa: BLE001 - the value could not be pickled
            conn.send((index, Outcome(False, None, f"result not picklable: {type(e).__name__}: {e}",
                                      out.seconds, out.worker, out.loads)))


@contextmanager
def _without_main():
    """Start workers without re-running the driver's ``__main__`` (spawn would otherwise
    import it in every worker, which breaks scripts without an ``if __name__ ==
    "__main__"`` guard). The worker entry point lives in this module, so workers never
    need ``__main__``."""
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__spec__", "__file__") if main is not None and hasattr(main, k)}
    try:
        if main is not None:
            if "__spec__" in saved:
                main.__spec__ = None
            if "__file__" in saved:
                del main.__file__
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


class _Worker:
    __slots__ = ("proc", "conn", "index", "done")

    def __init__(self, proc, conn):
        self.proc, self.conn, self.index, self.done = proc, conn, None, 0


class ProcessExecutor(Executor):
    name = "process"
    start_method = "spawn"

    def __init__(self, spec, workers=None, threads=1, retries=2, window=None, model=None):
        super().__init__(spec, workers or os.cpu_count() or 1, threads, retries, window, None)
        self._ctx = mp.get_context(self.start_method)
        self._pool: list = []
        self._deaths_in_a_row = 0

    def _spawn(self) -> _Worker:
        a, b = self._ctx.Pipe(duplex=True)
        p = self._ctx.Process(target=_main, args=(b, self.spec, self.threads), daemon=True,
                              name="xaudit-worker")
        with _without_main():
            p.start()
        b.close()
        self.stats["workers_started"] += 1
        return _Worker(p, a)

    def _start(self):
        if not self._pool:
            self._pool = [self._spawn() for _ in range(self.workers)]

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._pool]

    def _free(self):
        return sum(1 for w in self._pool if w.index is None)

    def _submit(self, index, fn, task):
        w = next(w for w in self._pool if w.index is None)
        w.index = index
        try:
            w.conn.send((index, pickle.dumps((fn, task), protocol=pickle.HIGHEST_PROTOCOL)))
        except (BrokenPipeError, OSError):
            pass    # dead already: _wait notices through the sentinel

    def _wait(self):
        busy = [w for w in self._pool if w.index is not None]
        ready = set(mp_wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
        events = []
        for w in busy:
            if w.conn not in ready and w.proc.sentinel not in ready:
                continue
            msg = None
            try:
                if w.conn.poll():
                    msg = w.conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg is not None:
                index, out = msg
                w.index = None
                w.done += 1
                self._deaths_in_a_row = 0
                events.append(_Event("done", index, out))
                continue
            if w.proc.is_alive() and w.proc.sentinel not in ready:
                continue
            # the worker died holding a task
            w.proc.join(1)
            code = w.proc.exitcode
            why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            events.append(_Event("lost", w.index, reason=f"worker process {w.proc.pid} died ({why})"))
            self.stats["workers_lost"] += 1
            self._deaths_in_a_row += 1
            if self._deaths_in_a_row > 2 * self.workers + 2 * max(self.retries, 1) + 2:
                raise RuntimeError(f"process workers keep dying ({why}); last: pid {w.proc.pid}")
            try:
                w.conn.close()
            except OSError:
                pass
            self._pool[self._pool.index(w)] = self._spawn()
        return events

    def close(self):
        pool, self._pool = self._pool, []
        for w in pool:
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for w in pool:
            w.proc.join(5)
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(2)
            try:
                w.conn.close()
            except OSError:
                pass

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
