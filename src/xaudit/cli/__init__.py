"""xaudit command line: a thin shell over the Python API.

Each sub-command lives in its own module ``xaudit.cli.<name>`` exposing
``register(subparsers)`` (which calls ``set_defaults(func=run)``) and
``run(args) -> int``. Command modules import heavy libraries inside ``run`` only.

Exit codes: 0 success, 2 bad input/usage (one line naming the problem), 1 unexpected
error (one line; ``--debug`` shows the traceback), 3 ``monitor``/``audit`` found a
violation, 4 some tasks of a sweep failed (``explain``/``stability``/``evaluate``/``audit``
with several tasks: everything else was written, the failed tasks are listed; rerun with
the same ``--out`` to retry only them), 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ["info", "predict", "explain", "stability", "serve", "baseline", "monitor",
            "audit", "report", "evaluate", "demo"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors: one line, exit 2
        sys.stderr.write(f"xaudit: error: {message} (see 'xaudit {self.prog.split()[-1]} --help')\n"
                         if " " in self.prog else f"xaudit: error: {message}\n")
        raise SystemExit(2)


def global_options(p: argparse.ArgumentParser, suppress: bool = False):
    """Options accepted before or after the sub-command."""
    d = argparse.SUPPRESS if suppress else None
    g = p.add_argument_group("global options")
    g.add_argument("--debug", action="store_true", default=d if suppress else False,
                   help="show tracebacks of unexpected errors")
    g.add_argument("--quiet", "-q", action="store_true", default=d if suppress else False,
                   help="no progress bars")
    g.add_argument("--tracking-uri", default=d,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    g.add_argument("--experiment", default=d, help="MLflow experiment name (default: xaudit)")
    g.add_argument("--no-track", action="store_true", default=d if suppress else False,
                   help="do not log to MLflow")
    g.add_argument("--run-name", default=d, help="MLflow run name")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xaudit", description="Audit image classifiers you cannot see inside.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"xaudit {__version__}")
    global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"xaudit.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"xaudit.cli.{name}":
                continue  # command not built yet
            raise
        sp = mod.register(sub)
        if sp is not None:
            global_options(sp, suppress=True)
    return parser


def _fill_globals(args):
    for k, v in (("debug", False), ("quiet", False), ("tracking_uri", None), ("experiment", None),
                 ("no_track", False), ("run_name", None)):
        if not hasattr(args, k):
            setattr(args, k, v)
    if args.experiment is None:
        args.experiment = "xaudit"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _fill_globals(args)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ..errors import XauditError
    try:
        rc = args.func(args)
        return int(rc or 0)
    except XauditError as e:
        if args.debug:
            import traceback
            traceback.print_exc()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"xaudit: error: {msg}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("xaudit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the one place that turns crashes into exit 1
        if args.debug or os.environ.get("XAUDIT_DEBUG"):
            import traceback
            traceback.print_exc()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"xaudit: unexpected error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


def entry():
    sys.exit(main())


if __name__ == "__main__":
    entry()
