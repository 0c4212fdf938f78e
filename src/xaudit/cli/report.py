"""``xaudit report SOURCE --out report.html``: one self-contained HTML report.

SOURCE is an ``--out`` folder of any command (or a folder of several, like the demo's) or
an MLflow run id (its artifacts are downloaded with the global tracking options). The
report is also logged as an artifact of the run that produced SOURCE, when known (run id,
or the ``mlflow_run.json`` a tracked command leaves in its ``--out`` folder), unless
``--no-track``.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

_RUN_ID = re.compile(r"^(runs:/)?([0-9a-f]{32})/?$")


def register(subparsers):
    p = subparsers.add_parser("report", help="self-contained HTML report of an --out folder or MLflow run",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("source", metavar="SOURCE", help="--out folder of explain/stability/monitor/audit/demo, "
                                                     "or an MLflow run id")
    p.add_argument("--out", help="HTML file to write (default: SOURCE/report.html for a folder, "
                                 "report-<run id>.html for a run)")
    p.add_argument("--title", help="report title")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..errors import XauditError
    from .. import report as rep
    src = args.source
    m = _RUN_ID.match(src)
    if Path(src).is_dir():
        out = Path(args.out) if args.out else Path(src) / "report.html"
        path = rep.build_report(src, out, title=args.title)
        _attach_to_marker_run(args, Path(src), path)
    elif m:
        import tempfile
        from .. import tracking
        run_id = m.group(2)
        with tempfile.TemporaryDirectory(prefix="xaudit-report-") as tmp:
            local, info = tracking.download_run(run_id, tmp, args.tracking_uri)
            out = Path(args.out) if args.out else Path(f"report-{run_id[:8]}.html")
            path = rep.build_report(local, out, title=args.title or f"xaudit report — run {info['run_name']}",
                                    run_info=info)
        if not args.no_track:
            tracking.log_to_existing_run(run_id, [path], args.tracking_uri)
    elif Path(src).exists():
        raise XauditError(f"{src}: not a folder; pass an --out folder of an xaudit command or an MLflow run id")
    else:
        raise XauditError(f"{src}: no such folder, and not an MLflow run id (32 hex characters)")
    print(str(Path(path).resolve()))
    return 0


def _attach_to_marker_run(args, folder: Path, path: Path):
    if args.no_track:
        return
    from .. import tracking
    marker = tracking.read_marker(folder)
    if not marker or not marker.get("run_id"):
        return
    tracking.log_to_existing_run(marker["run_id"], [path], args.tracking_uri or marker.get("tracking_uri"))
    if not args.quiet:
        print(f"mlflow: report logged to run {marker['run_id']}", file=sys.stderr)
