"""``xaudit evaluate MODEL --dataset signs|poles|DIR``: faithfulness of explanation methods.

Per method: pointing game, energy in mask / background share, deletion and insertion AUC
(each vs a random pixel order), the parameter-randomisation sanity check, seed stability,
seconds and model calls per image. Writes into ``--out``: ``evaluation.json``,
``evaluation.md``, ``evaluation.html`` (self-contained) and ``evaluation.png``; tracked in
MLflow (one metric per method x metric, the files as artifacts). Tasks run on
``--executor local|process|ray``; a rerun with the same ``--out`` resumes (finished tasks
are kept in ``<out>/.xaudit-tasks.jsonl``); failed tasks are listed and exit 4 (partial).
See docs/evaluation.md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

DEFAULT_METHODS = "fullgrad,gradcam,ig,lime,anchors,occlusion"


def register(subparsers):
    from .common import add_executor_options, add_model_options
    p = subparsers.add_parser(
        "evaluate", help="faithfulness evaluation of explanation methods on images with ground-truth masks",
        description="Explain images with ground-truth evidence masks with each method and measure pointing game, "
                    "energy in mask, deletion/insertion AUC vs a random order, the parameter-randomisation "
                    "sanity check, seed stability and cost. DATASET: 'signs' or 'poles' (shipped generators, "
                    "fixed seeds) or a folder with images/ and masks/ (same stems) and an optional labels.csv.")
    p.add_argument("model", metavar="MODEL", help="model file or bundle (.pt, .onnx, .pb, Custom Vision folder/zip)")
    p.add_argument("--dataset", required=True, metavar="signs|poles|DIR",
                   help="'signs', 'poles' or a folder: images/<stem>.png + masks/<stem>.png [+ labels.csv]")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated methods (default {DEFAULT_METHODS})")
    p.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--out", help="output folder (default ./xaudit-out/evaluate-<UTC timestamp>)")
    p.add_argument("--seed", type=int, default=1, help="explainer seed of the main pass and of the random orders (default 1)")
    p.add_argument("--seeds", default="1,11,21", help="seeds of the stability check for stochastic methods (default 1,11,21)")
    p.add_argument("--stability-n", type=int, default=20, help="images in the stability check (default 20)")
    p.add_argument("--sanity-n", type=int, default=50, help="images in the randomisation check (default 50)")
    p.add_argument("--sanity-seed", type=int, default=0, help="seed of the re-randomised weights (default 0)")
    p.add_argument("--steps", type=int, default=32, help="deletion/insertion steps (default 32)")
    p.add_argument("--random-orders", type=int, default=3, help="random pixel orders of the baseline (default 3)")
    p.add_argument("--deletion-baseline", choices=["blur", "black", "mean"], default="blur",
                   help="what removed pixels become (default blur: the blurred image)")
    p.add_argument("--insertion-start", choices=["blur", "black", "mean"], default="blur",
                   help="the image pixels are inserted into (default blur)")
    p.add_argument("--data-seed", type=int, help="generator seed for signs/poles (default: signs 8008, poles 9009)")
    p.add_argument("--pole-variant", choices=["biased", "honest"], default="biased",
                   help="make_poles variant for --dataset poles (default biased: backgrounds agree with the class)")
    p.add_argument("--anchors-backgrounds", type=int, default=16,
                   help="background images for Anchors on generated datasets (alibi-style; 0 = mean colour; default 16)")
    p.add_argument("--lime-samples", type=int, help="LIME samples per explanation (default 1000)")
    p.add_argument("--ig-steps", type=int, help="Integrated Gradients steps (default 50)")
    p.add_argument("--occlusion-window", type=int, help="occlusion window in pixels (default 8)")
    p.add_argument("--anchors-threshold", type=float, help="Anchors precision threshold (default 0.95)")
    p.add_argument("--json", action="store_true", help="print evaluation summary JSON on stdout")
    add_model_options(p)
    add_executor_options(p)
    p.set_defaults(func=run)
    return p


def _method_params(args) -> dict:
    from ..errors import XauditError
    mp = {}
    if args.lime_samples is not None:
        if args.lime_samples < 2:
            raise XauditError(f"--lime-samples must be >= 2, got {args.lime_samples}")
        mp["lime"] = {"num_samples": args.lime_samples}
    if args.ig_steps is not None:
        if args.ig_steps < 1:
            raise XauditError(f"--ig-steps must be >= 1, got {args.ig_steps}")
        mp["ig"] = {"steps": args.ig_steps}
    if args.occlusion_window is not None:
        if args.occlusion_window < 1:
            raise XauditError(f"--occlusion-window must be >= 1, got {args.occlusion_window}")
        mp["occlusion"] = {"window": args.occlusion_window}
    if args.anchors_threshold is not None:
        if not 0 < args.anchors_threshold <= 1:
            raise XauditError(f"--anchors-threshold must be in (0, 1], got {args.anchors_threshold}")
        mp["anchors"] = {"threshold": args.anchors_threshold}
    return mp


def _check(args):
    from ..errors import XauditError
    from ..evaluation import parse_methods
    from .stability import parse_seeds
    if args.n is None or args.n <= 0:
        raise XauditError(f"--n must be >= 1, got {args.n}")
    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    for k in ("stability_n", "sanity_n", "anchors_backgrounds"):
        if getattr(args, k) < 0:
            raise XauditError(f"--{k.replace('_', '-')} must be >= 0, got {getattr(args, k)}")
    if args.steps < 2:
        raise XauditError(f"--steps must be >= 2, got {args.steps}")
    if args.random_orders < 1:
        raise XauditError(f"--random-orders must be >= 1, got {args.random_orders}")
    ds = str(args.dataset)
    if ds not in ("signs", "poles"):
        p = Path(ds)
        if not p.exists():
            raise XauditError(f"dataset {ds!r} is neither 'signs', 'poles' nor an existing folder")
        if not p.is_dir():
            raise XauditError(f"dataset {ds} is not a folder (expected images/ and masks/ inside)")
        if not (p / "masks").is_dir():
            raise XauditError(f"dataset folder {ds} has no masks/ folder (layout: images/<stem>.png + "
                              "masks/<stem>.png [+ labels.csv]; see docs/evaluation.md)")
    return methods, seeds


def run(args) -> int:
    from .. import tracking
    from ..evaluation import EvalConfig, evaluate
    from ..executors import Ledger, executor_from_args
    from ..explainers.base import model_summary
    from .common import (EXIT_PARTIAL, load_model_from_args, model_overrides, print_json, progress,
                         report_failures)

    methods, seeds = _check(args)      # bad input fails before the model loads
    mp = _method_params(args)
    model = load_model_from_args(args)
    out = Path(args.out) if args.out else Path("xaudit-out") / time.strftime("evaluate-%Y%m%d-%H%M%S", time.gmtime())
    config = EvalConfig(steps=args.steps, random_orders=args.random_orders, deletion_baseline=args.deletion_baseline,
                        insertion_start=args.insertion_start, seed=args.seed, seeds=tuple(seeds),
                        stability_n=args.stability_n, sanity_n=args.sanity_n, sanity_seed=args.sanity_seed,
                        method_params=mp)
    run_params = {"dataset": str(args.dataset), "methods": ",".join(methods), "n": args.n, "seed": args.seed,
                  "seeds": ",".join(map(str, seeds)), "steps": args.steps, "random_orders": args.random_orders,
                  "deletion_baseline": args.deletion_baseline, "insertion_start": args.insertion_start,
                  "sanity_n": args.sanity_n, "sanity_seed": args.sanity_seed, "stability_n": args.stability_n,
                  "data_seed": args.data_seed, "pole_variant": args.pole_variant,
                  "anchors_backgrounds": args.anchors_backgrounds, "executor": args.executor,
                  **{f"{m}.{k}": v for m, d in mp.items() for k, v in d.items()}}
    # resume: rerunning with the same --out and the same settings skips finished tasks
    fingerprint = {"command": "evaluate", "model": model_summary(model), "overrides": model_overrides(args),
                   **{k: v for k, v in run_params.items() if k != "executor"}}
    ledger = Ledger(out, fingerprint)
    if ledger.done and not args.quiet:
        sys.stderr.write(f"xaudit: resuming in {out}: {len(ledger.done)} tasks already done\n")
    with tracking.command_run(args, "evaluate", model=model, params=run_params) as tr, ledger, \
            executor_from_args(args, model=model) as ex:
        rep = evaluate(model, args.dataset, methods, n=args.n, config=config, data_seed=args.data_seed,
                       pole_variant=args.pole_variant, anchor_backgrounds=args.anchors_backgrounds,
                       executor=ex, ledger=ledger,
                       progress=lambda it, total=None: progress(it, args, desc="evaluate", unit="task", total=total))
        rep.save(out)
        tr.log_metrics(rep.metrics())
        tr.log_metrics({"dataset.accuracy": rep.dataset["accuracy"] or 0.0, "seconds": rep.seconds,
                        "failed_tasks": len(rep.failed)})
        tr.log_artifacts(out)
    if args.json:
        print_json({"out": str(out), "dataset": rep.dataset, "summary": rep.summary, "random": rep.random,
                    "params": rep.params, "seconds": rep.seconds, "failed": rep.failed})
    else:
        if not args.quiet:
            sys.stderr.write(rep.markdown().split("\n\n", 2)[2].split("\n\n")[0] + "\n")
        print(str(out))
    report_failures(rep.failed, "evaluation task")
    return EXIT_PARTIAL if rep.failed else 0
