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

from .common import add_executor_options, add_model_options
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
    add_executor_options(p)
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
    from ..monitoring import summary_lines
    from ..plots import save_grid
    from .common import load_model_from_args
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
        failed = []
        if windows and args.explain > 0:
            inputs = collect_inputs(args.capture, windows, args.explain, model)
            jobs = []       # (class, kind, canonical image, id, folder)
            for c in sorted(windows):
                refs, ref_paths = reference_images(model, c, baseline, args.reference, args.references)
                cap = [("captured", img, eid) for img, _, eid in inputs.get(c, [])]
                ref = [("reference", img, p) for img, p in zip(refs, ref_paths)]
                for kind, lst in (("captured", cap), ("reference", ref)):
                    for j, (_, img, ident) in enumerate(lst):
                        jobs.append((c, kind, img, ident, out / f"class_{c}" / f"{kind}_{j:02d}"))
            exps, failed = _explain_jobs(args, model, out, jobs, windows)
            for c in sorted(windows):
                lab = model.label_of(c) if model.labels else str(c)
                entry = {"class_index": c, "class_label": lab, "window": list(windows[c]),
                         "captured": [], "reference": []}
                row_img, row_att, row_t = [], [], []
                for (jc, kind, img, ident, d), exp in zip(jobs, exps):
                    if jc != c or exp is None:
                        continue
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
        audit["failed"] = [{k: f[k] for k in ("key", "id", "error")} for f in failed]
        out.mkdir(parents=True, exist_ok=True)
        if panels_img:
            save_grid(panels_img, panels_att, titles, out / "audit.png", ncols=ncols,
                      suptitle="captured inputs behind the violation (left) vs reference images (right)")
        (out / "audit.json").write_text(json.dumps(audit, indent=1, default=str))
        log_monitor(trun, result, out)
        for f in ("audit.json", "audit.png"):
            if (out / f).exists():
                trun.log_artifact(str(out / f))
    from .common import report_failures
    report_failures(failed, "explanation")
    print(f"audit of {len(windows)} violating class(es) written to {out}/audit.json"
          + (", audit.png" if panels_img else "")
          + (f"; {len(failed)} explanation(s) failed (listed in audit.json; rerun with the same --out to retry them)"
             if failed else ""), file=sys.stderr)
    if failed and not result.violations:
        from .common import EXIT_PARTIAL
        return EXIT_PARTIAL
    return 3 if result.violations else 0


def _explain_jobs(args, model, out, jobs, windows):
    """Explain every (class, kind, image, id, folder) job through the executor
    (``--executor``); explanations finished by an earlier run of the same ``--out`` are
    loaded back. -> (explanations or None per job, failed)."""
    from ..errors import UnsupportedOperation
    from ..executors import Ledger, Task, executor_from_args, write_files
    from ..executors.tasks import explain_task
    from ..explainers import Explanation, choose_method, explainer_class
    from ..explainers.base import model_summary
    from .common import model_overrides, progress
    method, reason = choose_method(model, args.method)
    cls = explainer_class(method)
    if cls.needs_gradients and not model.gradients_reachable:
        raise UnsupportedOperation(f"--method {method} needs gradients, which are not reachable for "
                                   f"{model.source}: {model.gradients_reason} (try --method lime or occlusion)")
    meta = {"method_requested": args.method, "method_reason": reason}
    keys = [d.relative_to(out).as_posix() for _, _, _, _, d in jobs]
    ledger = Ledger(out, {"command": "audit", "model": model_summary(model), "overrides": model_overrides(args),
                          "method": method, "capture": str(args.capture), "windows": windows,
                          "jobs": [[c, k, str(i)] for c, k, _, i, _ in jobs]})
    pending = [j for j, k in enumerate(keys) if not ledger.is_done(k)]
    tasks = (Task(key=keys[j], image=jobs[j][2], method=method,
                  params={"explainer": {}, "target": int(jobs[j][0]), "meta": meta}) for j in pending)
    exps, failed = [None] * len(jobs), []
    with ledger, executor_from_args(args, model=model, source=args.model) as ex:
        for r in progress(ex.map(explain_task, tasks), args, desc="explaining violations", total=len(pending)):
            j = pending[r.index]
            if r.ok:
                write_files(jobs[j][4], r.value["files"])
                ledger.mark_done(r.key)
                e = r.value["explanation"]
                e.image = None
                exps[j] = e
            else:
                ledger.mark_failed(r.key, r.error)
                failed.append({"key": r.key, "id": str(jobs[j][3]), "error": r.error})
    for j in range(len(jobs)):
        if exps[j] is None and j not in pending:
            exps[j] = Explanation.load(jobs[j][4])
    return exps, failed


def _top_share(att, q=0.9):
    import numpy as np
    a = np.abs(np.asarray(att, np.float64))
    s = a.sum()
    return float(a[a >= np.quantile(a, q)].sum() / s) if s > 0 else 0.0
