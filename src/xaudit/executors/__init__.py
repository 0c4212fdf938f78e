"""Executors: run sweeps of (image, method, seed) tasks locally, on a process pool, or on Ray.

::

    from xaudit.executors import ModelSpec, Task, get_executor
    from xaudit.executors.tasks import explain_task

    spec = ModelSpec.of("signs.onnx", {"labels": "labels.txt"})      # picklable: source + overrides
    tasks = (Task(key=p.stem, image=str(p), method="lime", seed=1,
                  params={"explainer": {"num_samples": 500}}) for p in paths)   # lazy
    with get_executor("process", spec, workers=2) as ex:
        for r in ex.map(explain_task, tasks):          # TaskResults, in task order
            if r.ok: r.value["explanation"] ...
            else:    print(r.key, r.error)

* ``local`` (default): an in-process loop (reuses ``model=`` when given);
* ``process``: ``workers`` spawned processes on this machine;
* ``ray``: one Ray actor per worker, on the cluster at ``ray_address`` or on a local Ray
  instance started for the run (extra ``[ray]``).

Every worker loads the model once (from the :class:`ModelSpec`), runs tasks with torch set
to ``threads`` intra-op threads (default 1 everywhere, which makes results bit-identical
across executors), and resolves image references itself (paths are read on the worker,
:class:`GeneratedImage` are generated there). Results stream back in task order through
a bounded window, so the driver's memory does not depend on the number of tasks. A task
that raises is reported (``TaskResult.ok == False``, ``error``); a task whose worker died
is retried on a fresh worker up to ``retries`` times, then reported. :class:`Ledger`
records finished tasks for resuming. CLI: ``--executor``, ``--workers``, ``--ray-address``,
``--threads`` (``xaudit.cli.common.add_executor_options``).
"""
from __future__ import annotations

from .base import Executor, LocalExecutor, Task, TaskResult
from .images import GeneratedImage, generated_images, resolve_image
from .ledger import Ledger, write_files
from .worker import ModelSpec

EXECUTORS = ("local", "process", "ray")
DEFAULT_RETRIES = 2

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "Task", "TaskResult", "ModelSpec", "GeneratedImage",
           "generated_images", "resolve_image", "Ledger", "write_files", "get_executor"]


def get_executor(name: str = "local", spec: ModelSpec | None = None, workers: int | None = None,
                 ray_address: str | None = None, *, model=None, threads: int | None = 1,
                 retries: int = DEFAULT_RETRIES, window: int | None = None, ship_model: bool | None = None,
                 ray_init: dict | None = None) -> Executor:
    """Build an executor. ``spec``: how workers load the model (required for ``process``
    and ``ray``); ``model``: an already-loaded model the ``local`` executor reuses;
    ``workers``: pool size (default: the CPU count, for Ray the cluster's CPUs);
    ``threads``: torch intra-op threads per worker (keep it equal across executors for
    bit-identical results); ``retries``: attempts after a worker died; ``window``: tasks in
    flight or waiting to be yielded in order (default 2 x workers x depth)."""
    from ..errors import XauditError
    name = str(name or "local").lower()
    if workers is not None and int(workers) < 1:
        raise XauditError(f"--workers must be >= 1, got {workers}")
    if threads is not None and int(threads) < 1:
        raise XauditError(f"--threads must be >= 1, got {threads}")
    if ray_address and name != "ray":
        raise XauditError("--ray-address applies to --executor ray only")
    if name == "local":
        if spec is None and model is None:
            raise XauditError("the local executor needs a model or a model spec")
        return LocalExecutor(spec, threads=threads, model=model, window=window)
    if spec is None:
        raise XauditError(f"--executor {name} needs a model spec (source + overrides) to load the model in its workers")
    if name == "process":
        from .process import ProcessExecutor
        return ProcessExecutor(spec, workers, threads, retries, window)
    if name == "ray":
        from .ray_executor import RayExecutor
        return RayExecutor(spec, workers, threads, retries, window, address=ray_address, ship_model=ship_model,
                           init_kwargs=ray_init)
    raise XauditError(f"unknown executor {name!r}: choose one of {', '.join(EXECUTORS)}")


def executor_from_args(args, model=None, source=None) -> Executor:
    """The executor the CLI options ask for (``--executor/--workers/--ray-address/--threads``)."""
    spec = ModelSpec.from_args(args, source)
    return get_executor(getattr(args, "executor", None) or "local", spec, getattr(args, "workers", None),
                        getattr(args, "ray_address", None), model=model, threads=getattr(args, "threads", 1))
