"""``xaudit audit CAPTURE --model MODEL``: monitor, then explain the inputs behind each violation.

For every violating class (class_share / class_shift / chi_square / bbsd violations that
name a class), the first N captured inputs predicted as that class inside the violating
window are decoded and explained (``xaudit.explainers.explain``, --method auto picks
FullGrad when gradients are reachable, LIME otherwise), next to reference images of that
class (the baseline's examples, or --reference images the model predicts as that class).
Output: ``audit.png`` (one row per class), ``audit.json``, per-image explanation folders,
plus the monitor's statistics.json / violations.json / report.png. Exit 3 on violations.
"""
from __future__ import annotations

import sys

from .common import add_model_options
from .monitor import add_monitor_options


def register(sub):
    p = sub.add_parser("audit", help="monitor a capture and explain the inputs behind each violation")
    add_monitor_options(p)
    p.add_argument("--model", required=True, help="the served model")
    p.add_argument("--explain", type=int, default=5, help="captured inputs explained per violating class (5)")
    p.add_argument("--method", default="auto", help="explanation method (auto, fullgrad, lime, ...)")
    p.add_argument("--reference", metavar="DIR", help="reference images (shown for the violating class)")
    p.add_argument("--references", type=int, default=3, help="reference images per class (3)")
    p.add_argument("--out", default="audit-out", help="output folder")
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def collect_inputs(capture, windows: dict, n: int, model):
    """windows: class -> (start, end). -> class -> list of (canonical image, probs, eventId)."""
    from ..capture import iter_records
    from ..capture.schema import parse_time
    from ..serve import BadRequest, decode_inputs
    out = {c: [] for c in windows}
    lo = min(parse_time(s) for s, _ in windows.values())
    hi = max(parse_time(e) for _, e in windows.values())
    for rec in iter_records(capture, lo, hi):
        preds = rec.outputs.argmax(1)
        want = [c for c in set(int(p) for p in preds) if c in out and len(out[c]) < n
                and parse_time(windows[c][0]) <= rec.time < parse_time(windows[c][1])]
        if not want:
            if all(len(v) >= n for v in out.values()):
                break
            continue
        try:
            batch, _ = decode_inputs(model, rec.input_bytes(), rec.input_content_type)
        except (BadRequest, ValueError):
            continue
        for img, p, probs in zip(batch, preds, rec.outputs):
            if int(p) in want and len(out[int(p)]) < n:
                out[int(p)].append((img, probs, rec.event_id))
    return out


def reference_images(model, cls, baseline, reference, k):
    from pathlib import Path

    from ..images import list_images
    paths = []
    if baseline is not None:
        paths = [p for p in baseline.data.get("examples", {}).get(str(cls), []) if Path(p).exists()]
    if not paths and reference:
        cand = list_images([reference])
        for i in range(0, len(cand), 64):
            chunk = cand[i:i + 64]
            pr = model.predict(model.preprocess_batch([str(c) for c in chunk])).argmax(1)
            paths += [str(c) for c, p in zip(chunk, pr) if int(p) == cls]
            if len(paths) >= k:
                break
    return [model.preprocess(p) for p in paths[:k]], paths[:k]


def run(args) -> int:
    import json
    from pathlib import Path

    from .. import tracking
    from ..explainers import explain
    from ..monitoring import summary_lines
    from ..plots import save_grid
    from .common import load_model_from_args, progress
    from .monitor import log_monitor, monitor_from_args
    out = Path(args.out)
    model = load_model_from_args(args, args.model)
    with tracking.command_run(args, "audit", model=model,
                              params={"capture": args.capture, "baseline": args.baseline, "explain": args.explain,
                                      "method": args.method}) as trun:
        result, baseline, cfg, statistics = monitor_from_args(args, out)
        if baseline is not None and baseline.num_classes != model.num_classes:
            from ..errors import BaselineError
            raise BaselineError(f"baseline has {baseline.num_classes} classes, the model {model.num_classes}")
        for line in summary_lines(result, cfg):
            print(line)
        # violating classes -> first violating window
        windows = {}
        for v in result.violations:
            c = v["class_index"]
            if c is not None and v["check"] in ("class_share", "class_shift", "chi_square", "bbsd") \
                    and c not in windows and v["window_start"] and v["window_end"]:
                windows[c] = (v["window_start"], v["window_end"])
        audit = {"capture": args.capture, "violations": result.violations, "classes": []}
        panels_img, panels_att, titles = [], [], []
        ncols = args.explain + args.references
        if windows and args.explain > 0:
            inputs = collect_inputs(args.capture, windows, args.explain, model)
            for c in sorted(windows):
                lab = model.label_of(c) if model.labels else str(c)
                entry = {"class_index": c, "class_label": lab, "window": list(windows[c]),
                         "captured": [], "reference": []}
                refs, ref_paths = reference_images(model, c, baseline, args.reference, args.references)
                jobs = [("captured", img, eid) for img, _, eid in inputs.get(c, [])] + \
                       [("reference", img, p) for img, p in zip(refs, ref_paths)]
                row_img, row_att, row_t = [], [], []
                for kind, img, ident in progress(jobs, args, desc=f"explaining class {c}"):
                    exp = explain(model, img, method=args.method, target=c)
                    d = out / f"class_{c}" / f"{kind}_{len(entry[kind]):02d}"
                    exp.save(d)
                    att = exp.attribution
                    entry[kind].append({"id": ident, "folder": str(d), "method": exp.method,
                                        "target_prob": float(exp.target_prob),
                                        "attribution_peak_share": _top_share(att)})
                    row_img.append(img)
                    row_att.append(att)
                    row_t.append(f"{'captured' if kind == 'captured' else 'reference'} {c} p={exp.target_prob:.2f}")
                while len(row_img) < ncols and row_img:
                    row_img.append(row_img[0] * 0 + 1.0)
                    row_att.append(row_att[0] * 0)
                    row_t.append("")
                panels_img += row_img
                panels_att += row_att
                titles += row_t
                audit["classes"].append(entry)
        out.mkdir(parents=True, exist_ok=True)
        if panels_img:
            save_grid(panels_img, panels_att, titles, out / "audit.png", ncols=ncols,
                      suptitle="captured inputs behind the violation (left) vs reference images (right)")
        (out / "audit.json").write_text(json.dumps(audit, indent=1, default=str))
        log_monitor(trun, result, out)
        for f in ("audit.json", "audit.png"):
            if (out / f).exists():
                trun.log_artifact(str(out / f))
    print(f"audit of {len(windows)} violating class(es) written to {out}/audit.json"
          + (", audit.png" if panels_img else ""), file=sys.stderr)
    return 3 if result.violations else 0


def _top_share(att, q=0.9):
    import numpy as np
    a = np.abs(np.asarray(att, np.float64))
    s = a.sum()
    return float(a[a >= np.quantile(a, q)].sum() / s) if s > 0 else 0.0
