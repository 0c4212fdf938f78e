"""``xaudit explain MODEL IMAGE... --method auto|fullgrad|gradcam|ig|lime|anchors|occlusion``.

Writes, per image, ``attribution.npy``, ``overlay.png``, ``explanation.json`` (+ ``input.npy``
and method arrays) into ``--out`` (one image) or ``--out/<image stem>/`` (several images).
Default ``--out``: ``./xaudit-out/explain-<UTC timestamp>``. ``--method auto`` runs FullGrad
when the model's gradients are reachable, LIME otherwise; ``explanation.json`` records
``method_requested`` and ``method_reason``. ``--json`` prints the explanation(s) as JSON on
stdout (an object for one image, a list for several), each with its ``out`` folder.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

METHOD_CHOICES = ["auto", "fullgrad", "gradcam", "ig", "lime", "anchors", "occlusion"]


def register(subparsers):
    from .common import add_model_options
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
    from ..explainers import choose_method, explainer_class
    from ..images import list_images
    from .common import load_model_from_args, print_json, progress

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
    explainer = cls(**params)
    out = Path(args.out) if args.out else Path("xaudit-out") / time.strftime("explain-%Y%m%d-%H%M%S", time.gmtime())
    several = len(images) > 1
    dirs = [out / n for n in _folder_names(images)] if several else [out]
    results = []
    run_params = {"method": method, "method_requested": args.method, "method_reason": reason,
                  "images": len(images), "target": args.target, **{f"{method}.{k}": v for k, v in params.items()}}
    with tracking.command_run(args, "explain", model=model, params=run_params) as tr:
        it = zip(images, dirs)
        if several:
            it = progress(list(it), args, desc=f"explain ({method})", unit="image")
        for i, (img, d) in enumerate(it):
            exp = explainer.explain(model, img, args.target)
            exp.meta["method_requested"] = args.method
            exp.meta["method_reason"] = reason
            exp.save(d)
            tracking.log_explanation(tr, exp, step=i if several else None)
            row = exp.to_dict()
            row["out"] = str(d)
            results.append(row)
            if not args.json and not args.quiet and not several:
                _describe(exp, d)
        tr.log_artifacts(out)
    if args.json:
        print_json(results[0] if not several else results)
    elif several and not args.quiet:
        print(f"{len(results)} explanations ({method}: {reason}) written to {out}", file=sys.stderr)
    if not args.json:
        print(str(out))
    return 0


def _describe(exp, d):
    extra = ""
    if "completeness_error" in exp.meta:
        extra = f", completeness error {exp.meta['completeness_error']:.1e}"
    print(f"{exp.method}: class {exp.target} '{exp.target_label}' p={exp.target_prob:.3f}{extra} "
          f"({exp.model_calls} model calls, {exp.seconds:.2f}s) -> {d}", file=sys.stderr)
