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
    from .common import add_executor_options, add_model_options
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
    add_executor_options(p)
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


GRID_MAX_IMAGES = 20     # grid.png / std.png show the first images only (the folders hold all)


def run(args) -> int:
    from .. import tracking
    from ..executors import Ledger, Task, executor_from_args, write_files
    from ..executors.tasks import stability_task
    from ..explainers.base import model_summary
    from ..images import list_images
    from ..stability import finish_report, sweep_explainer
    from .common import (EXIT_PARTIAL, load_model_from_args, model_overrides, print_json, progress,
                         raise_if_all_failed, report_failures)

    seeds = parse_seeds(args.seeds)
    params = _params(args)
    images = list_images(args.images)
    model = load_model_from_args(args)
    out = Path(args.out) if args.out else Path("xaudit-out") / time.strftime("stability-%Y%m%d-%H%M%S", time.gmtime())
    base, seeded = sweep_explainer(args.method, args.vary, **params)
    dirs = _image_dirs(out, images)
    keys = [d.relative_to(out).as_posix() for d in dirs]
    run_params = {"method": args.method, "seeds": ",".join(map(str, seeds)), "vary": args.vary,
                  "images": len(images), "target": args.target,
                  **{f"{args.method}.{k}": v for k, v in params.items()}}
    ledger = Ledger(out, {"command": "stability", "model": model_summary(model), "overrides": model_overrides(args),
                          "method": args.method, "seeds": seeds, "vary": args.vary, "params": params,
                          "target": args.target})
    if ledger.restarted and not args.quiet:
        print(f"xaudit: {out} holds results of another run: starting over", file=sys.stderr)
    pending = [i for i, k in enumerate(keys) if not ledger.is_done(k)]
    tasks = (Task(key=keys[i], image=str(images[i]), method=args.method,
                  params={"explainer": params, "seeds": seeds, "vary": args.vary, "target": args.target,
                          "name": Path(images[i]).stem}) for i in pending)
    per_image, failed, calls = [None] * len(images), [], 0
    t0 = time.perf_counter()
    with tracking.command_run(args, "stability", model=model, params=run_params) as tr, ledger, \
            executor_from_args(args, model=model) as ex:
        it = ex.map(stability_task, tasks)
        it = progress(it, args, desc=f"stability ({args.method})", unit="image", total=len(pending))
        for r in it:       # streamed in image order; only per-image summaries are kept
            i = pending[r.index]
            if r.ok:
                write_files(dirs[i], r.value["files"])
                ledger.mark_done(r.key, image=str(images[i]))
                per_image[i] = _keep(r.value["image"], i)
                calls += int(r.value["model_calls"])
            else:
                ledger.mark_failed(r.key, r.error, image=str(images[i]))
                failed.append({"key": r.key, "image": str(images[i]), "error": r.error, "user_error": r.user_error})
        raise_if_all_failed(failed, len(images))
        for i in range(len(images)):          # finished by an earlier run of the same --out
            if per_image[i] is None and i not in pending:
                per_image[i] = _keep(_reload(dirs[i], Path(images[i]).stem, seeds), i)
        rep = finish_report(base, seeded, seeds, args.vary, [x for x in per_image if x is not None],
                            time.perf_counter() - t0, calls)
        rep.failed = [{k: f[k] for k in ("key", "image", "error")} for f in failed]
        rep.save(out, explanations=False, max_images=GRID_MAX_IMAGES)
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
    report_failures(failed, "stability task")
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
                  + f" [{rep.model_calls} model calls, {rep.seconds:.1f}s]"
                  + (f"; {len(failed)} image(s) failed (rerun with the same --out to retry them)" if failed else ""),
                  file=sys.stderr)
        print(str(out))
    return EXIT_PARTIAL if failed else 0


def _image_dirs(out: Path, images) -> list:
    """Same layout as ``StabilityReport.seed_dirs``: ``out`` for one image, else
    ``out/<nn>-<image stem>``."""
    from ..stability import _safe
    if len(images) == 1:
        return [out]
    return [out / _safe(f"{i:02d}-{Path(p).stem}") for i, p in enumerate(images)]


def _keep(im, i):
    """Per-image result kept by the driver: explanations in full for the images shown in
    grid.png / std.png, without their arrays for the others (memory stays flat)."""
    import dataclasses

    import numpy as np
    if i < GRID_MAX_IMAGES:
        return im
    im.explanations = [dataclasses.replace(e, attribution=np.zeros((0, 0), np.float32), arrays={}, image=None)
                       for e in im.explanations]
    return im


def _reload(d: Path, name: str, seeds):
    from ..explainers import Explanation
    from ..stability import analyse
    return analyse(name, [Explanation.load(d / f"seed-{s}") for s in seeds])
