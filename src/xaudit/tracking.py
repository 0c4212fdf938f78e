"""MLflow tracking (the only module that imports mlflow).

Contract used by every command (the implementation may grow, the calls stay)::

    from xaudit.tracking import command_run
    with command_run(args, "explain", model=model, params={...}) as run:
        run.log_params({...}); run.log_metrics({...}, step=None)
        run.log_artifacts(out_dir); run.log_artifact(path); run.set_tags({...})
        with run.child("seed-11") as sub:      # nested run (stability per seed)
            sub.log_metrics({...})

``args`` carries the global CLI options (tracking_uri, experiment, no_track, run_name);
with ``no_track`` the run is a no-op object. Scripts use ``xaudit.tracking.run(...)``.

NOTE: placeholder no-op implementation until the tracking work lands.
"""
from __future__ import annotations

from contextlib import contextmanager


class _NullRun:
    run_id = None

    def log_params(self, params): pass
    def log_metrics(self, metrics, step=None): pass
    def log_artifacts(self, directory, artifact_path=None): pass
    def log_artifact(self, path, artifact_path=None): pass
    def set_tags(self, tags): pass

    @contextmanager
    def child(self, name, params=None):
        yield _NullRun()


@contextmanager
def command_run(args, command, model=None, params=None, tags=None):
    yield _NullRun()
