"""``xaudit stability MODEL IMAGE... --method lime|anchors|occlusion``: seed-stability sweep.

Explains each image once per seed (default 1,11,...,81) and writes into ``--out``:
``stability.json`` (seeds, pairwise matrices, summary), ``grid.png`` (one overlay per
seed), ``std.png`` (per-pixel std across seeds) and one explanation folder per seed
(``seed-<s>/``, or ``<nn>-<image>/seed-<s>/`` for several images). Tracked as one parent
run with a nested run ``seed-<s>`` per seed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

DEFAULT_SEEDS = "1,11,21,31,41,51,61,71,81"


def register(subparsers):
    from .common import add_model_options
    p = subparsers.add_parser(
        "stability", help="seed-stability sweep of LIME / Anchors / Occlusion explanations",
        description="Explain the same image(s) with several seeds and measure how much the "
                    "explanations agree (top-k Jaccard, Spearman, sign agreement, anchor precision spread).")
    p.add_argument("model", metavar="MODEL", help="model file or bundle (.pt, .onnx, .pb, Custom Vision folder/zip)")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files or folders")
    p.add_argument("--method", default="lime", type=str.lower, choices=["lime", "anchors", "occlusion"],
                   help="perturbation method (default: lime)")
    p.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"comma-separated seeds (default {DEFAULT_SEEDS})")
    p.add_argument("--vary", default="both", choices=["both", "segmentation", "sampling"],
                   help="what the seed drives: segmentation, sampling, or both (default)")
    p.add_argument("--num-samples", type=int, help="LIME samples per explanation (default 1000)")
    p.add_argument("--segmentation", choices=["quickshift", "slic", "felzenszwalb"],
                   help="superpixel algorithm (default quickshift)")
    p.add_argument("--threshold", type=float, help="Anchors precision threshold (default 0.95)")
    p.add_argument("--target", help="class label or index to explain (default: the predicted class)")
    p.add_argument("--out", help="output folder (default ./xaudit-out/stability-<UTC timestamp>)")
    p.add_argument("--json", action="store_true", help="print stability.json on stdout")
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def parse_seeds(text: str) -> list[int]:
    from ..errors import XauditError
    try:
        seeds = [int(s) for s in str(text).replace(" ", "").split(",") if s != ""]
    except ValueError:
        raise XauditError(f"--seeds expects comma-separated integers like 1,11,21, got {text!r}") from None
    if len(seeds) < 2:
        raise XauditError(f"--seeds needs at least 2 seeds, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise XauditError(f"--seeds has duplicates: {text!r}")
    return seeds


def _params(args):
    from ..errors import XauditError
    params = {}
    if args.num_samples is not None:
        if args.method != "lime":
            raise XauditError("--num-samples applies to --method lime only")
        if args.num_samples < 2:
            raise XauditError(f"--num-samples must be >= 2, got {args.num_samples}")
        params["num_samples"] = args.num_samples
    if args.segmentation is not None:
        if args.method == "occlusion":
            raise XauditError("--segmentation applies to --method lime or anchors")
        params["segmentation"] = args.segmentation
    if args.threshold is not None:
        if args.method != "anchors":
            raise XauditError("--threshold applies to --method anchors only")
        if not 0 < args.threshold <= 1:
            raise XauditError(f"--threshold must be in (0, 1], got {args.threshold}")
        params["threshold"] = args.threshold
    return params


def run(args) -> int:
    from .. import tracking
    from ..images import list_images
    from ..stability import stability_sweep
    from .common import load_model_from_args, print_json, progress

    seeds = parse_seeds(args.seeds)
    params = _params(args)
    images = list_images(args.images)
    model = load_model_from_args(args)
    out = Path(args.out) if args.out else Path("xaudit-out") / time.strftime("stability-%Y%m%d-%H%M%S", time.gmtime())
    run_params = {"method": args.method, "seeds": ",".join(map(str, seeds)), "vary": args.vary,
                  "images": len(images), "target": args.target,
                  **{f"{args.method}.{k}": v for k, v in params.items()}}
    with tracking.command_run(args, "stability", model=model, params=run_params) as tr:
        rep = stability_sweep(model, images, args.method, seeds=seeds, vary=args.vary, target=args.target,
                              progress=lambda it: progress(it, args, desc=f"stability ({args.method})",
                                                           unit="image"),
                              **params)
        rep.save(out)
        tr.log_metrics(rep.metrics())
        metrics_of = getattr(tracking, "explanation_metrics", None)
        for s in seeds:
            with tr.child(f"seed-{s}", params={"seed": s}) as sub:
                m = {}
                for i, im in enumerate(rep.images):
                    e = next(x for x in im.explanations if x.seed == s)
                    em = metrics_of(e) if metrics_of else {"target_prob": e.target_prob, "model_calls": e.model_calls}
                    pre = f"image{i}." if len(rep.images) > 1 else ""
                    m.update({f"{pre}{k}": v for k, v in em.items() if isinstance(v, (int, float))})
                sub.log_metrics(m)
        tr.log_artifacts(out)
    if args.json:
        d = rep.to_dict()
        d["out"] = str(out)
        print_json(d)
    else:
        if not args.quiet:
            s = rep.summary
            parts = [f"{k} mean {v['mean']:.3f} (worst {v['worst']:.3f})" for k, v in s.items()
                     if isinstance(v, dict) and v.get("mean") is not None]
            print(f"{rep.method}, {len(seeds)} seeds, vary={rep.vary}: " + "; ".join(parts)
                  + f" [{rep.model_calls} model calls, {rep.seconds:.1f}s]", file=sys.stderr)
        print(str(out))
    return 0
