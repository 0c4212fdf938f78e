"""``ray``: one Ray actor per worker, the model loaded in the actor's constructor.

Connects to ``address`` (``auto``, ``ray://host:10001``, ``host:6379``) or starts a local
Ray instance (``num_cpus = workers``, no dashboard, quiet logging) that is shut down on
:meth:`RayExecutor.close`. Each actor holds up to ``depth`` (2) tasks so it never waits
for the driver between tasks. An actor that dies (killed, node lost) is replaced by a new
one and the tasks it held are retried there (bounded by ``retries``).

Model files: with ``ship_model=True`` (default when connecting to an existing cluster)
the model file, its sidecars and the override files travel as bytes through the object
store (put once, shared by all actors) and each actor writes them into a private temp
folder; with ``ship_model=False`` every node must see the same path (shared storage).
"""
from __future__ import annotations

import logging
import os

from ..errors import XauditError
from .base import Executor, _Event
from .worker import Outcome

_ACTOR = None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise XauditError("--executor ray needs Ray: pip install 'xaudit[ray]'") from None
    return ray


def _actor_class():
    global _ACTOR
    if _ACTOR is None:
        ray = _import_ray()

        @ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)
        class XauditWorker:
            def __init__(self, spec, threads, bundle=None):
                from . import worker
                if bundle is not None:
                    spec = worker.unpack(bundle, spec)
                worker.init_worker(spec, threads)
                try:
                    worker.get_model()      # load now; a failure is reported per task
                except Exception:  # noqa: BLE001
                    pass

            def run(self, index, fn, task):
                from . import worker
                return index, worker.run_one(fn, task)

            def info(self):
                from . import worker
                return {"worker": worker.worker_id(), "pid": os.getpid(), "loads": worker.loads()}

        _ACTOR = XauditWorker
    return _ACTOR


class RayExecutor(Executor):
    name = "ray"
    depth = 2

    def __init__(self, spec, workers=None, threads=1, retries=2, window=None, model=None, address=None,
                 ship_model=None, init_kwargs=None):
        super().__init__(spec, workers, threads, retries, window, None)
        self.address = address
        self.ship_model = ship_model
        self.init_kwargs = dict(init_kwargs or {})
        self._workers_arg = workers
        self._actors: list = []
        self._refs: dict = {}          # ObjectRef -> (actor slot, index)
        self._own_ray = False
        self._bundle = None
        self._started = False

    def _start(self):
        if self._started:
            return
        ray = _import_ray()
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kw = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False,
                  "configure_logging": True}
            kw.update(self.init_kwargs)
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                ray.init(num_cpus=int(self._workers_arg or os.cpu_count() or 1), **kw)
                self._own_ray = True
        if not self._workers_arg:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        ship = self.ship_model if self.ship_model is not None else bool(self.address)
        if ship and self.spec is not None:
            self._bundle = ray.put(self.spec.packed())
        self._actors = [self._new_actor() for _ in range(self.workers)]
        self._started = True

    def _new_actor(self):
        self.stats["workers_started"] += 1
        cls = _actor_class()
        if not self.address:    # a Ray on this machine: actors see the driver's import path
            import sys
            path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
            cls = cls.options(runtime_env={"env_vars": {"PYTHONPATH": path}})
        return cls.remote(self.spec, self.threads, self._bundle)

    def actor_info(self) -> list[dict]:
        ray = _import_ray()
        self._start()
        return ray.get([a.info.remote() for a in self._actors])

    def _loads(self) -> list[int]:
        n = [0] * len(self._actors)
        for s, _, a in self._refs.values():
            if a is self._actors[s]:
                n[s] += 1
        return n

    def _free(self):
        return sum(self.depth - n for n in self._loads())

    def _submit(self, index, fn, task):
        loads = self._loads()
        slot = min(range(len(self._actors)), key=lambda i: loads[i])
        ref = self._actors[slot].run.remote(index, fn, task)
        self._refs[ref] = (slot, index, self._actors[slot])

    def _wait(self):
        ray = _import_ray()
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
        refs = list(self._refs)
        ready, _ = ray.wait(refs, num_returns=1)
        more, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        events = []
        for ref in dict.fromkeys(ready + more):
            slot, index, actor = self._refs.pop(ref)
            try:
                _, out = ray.get(ref)
                events.append(_Event("done", index, out))
            except (RayActorError, GetTimeoutError) as e:
                reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                events.append(_Event("lost", index, reason=f"Ray actor died ({type(e).__name__}: {reason})"))
                if self._actors[slot] is actor:      # replace it once
                    self.stats["workers_lost"] += 1
                    try:
                        ray.kill(actor, no_restart=True)
                    except Exception:  # noqa: BLE001
                        pass
                    self._actors[slot] = self._new_actor()
            except RayTaskError as e:   # run_one never raises; unpicklable results land here
                msg = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
                events.append(_Event("done", index, Outcome(False, None, msg)))
        return events

    def close(self):
        if not self._started:
            return
        ray = _import_ray()
        for a in self._actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self._actors, self._refs, self._started = [], {}, False
        if self._own_ray and ray.is_initialized():
            ray.shutdown()
            self._own_ray = False
