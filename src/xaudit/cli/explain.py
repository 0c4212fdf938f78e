"""``xaudit explain MODEL IMAGE... --method auto|fullgrad|gradcam|ig|lime|anchors|occlusion``.

Writes, per image, ``attribution.npy``, ``overlay.png``, ``explanation.json`` (+ ``input.npy``
and method arrays) into ``--out`` (one image) or ``--out/<image stem>/`` (several images).
Default ``--out``: ``./xaudit-out/explain-<UTC timestamp>``. ``--method auto`` runs FullGrad
when the model's gradients are reachable, LIME otherwise; ``explanation.json`` records
``method_requested`` and ``method_reason``. ``--json`` prints the explanation(s) as JSON on
stdout (an object for one image, a list for several), each with its ``out`` folder.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

METHOD_CHOICES = ["auto", "fullgrad", "gradcam", "ig", "lime", "anchors", "occlusion"]


def register(subparsers):
    from .common import add_executor_options, add_model_options
    p = subparsers.add_parser(
        "explain", help="explain predictions (FullGrad, Grad-CAM, IG, LIME, Anchors, Occlusion)",
        description="Explain a model's prediction on one or more images. --method auto: FullGrad "
                    "when gradients are reachable (PyTorch, ONNX, Custom Vision, TF graphs), else LIME.")
    p.add_argument("model", metavar="MODEL", help="model file or bundle (.pt, .onnx, .pb, Custom Vision folder/zip)")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files or folders")
    p.add_argument("--method", default="auto", type=str.lower, choices=METHOD_CHOICES,
                   help="explanation method (default: auto)")
    p.add_argument("--target", help="class label or index to explain (default: the predicted class)")
    p.add_argument("--layer", help="Grad-CAM layer (module name / graph node output; default: last spatial layer)")
    p.add_argument("--steps", type=int, help="Integrated Gradients steps (default 50)")
    p.add_argument("--baseline", choices=["black", "blurred", "mean"], help="Integrated Gradients baseline (default black)")
    p.add_argument("--seed", type=int, help="seed of randomised methods (LIME, Anchors)")
    p.add_argument("--out", help="output folder (default ./xaudit-out/explain-<UTC timestamp>)")
    p.add_argument("--json", action="store_true", help="print the explanation(s) as JSON")
    add_model_options(p)
    add_executor_options(p)
    p.set_defaults(func=run)
    return p


def _params_for(method, args):
    """Method parameters from the CLI options; options that do not apply are errors."""
    from ..errors import XauditError
    params, bad = {}, []
    if args.layer is not None:
        (params.__setitem__("layer", args.layer) if method == "gradcam" else bad.append("--layer (gradcam)"))
    if args.steps is not None:
        if args.steps < 1:
            raise XauditError(f"--steps must be a positive integer, got {args.steps}")
        (params.__setitem__("steps", args.steps) if method == "ig" else bad.append("--steps (ig)"))
    if args.baseline is not None:
        (params.__setitem__("baseline", args.baseline) if method == "ig" else bad.append("--baseline (ig)"))
    if args.seed is not None:
        if method in ("lime", "anchors", "occlusion"):
            params["seed"] = args.seed
        elif args.method != "auto":
            bad.append("--seed (lime, anchors)")
    if bad:
        raise XauditError(f"option {bad[0].split()[0]} does not apply to --method {method}; it is for "
                          f"{bad[0].split('(')[1].rstrip(')')}")
    return params


def _folder_names(paths):
    names, seen = [], {}
    for p in paths:
        stem = Path(p).stem or "image"
        k = seen.get(stem, 0)
        seen[stem] = k + 1
        names.append(stem if k == 0 else f"{stem}-{k}")
    return names


def run(args) -> int:
    from .. import tracking
    from ..errors import UnsupportedOperation
    from ..executors import Ledger, Task, executor_from_args, write_files
    from ..executors.tasks import explain_task
    from ..explainers import Explanation, choose_method, explainer_class
    from ..explainers.base import model_summary
    from ..images import list_images
    from .common import (EXIT_PARTIAL, load_model_from_args, model_overrides, print_json, progress,
                         raise_if_all_failed, report_failures)

    images = list_images(args.images)
    model = load_model_from_args(args)
    method, reason = choose_method(model, args.method)
    try:
        cls = explainer_class(method)
    except UnsupportedOperation as e:
        if args.method == "auto":
            raise UnsupportedOperation(f"--method auto chose {method} ({reason}), but {e}") from None
        raise
    if cls.needs_gradients and not model.gradients_reachable:
        raise UnsupportedOperation(f"--method {method} needs gradients, which are not reachable for "
                                   f"{model.source}: {model.gradients_reason} (try --method lime or occlusion)")
    params = _params_for(method, args)
    cls(**params)   # parameters are checked here, before any work
    out = Path(args.out) if args.out else Path("xaudit-out") / time.strftime("explain-%Y%m%d-%H%M%S", time.gmtime())
    several = len(images) > 1
    names = _folder_names(images) if several else ["."]
    dirs = [out / n for n in names] if several else [out]
    run_params = {"method": method, "method_requested": args.method, "method_reason": reason,
                  "images": len(images), "target": args.target, **{f"{method}.{k}": v for k, v in params.items()}}
    meta = {"method_requested": args.method, "method_reason": reason}
    # resume: a task is done once its files are written and the ledger says so
    ledger = Ledger(out, {"command": "explain", "model": model_summary(model), "overrides": model_overrides(args),
                          "method": method, "params": params, "target": args.target, "meta": meta})
    if ledger.restarted and not args.quiet:
        print(f"xaudit: {out} holds results of another run: starting over", file=sys.stderr)
    pending = [i for i, n in enumerate(names) if not ledger.is_done(n)]
    tasks = (Task(key=names[i], image=str(images[i]), method=method, seed=None,
                  params={"explainer": params, "target": args.target, "meta": meta}) for i in pending)
    results, failed = [], []
    with tracking.command_run(args, "explain", model=model, params=run_params) as tr, ledger, \
            executor_from_args(args, model=model) as ex:
        tracked = bool(getattr(tr, "enabled", False))
        it = ex.map(explain_task, tasks)
        if several:
            it = progress(it, args, desc=f"explain ({method})", unit="image", total=len(pending))
        for r in it:      # results stream in order; nothing is kept but the failures
            i = pending[r.index]
            if r.ok:
                write_files(dirs[i], r.value["files"])
                ledger.mark_done(r.key, image=str(images[i]))
                exp = r.value["explanation"]
                if tracked:
                    tracking.log_explanation(tr, exp, step=i if several else None)
                if not args.json and not args.quiet and not several:
                    _describe(exp, dirs[i])
            else:
                ledger.mark_failed(r.key, r.error, image=str(images[i]))
                failed.append({"key": r.key, "image": str(images[i]), "out": str(dirs[i]), "error": r.error,
                               "user_error": r.user_error})
        raise_if_all_failed(failed, len(images))
        if tracked:           # explanations finished by an earlier run of the same --out
            done_before = sorted(set(range(len(dirs))) - set(pending))
            for i in done_before:
                tracking.log_explanation(tr, Explanation.load(dirs[i]), step=i if several else None)
        if args.json:
            bad = {f["out"]: f for f in failed}
            for d in dirs:
                if str(d) in bad:
                    results.append({**bad[str(d)], "failed": True})
                else:
                    row = json.loads((d / "explanation.json").read_text())
                    row["out"] = str(d)
                    results.append(row)
        tr.log_artifacts(out)
    report_failures(failed, "explanation")
    if args.json:
        print_json(results[0] if not several and results else results)
    elif several and not args.quiet:
        skipped = len(images) - len(pending)
        print(f"{len(images) - len(failed)} explanations ({method}: {reason}) written to {out}"
              + (f" ({skipped} from an earlier run)" if skipped else "")
              + (f"; {len(failed)} failed (rerun with the same --out to retry them)" if failed else ""),
              file=sys.stderr)
    if not args.json:
        print(str(out))
    return EXIT_PARTIAL if failed else 0


def _describe(exp, d):
    extra = ""
    if "completeness_error" in exp.meta:
        extra = f", completeness error {exp.meta['completeness_error']:.1e}"
    print(f"{exp.method}: class {exp.target} '{exp.target_label}' p={exp.target_prob:.3f}{extra} "
          f"({exp.model_calls} model calls, {exp.seconds:.2f}s) -> {d}", file=sys.stderr)
