"""``xaudit monitor CAPTURE``: windowed drift checks over captured predictions.

Exit codes: 0 no violation, 3 at least one violation, 2 bad input.
"""
from __future__ import annotations

import sys


def register(sub):
    p = sub.add_parser("monitor", help="check captured predictions for drift (exit 3 on a violation)",
                       description="Read a SageMaker-style capture (folder or fsspec URL), check class shares, "
                                   "low confidence and (with a baseline) chi-square, BBSD and CBPE per window.")
    add_monitor_options(p)
    p.add_argument("--out", default="monitor-out", help="output folder (statistics.json, violations.json, report.png)")
    p.add_argument("--json", action="store_true", help="print statistics as JSON instead of the text summary")
    p.set_defaults(func=run)
    return p


def add_monitor_options(p):
    p.add_argument("capture", help="capture folder, .jsonl file or fsspec URL (s3://... with s3fs)")
    p.add_argument("--baseline", help="baseline.json from 'xaudit baseline'")
    p.add_argument("--threshold", type=float, default=0.5, help="class-share threshold (default 0.5)")
    p.add_argument("--low-confidence", type=float, default=0.5,
                   help="a prediction is low-confidence when its top-3 probabilities are all below this (0.5)")
    p.add_argument("--max-low-confidence-rate", type=float, default=0.2,
                   help="without a baseline: alarm when the low-confidence rate's CI lower bound exceeds this (0.2)")
    p.add_argument("--max-accuracy-drop", type=float, default=0.1,
                   help="CBPE: alarm when the estimated accuracy falls this far below the reference (0.1)")
    p.add_argument("--start", help="window start, ISO 8601 UTC (inclusive)")
    p.add_argument("--end", help="window end, ISO 8601 UTC (exclusive)")
    p.add_argument("--window", help="split into windows of this length (e.g. 15m, 1h, 1d)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level (0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-window reservoir samples")


def config_from_args(args):
    from ..errors import XauditError
    from ..monitoring import MonitorConfig
    for name in ("threshold", "low_confidence", "alpha", "max_low_confidence_rate"):
        v = getattr(args, name)
        if not 0 < v < 1:
            raise XauditError(f"--{name.replace('_', '-')} must be between 0 and 1, got {v}")
    return MonitorConfig(threshold=args.threshold, low_confidence=args.low_confidence, alpha=args.alpha,
                         max_low_confidence_rate=args.max_low_confidence_rate,
                         max_accuracy_drop=args.max_accuracy_drop, seed=args.seed)


def monitor_from_args(args, out_dir):
    """Run the monitor and write statistics.json, violations.json, report.png into out_dir.
    -> (result, baseline, cfg)."""
    import json
    from pathlib import Path

    from ..capture.schema import parse_duration, parse_time
    from ..monitoring import Baseline, run_monitor
    from ..monitoring.report import save_report
    from .common import progress
    cfg = config_from_args(args)
    # validate times/window before reading anything
    start = parse_time(args.start, "--start") if args.start else None
    end = parse_time(args.end, "--end") if args.end else None
    window = parse_duration(args.window) if args.window else None
    baseline = Baseline.load(args.baseline) if args.baseline else None
    result = run_monitor(args.capture, baseline, cfg, start=start, end=end, window=window,
                         progress=lambda it: progress(it, args, desc="records", unit="rec"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    statistics = {
        "capture": str(args.capture), "baseline": args.baseline,
        "config": {"threshold": cfg.threshold, "low_confidence": cfg.low_confidence, "alpha": cfg.alpha,
                   "max_low_confidence_rate": cfg.max_low_confidence_rate,
                   "max_accuracy_drop": cfg.max_accuracy_drop, "start": args.start, "end": args.end,
                   "window": args.window},
        "read": result.read.to_dict(), "num_classes": result.num_classes, "labels": result.labels,
        "windows": result.windows, "violations": len(result.violations),
    }
    (out / "statistics.json").write_text(json.dumps(statistics, indent=1))
    (out / "violations.json").write_text(json.dumps(result.violations, indent=1))
    save_report(result, baseline, out / "report.png")
    return result, baseline, cfg, statistics


def log_monitor(run, result, out_dir):
    """MLflow: per-class counts, check statistics and p-values as metrics (step = window
    index), violations.json / statistics.json / report.png as artifacts, tag violation."""
    from pathlib import Path
    for w in result.windows:
        step = w["index"]
        m = {"window.total": w["total"], "window.no_data": float(w["status"] == "no data")}
        if w["status"] == "ok":
            for i, c in enumerate(w["class_counts"]):
                if c:
                    m[f"count.class_{i}"] = c
            for name, c in w["checks"].items():
                for key in ("share", "rate", "p_value", "statistic", "min_p_adjusted", "ks_statistic",
                            "estimated_accuracy"):
                    v = c.get(key)
                    if isinstance(v, (int, float)):
                        m[f"{name}.{key}"] = v
                m[f"{name}.violation"] = float(bool(c.get("violation")))
            m["violations"] = w["violations"]
        run.log_metrics(m, step=step)
    r = result.read
    run.log_metrics({"read.records": r.records, "read.predictions": r.predictions, "read.malformed": r.malformed,
                     "violations.total": len(result.violations)})
    out = Path(out_dir)
    for f in ("statistics.json", "violations.json", "report.png"):
        if (out / f).exists():
            run.log_artifact(str(out / f))
    run.set_tags({"violation": "yes" if result.violations else "no",
                  "violation.classes": ",".join(sorted({str(v["class_index"]) for v in result.violations
                                                        if v["class_index"] is not None})) or "-"})


def run(args) -> int:
    from .. import tracking
    from ..monitoring import summary_lines
    from .common import print_json
    params = {"capture": args.capture, "baseline": args.baseline, "threshold": args.threshold,
              "low_confidence": args.low_confidence, "alpha": args.alpha, "start": args.start, "end": args.end,
              "window": args.window}
    with tracking.command_run(args, "monitor", params=params) as trun:
        result, baseline, cfg, statistics = monitor_from_args(args, args.out)
        log_monitor(trun, result, args.out)
    if args.json:
        print_json(statistics)
    else:
        for line in summary_lines(result, cfg):
            print(line)
        print(f"wrote {args.out}/statistics.json, violations.json, report.png", file=sys.stderr)
    return 3 if result.violations else 0
