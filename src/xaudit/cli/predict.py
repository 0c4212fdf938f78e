"""xaudit predict MODEL IMAGE_OR_DIR... [--top-k 5] [--batch-size N] [--json]"""
from __future__ import annotations


def register(sub):
    from .common import add_model_options
    p = sub.add_parser("predict", help="class probabilities for images",
                       description="Predict images (files or folders) through any supported model format.")
    p.add_argument("model", help="model file, Custom Vision folder/.zip, or module:factory")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--batch-size", type=int, default=64, help="images per model call (default 64)")
    p.add_argument("--json", action="store_true",
                   help='print [{"image": path, "top": [{"index", "label", "prob"}, ...]}, ...]')
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import numpy as np

    from ..errors import XauditError
    from ..images import list_images
    from .common import load_model_from_args, print_json, progress
    if args.top_k < 1:
        raise XauditError("--top-k must be at least 1")
    if args.batch_size < 1:
        raise XauditError("--batch-size must be at least 1")
    paths = list_images(args.images)
    model = load_model_from_args(args)
    k = min(args.top_k, model.num_classes)
    results = []
    for i in progress(range(0, len(paths), args.batch_size), args, desc="predict", unit="batch",
                      disable=args.quiet or len(paths) <= args.batch_size):
        chunk = paths[i:i + args.batch_size]
        probs = model.predict(model.preprocess_batch(chunk), batch_size=args.batch_size)
        for path, row in zip(chunk, probs):
            order = np.argsort(-row, kind="stable")[:k]
            results.append({"image": str(path), "top": [
                {"index": int(j), "label": model.label_of(int(j)), "prob": float(row[j])} for j in order]})
    if args.json:
        print_json(results)
        return 0
    for r in results:
        top = r["top"]
        print(f"{r['image']}")
        for t in top:
            print(f"  {t['prob']:7.2%}  [{t['index']:>3}] {t['label']}")
    return 0
