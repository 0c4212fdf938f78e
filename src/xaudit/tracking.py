"""MLflow tracking (the only module that imports mlflow, lazily).

Contract used by every command (the implementation may grow, the calls stay)::

    from xaudit.tracking import command_run
    with command_run(args, "explain", model=model, params={...}) as run:
        run.log_params({...}); run.log_metrics({...}, step=None)
        run.log_artifacts(out_dir); run.log_artifact(path); run.set_tags({...})
        with run.child("seed-11") as sub:      # nested run (stability per seed)
            sub.log_metrics({...})

``args`` carries the global CLI options (tracking_uri, experiment, no_track, run_name);
with ``no_track`` the run is a no-op object. Scripts use :func:`run`::

    import xaudit.tracking as xt
    with xt.run("my study", params={"method": "lime"}) as r:
        xt.log_explanation(r, explanation, "out/exp")

Design: *record now, write at the end*.
-----------------------------------------
While a command works, the run object only records what it is given (params, metrics
with step and timestamp, tags, and a private copy of every artifact). When the ``with``
block ends, everything is written to MLflow in a few batched calls, with the real start
and end times, and status ``FINISHED`` (or ``FAILED`` when the block raised; the
exception still propagates; ``KILLED`` on Ctrl-C).

Consequences:

* a remote tracking server is probed once, quickly (``PROBE_TIMEOUT`` seconds, no
  retries), before the command works; if it does not answer, the command still runs and
  writes its ``--out`` files, then :class:`~xaudit.errors.TrackingError` is raised
  (one line, exit 2, suggesting ``--no-track``);
* any failure while writing to the store at the end is also a ``TrackingError``;
* MLflow's HTTP retries (minutes by default) are bounded during the final write
  (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT`` defaults, unless
  the user set them);
* a command run opened while another run is active in the same process (``xaudit demo``
  calling ``explain``, ``stability`` ...) becomes a nested child of the active run;
* after writing, ``mlflow_run.json`` (run id, experiment id, tracking URI) is dropped into
  each directory given to ``log_artifacts`` so that ``xaudit report DIR`` can attach the
  report to the run that produced ``DIR``.
"""
from __future__ import annotations

import contextvars
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import TrackingError

DEFAULT_EXPERIMENT = "xaudit"
DEFAULT_URI = "sqlite:///mlflow.db"
PROBE_TIMEOUT = 3.0
MAX_PARAM_CHARS = 500
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
RUN_MARKER = "mlflow_run.json"

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("xaudit_active_run", default=None)


# ----------------------------------------------------------------------------- helpers
def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri`` > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///mlflow.db`` (working directory).

    Relative ``sqlite:///`` and ``file:`` paths are made absolute, so that the URI
    printed to the user keeps working from any directory."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rest = uri[len("sqlite:///"):]
        if rest and rest != ":memory:":
            uri = "sqlite:///" + str(Path(rest).resolve())
    elif uri.startswith("file:") and not uri.startswith("file:///") and not uri.startswith("file://"):
        uri = Path(uri[len("file:"):]).resolve().as_uri()
    elif "://" not in uri and not uri.startswith(("databricks", "sqlite")):
        # a bare path: MLflow treats it as a file store
        uri = Path(uri).resolve().as_uri()
    return uri


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def probe(uri: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Return None when the tracking store at ``uri`` looks usable, else a short reason.

    HTTP(S): one GET, no retries, ``timeout`` seconds; any HTTP answer counts as reachable
    (authentication problems surface later with MLflow's own message)."""
    if not _is_http(uri):
        if uri.startswith("sqlite:///"):
            p = Path(uri[len("sqlite:///"):])
            if not p.parent.is_dir():
                return f"directory {p.parent} does not exist"
        return None
    import urllib.error
    import urllib.request
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=" + DEFAULT_EXPERIMENT
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except urllib.error.URLError as e:
        reason = e.reason
        return str(getattr(reason, "strerror", None) or reason)
    except (TimeoutError, OSError) as e:
        return str(getattr(e, "strerror", None) or e or type(e).__name__)


def _unreachable_message(uri: str, reason: str) -> str:
    return (f"cannot reach the MLflow tracking server {uri} ({reason}); output files were written; "
            f"start the server, pass another --tracking-uri, or use --no-track")


_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


def _key(k) -> str:
    k = _KEY_BAD.sub("_", str(k)).strip("/") or "_"
    return k[:250]


def _param_value(v) -> str:
    if isinstance(v, (dict, list, tuple)):
        try:
            v = json.dumps(v, default=str, separators=(",", ":"))
        except (TypeError, ValueError):
            v = str(v)
    s = str(v)
    if len(s) > MAX_PARAM_CHARS:
        s = s[:MAX_PARAM_CHARS - 3] + "..."
    return s


def _tag_value(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    s = str(v)
    return s[:5000]


def _metric_value(v):
    try:
        import numpy as np
        if isinstance(v, np.ndarray):
            if v.size != 1:
                return None
            v = v.reshape(()).item()
        elif isinstance(v, np.generic):
            v = v.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None


def flatten(d: dict, prefix: str = "", sep: str = ".") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1} (lists of scalars stay values)."""
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


_SHA_CACHE: dict = {}


def file_sha256(path) -> str | None:
    """sha256 of a file; of a directory: of its sorted (relative path, file sha256) list."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key in _SHA_CACHE:
        return _SHA_CACHE[key]
    h = hashlib.sha256()
    if p.is_file():
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    elif p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(p)).encode())
            h.update(file_sha256(f).encode())
    else:
        return None
    _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def model_params(model) -> dict:
    """Params describing a loaded model: source, format, sha256, input size, classes."""
    if model is None:
        return {}
    src = getattr(model, "source", None)
    out = {"model.source": src, "model.format": getattr(model, "format", None)}
    sha = getattr(model, "sha256", None)
    if callable(sha):
        sha = sha()
    if not sha and src:
        sha = file_sha256(src)
    if sha:
        out["model.sha256"] = sha
    size = getattr(model, "input_size", None)
    if size:
        out["model.input_size"] = "x".join(str(int(s)) for s in size)
    labels = getattr(model, "labels", None)
    if labels:
        out["model.classes"] = len(labels)
    return {k: v for k, v in out.items() if v is not None}


def _model_name(model) -> str:
    src = getattr(model, "source", None)
    if not src:
        return ""
    return Path(str(src).rstrip("/")).name


def _now_ms() -> int:
    return int(time.time() * 1000)


def _version() -> str:
    from . import __version__
    return __version__


# ----------------------------------------------------------------------------- run objects
class _NullRun:
    """What ``--no-track`` gives: every call does nothing."""

    run_id = None
    experiment_id = None
    tracking_uri = None
    enabled = False

    def log_params(self, params): pass
    def log_param(self, key, value): pass
    def log_metrics(self, metrics, step=None): pass
    def log_metric(self, key, value, step=None): pass
    def log_artifacts(self, directory, artifact_path=None): pass
    def log_artifact(self, path, artifact_path=None): pass
    def log_text(self, text, artifact_file): pass
    def log_dict(self, obj, artifact_file): pass
    def set_tags(self, tags): pass
    def set_tag(self, key, value): pass
    def mark_failed(self): pass

    @contextmanager
    def child(self, name, params=None, tags=None):
        yield _NullRun()

    def url(self):
        return None


class Run(_NullRun):
    """A recorded run (see the module docstring: recorded now, written at the end)."""

    enabled = True

    def __init__(self, name: str, *, params=None, tags=None, parent: "Run | None" = None,
                 recording: bool = True):
        self.name = name
        self.parent = parent
        self.recording = recording
        self.params: dict = {}
        self.metrics: list = []          # (key, value, step, timestamp_ms)
        self.tags: dict = {}
        self.artifacts: list = []        # (staged local path, artifact_path or None, is_dir)
        self.marker_dirs: list = []      # directories given to log_artifacts
        self.children: list = []
        self.start_time = _now_ms()
        self.end_time = None
        self.status = "RUNNING"
        self.run_id = None
        self.experiment_id = None
        self.tracking_uri = None
        self._stage = None
        if params:
            self.log_params(params)
        if tags:
            self.set_tags(tags)

    # --------------------------------------------------------------- recording API
    def log_params(self, params):
        if not self.recording or not params:
            return
        for k, v in params.items():
            if v is None:
                continue
            self.params[_key(k)] = _param_value(v)

    def log_param(self, key, value):
        self.log_params({key: value})

    def log_metrics(self, metrics, step=None):
        if not self.recording or not metrics:
            return
        ts = _now_ms()
        for k, v in flatten(metrics).items():
            fv = _metric_value(v)
            if fv is None:
                continue
            self.metrics.append((_key(k), fv, int(step) if step is not None else 0, ts))

    def log_metric(self, key, value, step=None):
        self.log_metrics({key: value}, step=step)

    def set_tags(self, tags):
        if not self.recording or not tags:
            return
        for k, v in tags.items():
            if v is None:
                continue
            self.tags[_key(k)] = _tag_value(v)

    def set_tag(self, key, value):
        self.set_tags({key: value})

    def mark_failed(self):
        """End this run as FAILED even though no exception leaves the block (e.g. a command
        that reports a failure through its exit code)."""
        self.status = "FAILED"

    def _stage_dir(self) -> Path:
        if self._stage is None:
            self._stage = Path(tempfile.mkdtemp(prefix="xaudit-track-"))
        return self._stage

    def log_artifact(self, path, artifact_path=None):
        """Record one file (copied now, uploaded when the run ends)."""
        if not self.recording:
            return
        p = Path(path)
        if not p.is_file():
            return
        dst = self._stage_dir() / f"{len(self.artifacts):04d}"
        dst.mkdir()
        shutil.copy2(p, dst / p.name)
        self.artifacts.append((dst / p.name, artifact_path, False))

    def log_artifacts(self, directory, artifact_path=None):
        """Record a directory's files (copied now, uploaded when the run ends)."""
        if not self.recording:
            return
        d = Path(directory)
        if not d.is_dir():
            return
        dst = self._stage_dir() / f"{len(self.artifacts):04d}"
        shutil.copytree(d, dst, ignore=shutil.ignore_patterns(RUN_MARKER, "__pycache__", "mlruns",
                                                               "mlartifacts", "*.db"))
        self.artifacts.append((dst, artifact_path, True))
        self.marker_dirs.append(d.resolve())

    def log_text(self, text, artifact_file):
        if not self.recording:
            return
        dst = self._stage_dir() / f"{len(self.artifacts):04d}"
        dst.mkdir()
        f = dst / Path(artifact_file).name
        f.write_text(text)
        parent = str(Path(artifact_file).parent)
        self.artifacts.append((f, None if parent == "." else parent, False))

    def log_dict(self, obj, artifact_file):
        self.log_text(json.dumps(obj, indent=2, default=str), artifact_file)

    @contextmanager
    def child(self, name, params=None, tags=None):
        """A nested run (e.g. one per seed of a stability sweep)."""
        sub = Run(name, params=params, tags=None, parent=self, recording=self.recording)
        # children inherit the descriptive tags of their parent
        sub.tags.update({k: v for k, v in self.tags.items() if k.startswith("xaudit.")})
        sub.set_tags(tags)
        self.children.append(sub)
        token = _ACTIVE.set(sub)
        try:
            yield sub
        except KeyboardInterrupt:
            sub._end("KILLED")
            raise
        except BaseException:
            sub._end("FAILED")
            raise
        else:
            sub._end("FINISHED")
        finally:
            _ACTIVE.reset(token)

    def _end(self, status):
        if self.end_time is None:
            self.end_time = _now_ms()
        if self.status == "RUNNING":
            self.status = status
        for c in self.children:
            c._end(status)

    def url(self):
        if not (self.run_id and self.tracking_uri and _is_http(self.tracking_uri)):
            return None
        return f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def cleanup(self):
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
        for c in self.children:
            c.cleanup()


# ----------------------------------------------------------------------------- writing
@contextmanager
def _bounded_http(uri: str = ""):
    """Keep MLflow's HTTP retries short unless the user configured them; allow MLflow 3's
    file store (in "maintenance mode", refused by default) when the user asked for one."""
    defaults = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    if uri.startswith("file:"):
        defaults["MLFLOW_ALLOW_FILE_STORE"] = "true"
    set_here = [k for k in defaults if k not in os.environ]
    for k in set_here:
        os.environ[k] = defaults[k]
    try:
        yield
    finally:
        for k in set_here:
            os.environ.pop(k, None)


@contextmanager
def _quiet_logs():
    import logging
    names = ["alembic", "alembic.runtime.migration", "mlflow.store.db.utils", "mlflow.tracking",
             "mlflow.store", "mlflow.utils.requirements_utils"]
    old = {}
    for n in names:
        lg = logging.getLogger(n)
        old[n] = lg.level
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, lvl in old.items():
            logging.getLogger(n).setLevel(lvl)


def get_client(tracking_uri: str):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.tracking import MlflowClient
        return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(client, name: str) -> str:
    """Id of experiment ``name`` (created or restored if needed) tagged for the runs UI."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        uri = getattr(client, "tracking_uri", None) or getattr(client, "_tracking_uri", "") or ""
        if uri.startswith("sqlite:///"):
            # artifacts beside the database (not in whatever directory we happen to run in)
            db = Path(uri[len("sqlite:///"):])
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "experiment"
            location = (db.parent / "mlartifacts" / safe).as_uri()
        try:
            eid = client.create_experiment(name, artifact_location=location,
                                           tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # noqa: BLE001 - created concurrently by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            eid = exp.experiment_id
        return eid
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def _chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _write_run(client, eid: str, run: Run, parent_id: str | None):
    from mlflow.entities import Metric, Param, RunTag
    tags = dict(run.tags)
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    created = client.create_run(eid, start_time=run.start_time, tags=tags, run_name=run.name)
    rid = created.info.run_id
    run.run_id, run.experiment_id = rid, eid
    params = [Param(k, v) for k, v in run.params.items()]
    metrics = [Metric(k, v, ts, step) for k, v, step, ts in run.metrics]
    for chunk in _chunks(params, 100):
        client.log_batch(rid, params=chunk)
    for chunk in _chunks(metrics, 1000):
        client.log_batch(rid, metrics=chunk)
    for path, apath, is_dir in run.artifacts:
        if is_dir:
            if any(Path(path).iterdir()):
                client.log_artifacts(rid, str(path), apath)
        else:
            client.log_artifact(rid, str(path), apath)
    for c in run.children:
        _write_run(client, eid, c, rid)
    client.set_terminated(rid, status=run.status, end_time=run.end_time or _now_ms())


def _write_markers(run: Run, tracking_uri: str, experiment: str):
    info = {"run_id": run.run_id, "experiment_id": run.experiment_id, "experiment": experiment,
            "tracking_uri": tracking_uri, "run_name": run.name}
    for d in run.marker_dirs:
        try:
            (Path(d) / RUN_MARKER).write_text(json.dumps(info, indent=2))
        except OSError:
            pass
    for c in run.children:
        _write_markers(c, tracking_uri, experiment)


class _Warmup:
    """Open the store (import mlflow, create/migrate a new sqlite database, find or create the
    experiment) in a background thread while the command works; :func:`flush` then reuses it.
    A brand-new sqlite store takes MLflow ~5-10 s of schema migrations on this class of
    machine: paid in parallel instead of at the end. Any failure is left for flush to redo
    (and report) in the foreground."""

    def __init__(self, tracking_uri: str, experiment: str):
        import threading
        self.uri, self.experiment = tracking_uri, experiment
        self.client = self.eid = None
        self.thread = threading.Thread(target=self._work, name="xaudit-mlflow-warmup", daemon=True)
        self.thread.start()

    def _work(self):
        try:
            import warnings
            with warnings.catch_warnings(), _quiet_logs():
                warnings.simplefilter("ignore")
                client = get_client(self.uri)
                eid = ensure_experiment(client, self.experiment)
            self.client, self.eid = client, eid
        except BaseException:  # noqa: BLE001 - flush redoes it and reports
            pass

    def result(self, timeout: float = 120.0):
        self.thread.join(timeout)
        return (self.client, self.eid) if not self.thread.is_alive() else (None, None)


def flush(run: Run, tracking_uri: str, experiment: str, warmup: "_Warmup | None" = None):
    """Write a recorded top-level run (and its children) to the store; TrackingError on failure."""
    try:
        with _bounded_http(tracking_uri), _quiet_logs():
            client, eid = warmup.result() if warmup is not None else (None, None)
            if client is None:
                client = get_client(tracking_uri)
                eid = ensure_experiment(client, experiment)
            _write_run(client, eid, run, None)
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001 - any store failure becomes one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if len(msg) > 300:
            msg = msg[:300] + "..."
        raise TrackingError(f"could not log to MLflow at {tracking_uri}: {msg} "
                            f"(output files were written; use --no-track to skip tracking)") from e
    run.tracking_uri = tracking_uri
    _set_uri(run, tracking_uri)
    _write_markers(run, tracking_uri, experiment)


def _set_uri(run, uri):
    run.tracking_uri = uri
    for c in run.children:
        _set_uri(c, uri)


@contextmanager
def _top_level(name: str, experiment: str, tracking_uri: str | None, params=None, tags=None,
               announce=None):
    uri = resolve_tracking_uri(tracking_uri)
    reason = probe(uri)
    run = Run(name, params=params, tags=tags, recording=reason is None)
    # only for sqlite stores (slow to create; a server or file store opens quickly)
    warmup = _Warmup(uri, experiment) if reason is None and uri.startswith("sqlite:") else None
    run.tracking_uri = uri
    token = _ACTIVE.set(run)
    status = "FINISHED"
    try:
        yield run
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        _ACTIVE.reset(token)
        run._end(status)
        exc = sys.exc_info()[1]
        try:
            if reason is not None:
                if exc is None:
                    raise TrackingError(_unreachable_message(uri, reason))
                # the command's own error wins; say why nothing was logged
                print(f"xaudit: warning: {_unreachable_message(uri, reason)}", file=sys.stderr)
            else:
                try:
                    flush(run, uri, experiment, warmup)
                except TrackingError as e:
                    if exc is None:
                        raise
                    print(f"xaudit: warning: {e}", file=sys.stderr)
                else:
                    if announce:
                        announce(run)
        finally:
            run.cleanup()


def active_run():
    """The run currently open in this process (or None)."""
    return _ACTIVE.get()


# ----------------------------------------------------------------------------- public API
@contextmanager
def command_run(args, command: str, model=None, params=None, tags=None):
    """The run of one CLI command (see module docstring).

    ``args``: the parsed CLI namespace (``tracking_uri``, ``experiment``, ``no_track``,
    ``run_name``, ``quiet``). ``model``: the loaded model (source/format/sha256 are logged).
    Nested inside another active run (``xaudit demo``), the run becomes its child."""
    if getattr(args, "no_track", False):
        yield _NullRun()
        return
    all_params = model_params(model)
    all_params.update(params or {})
    all_tags = {"xaudit.version": _version(), "xaudit.command": command,
                "mlflow.source.name": f"xaudit {command}", "mlflow.source.type": "LOCAL"}
    if model is not None and getattr(model, "format", None):
        all_tags["xaudit.model_format"] = model.format
    all_tags.update(tags or {})
    mname = _model_name(model)
    parent = _ACTIVE.get()
    if parent is not None:
        # nested (demo): tell sibling runs apart by their output folder when there is no model
        if not mname and getattr(args, "out", None):
            mname = f"({Path(str(args.out)).name})"
        name = f"{command} {mname}".strip()
        with parent.child(name, params=all_params, tags=all_tags) as sub:
            yield sub
        return
    name = getattr(args, "run_name", None) or f"{command} {mname}".strip()
    quiet = getattr(args, "quiet", False)

    def announce(run):
        if quiet:
            return
        where = run.url() or run.tracking_uri
        print(f"mlflow: run '{run.name}' ({run.run_id}) logged to {where}, experiment "
              f"'{getattr(args, 'experiment', None) or DEFAULT_EXPERIMENT}'", file=sys.stderr)

    with _top_level(name, getattr(args, "experiment", None) or DEFAULT_EXPERIMENT,
                    getattr(args, "tracking_uri", None), params=all_params, tags=all_tags,
                    announce=announce) as run:
        yield run


@contextmanager
def run(name: str | None = None, experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None,
        params=None, tags=None, model=None):
    """Script-friendly run: ``with xaudit.tracking.run("study") as r: ...``.

    Same behaviour as the CLI's runs (recorded, written at the end, nested when another
    run is active); raises TrackingError if the store cannot be reached."""
    all_params = model_params(model)
    all_params.update(params or {})
    all_tags = {"xaudit.version": _version(), "xaudit.command": "script",
                "mlflow.source.name": Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python",
                "mlflow.source.type": "LOCAL"}
    if model is not None and getattr(model, "format", None):
        all_tags["xaudit.model_format"] = model.format
    all_tags.update(tags or {})
    name = name or (f"script {_model_name(model)}".strip())
    parent = _ACTIVE.get()
    if parent is not None:
        with parent.child(name, params=all_params, tags=all_tags) as sub:
            yield sub
        return
    with _top_level(name, experiment, tracking_uri, params=all_params, tags=all_tags) as r:
        yield r


# ----------------------------------------------------------------------------- log helpers
def explanation_params(explanation) -> dict:
    p = {"method": explanation.method}
    for k, v in flatten(explanation.params or {}).items():
        p[f"{explanation.method}.{k}" if not str(k).startswith(explanation.method) else k] = v
    if explanation.seed is not None:
        p["seed"] = explanation.seed
    return p


def explanation_metrics(explanation) -> dict:
    m = {"target_prob": explanation.target_prob, "target": explanation.target,
         "model_calls": explanation.model_calls, "seconds": explanation.seconds}
    for k, v in flatten(explanation.meta or {}).items():
        if _metric_value(v) is not None and not isinstance(v, bool):
            m[k] = v
    return m


def log_explanation(run, explanation, out_dir=None, prefix: str = "", step=None, artifact_path=None):
    """Log one Explanation like ``xaudit explain`` does: params (method, its parameters,
    seed), metrics (target probability, completeness error, anchor precision/coverage ...)
    and artifacts (``attribution.npy``, ``overlay.png``, ``explanation.json``; the
    explanation is saved to ``out_dir`` first when given and not saved yet)."""
    if run is None or not getattr(run, "enabled", False):
        if out_dir is not None and not (Path(out_dir) / "explanation.json").exists():
            explanation.save(out_dir)
        return
    pre = f"{prefix}." if prefix else ""
    run.log_params({f"{pre}{k}": v for k, v in explanation_params(explanation).items()})
    run.log_metrics({f"{pre}{k}": v for k, v in explanation_metrics(explanation).items()}, step=step)
    run.set_tags({"xaudit.target_label": explanation.target_label} if not prefix else {})
    if out_dir is not None:
        d = Path(out_dir)
        if not (d / "explanation.json").exists():
            explanation.save(d)
        run.log_artifacts(d, artifact_path)


def log_stability(run, result, out_dir=None, seeds=None, per_seed=None, artifact_path=None):
    """Log a stability sweep like ``xaudit stability``: summary metrics on ``run``, and
    when ``per_seed`` (list of Explanations or of metric dicts) is given, one nested run
    per seed. ``result``: a dict (``stability.json`` content) or an object with
    ``to_dict()``; ``out_dir``: folder with stability.json / grid.png / std.png."""
    if run is None or not getattr(run, "enabled", False):
        return
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result or {})
    seeds = seeds if seeds is not None else d.get("seeds")
    if seeds is not None:
        run.log_params({"seeds": ",".join(str(s) for s in seeds), "n_seeds": len(seeds)})
    for k in ("method", "target", "target_label"):
        if k in d and not isinstance(d[k], (dict, list)):
            run.log_params({k: d[k]})
    if isinstance(d.get("params"), dict):
        run.log_params({f"{d.get('method', 'method')}.{k}": v for k, v in flatten(d["params"]).items()})
    summary = d.get("summary") if isinstance(d.get("summary"), dict) else {
        k: v for k, v in d.items() if k not in ("seeds", "params", "per_seed")}
    run.log_metrics({f"stability.{k}" if not str(k).startswith("stability") else k: v
                     for k, v in flatten(summary).items()})
    for i, item in enumerate(per_seed or []):
        seed = seeds[i] if seeds is not None and i < len(seeds) else getattr(item, "seed", i)
        with run.child(f"seed {seed}", params={"seed": seed}) as sub:
            if hasattr(item, "attribution"):
                sub.log_metrics(explanation_metrics(item))
            elif isinstance(item, dict):
                sub.log_metrics(item)
    if out_dir is not None:
        run.log_artifacts(out_dir, artifact_path)


def read_marker(directory) -> dict | None:
    """The ``mlflow_run.json`` left in an ``--out`` folder by a tracked command, if any."""
    p = Path(directory) / RUN_MARKER
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def log_to_existing_run(run_id: str, paths, tracking_uri: str | None = None, artifact_path=None):
    """Attach files to an already finished run (``xaudit report`` on a run id)."""
    uri = resolve_tracking_uri(tracking_uri)
    reason = probe(uri)
    if reason is not None:
        raise TrackingError(_unreachable_message(uri, reason))
    try:
        with _bounded_http(uri), _quiet_logs():
            client = get_client(uri)
            for p in paths:
                client.log_artifact(run_id, str(p), artifact_path)
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrackingError(f"could not log to MLflow run {run_id} at {uri}: {msg[:300]} "
                            f"(use --no-track to skip tracking)") from e


def download_run(run_id: str, dst, tracking_uri: str | None = None) -> tuple[Path, dict]:
    """Download all artifacts of ``run_id`` into ``dst``; return (dir, run summary dict)."""
    uri = resolve_tracking_uri(tracking_uri)
    reason = probe(uri)
    if reason is not None:
        raise TrackingError(_unreachable_message(uri, reason))
    try:
        with _bounded_http(uri), _quiet_logs():
            client = get_client(uri)
            r = client.get_run(run_id)
            Path(dst).mkdir(parents=True, exist_ok=True)
            local = client.download_artifacts(run_id, "", str(dst))
            children = client.search_runs([r.info.experiment_id],
                                          filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
                                          max_results=200)
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrackingError(f"could not read MLflow run {run_id} at {uri}: {msg[:300]}") from e
    info = {
        "run_id": run_id, "run_name": r.info.run_name, "status": r.info.status,
        "experiment_id": r.info.experiment_id, "tracking_uri": uri,
        "params": dict(r.data.params), "metrics": dict(r.data.metrics),
        "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
        "children": [{"run_name": c.info.run_name, "status": c.info.status,
                      "params": dict(c.data.params), "metrics": dict(c.data.metrics)}
                     for c in children],
    }
    return Path(local), info


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on a store."""
    return f"mlflow ui --backend-store-uri {tracking_uri}"
