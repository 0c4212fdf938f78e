"""``xaudit demo [--out DIR] [--quick] [--steps predict,explain,stability,monitor]``.

The whole audit story, offline, on the shipped models, tracked in MLflow (one ``demo`` run,
with each command's own run nested under it), ending with the ``mlflow ui`` command to
browse it and a self-contained ``report.html``.
"""
from __future__ import annotations

import time
from pathlib import Path


def register(subparsers):
    p = subparsers.add_parser("demo", help="the whole audit story on the shipped models (offline, < 3 min)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="xaudit-demo", help="output folder (default ./xaudit-demo)")
    p.add_argument("--quick", action="store_true", help="smaller version of every step (for tests, ~1 min)")
    p.add_argument("--steps", help="comma-separated steps to run: predict,explain,stability,monitor "
                                   "(or 1,2,3,4; default all)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from .. import demo, tracking
    from ..report import build_report

    steps = demo.select_steps(args.steps)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    echo = (lambda line="": None) if args.quiet else demo.echo_stderr
    ctx = demo.Context(out=out, args=args, quick=args.quick, echo=echo)
    t0 = time.perf_counter()
    ctx.say(f"xaudit demo -> {out}")
    params = {"steps": ",".join(s.name for s in steps), "quick": args.quick, "out": str(out)}
    with tracking.command_run(args, "demo", params=params) as run:
        ctx.run = run
        results = demo.run_demo(ctx, steps)
        seconds = time.perf_counter() - t0
        summary = demo.write_summary(ctx, results, seconds)
        report = None
        try:
            report = build_report(out, out / "report.html", title="xaudit demo report")
        except Exception as e:  # noqa: BLE001 - no result to show is not worth a crash
            ctx.say(f"report not written: {e}")
        run.log_metrics({"seconds": seconds,
                         "steps_done": sum(r.status == "done" for r in results),
                         "steps_skipped": sum(r.status == "skipped" for r in results),
                         "steps_failed": sum(r.status == "failed" for r in results)})
        run.set_tags({"demo.failed_steps": ",".join(r.name for r in results if r.status == "failed") or "none"})
        if any(r.status == "failed" for r in results):
            run.mark_failed()
        run.log_artifact(summary)
        if report is not None:
            run.log_artifact(report)
    print_epilogue(args, run, out, report, results, seconds, ctx)
    return 1 if any(r.status == "failed" for r in results) else 0


def print_epilogue(args, run, out, report, results, seconds, ctx):
    from .. import tracking
    ctx.say("")
    ctx.say(f"Done in {seconds:.0f} s: " + ", ".join(f"{r.name} {r.status}" for r in results))
    if getattr(run, "run_id", None):
        uri = run.tracking_uri
        if uri.startswith(("http://", "https://")):
            ctx.say(f"MLflow runs: {uri.rstrip('/')}/#/experiments/{run.experiment_id}/runs")
        else:
            ctx.say("Browse the runs in the MLflow UI:")
            ctx.say(f"  {tracking.ui_command(uri)}")
            ctx.say(f"  then open http://127.0.0.1:5000/#/experiments/{run.experiment_id}/runs")
    if report is not None:
        ctx.say(f"Report: {report}")
        print(str(report))
