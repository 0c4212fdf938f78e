"""``xaudit baseline``: what normal predictions look like (reference images or a capture window)."""
from __future__ import annotations



from .common import add_model_options


def register(sub):
    p = sub.add_parser("baseline", help="build a monitoring baseline from reference images or a capture window")
    p.add_argument("model", help="model file, folder or module:factory")
    p.add_argument("images", nargs="*", help="reference images or folders")
    p.add_argument("--out", default="baseline.json", help="output file (baseline.json)")
    p.add_argument("--labels-csv", metavar="FILE",
                   help="CSV 'image,label' (label = index or name) to calibrate confidences for the CBPE estimate")
    p.add_argument("--from-capture", metavar="DIR", help="build the baseline from a capture window instead")
    p.add_argument("--start", help="capture window start (ISO 8601 UTC)")
    p.add_argument("--end", help="capture window end (ISO 8601 UTC)")
    p.add_argument("--low-confidence", type=float, default=0.5)
    p.add_argument("--max-samples", type=int, default=2000, help="softmax rows kept for BBSD (2000)")
    p.add_argument("--seed", type=int, default=0)
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def model_info(model) -> dict:
    from .. import tracking
    sha = None
    try:
        sha = tracking.file_sha256(model.source)
    except Exception:  # noqa: BLE001 - identity is best effort
        sha = None
    return {"source": model.source, "format": getattr(model, "format", None), "sha256": sha,
            "labels": list(model.labels) if model.labels else None, "num_classes": int(model.num_classes),
            "input_size": list(model.input_size)}


def _read_labels_csv(path, model):
    import csv
    from pathlib import Path

    from ..errors import XauditError
    p = Path(path)
    if not p.is_file():
        raise XauditError(f"labels CSV not found: {p}")
    out = {}
    names = {str(lab): i for i, lab in enumerate(model.labels or [])}
    with open(p, newline="") as f:
        for row in csv.reader(f):
            if len(row) < 2 or row[0].strip().lower() in ("image", "path", "file"):
                continue
            img, lab = row[0].strip(), row[1].strip()
            if lab.lstrip("-").isdigit():
                idx = int(lab)
            elif lab in names:
                idx = names[lab]
            else:
                raise XauditError(f"{p}: unknown label {lab!r} for {img}")
            if not 0 <= idx < model.num_classes:
                raise XauditError(f"{p}: label {idx} out of range (model has {model.num_classes} classes)")
            q = Path(img)
            if not q.is_absolute():
                q = (p.parent / q) if (p.parent / q).exists() else q
            out[str(q.resolve())] = idx
    if not out:
        raise XauditError(f"{p}: no 'image,label' rows")
    return out


def run(args) -> int:
    import numpy as np

    from .. import tracking
    from ..errors import XauditError
    from ..monitoring import build_baseline, save_baseline
    from .common import load_model_from_args, progress
    if bool(args.images) == bool(args.from_capture):
        raise XauditError("give reference images or --from-capture DIR (one of them)")
    model = load_model_from_args(args)
    info = model_info(model)
    examples: dict = {}
    true = None
    if args.from_capture:
        from ..capture import ReadStats, iter_records
        st = ReadStats()
        rows = []
        for rec in progress(iter_records(args.from_capture, args.start, args.end, st), args, desc="records"):
            if rec.outputs.shape[1] != model.num_classes:
                raise XauditError(f"capture predictions have {rec.outputs.shape[1]} classes, the model "
                                  f"{model.num_classes}: capture of another model")
            rows.append(rec.outputs)
        if not rows:
            raise XauditError(f"no capture records in {args.from_capture} between {args.start} and {args.end} "
                              f"({st.malformed} malformed)")
        probs = np.concatenate(rows)
        source = {"kind": "capture", "capture": args.from_capture, "start": args.start, "end": args.end,
                  "read": st.to_dict()}
    else:
        from ..images import list_images
        paths = list_images(args.images)
        labels_map = _read_labels_csv(args.labels_csv, model) if args.labels_csv else None
        chunks = []
        bs = 64
        for i in progress(range(0, len(paths), bs), args, desc="reference images"):
            chunk = paths[i:i + bs]
            chunks.append(model.predict(model.preprocess_batch([str(p) for p in chunk])))
        probs = np.concatenate(chunks)
        pred = probs.argmax(1)
        for p, k in zip(paths, pred):
            lst = examples.setdefault(str(int(k)), [])
            if len(lst) < 8:
                lst.append(str(Path_resolve(p)))
        if labels_map is not None:
            true = np.array([labels_map.get(str(Path_resolve(p)), -1) for p in paths])
            if (true >= 0).sum() < 10:
                raise XauditError(f"--labels-csv matches only {(true >= 0).sum()} of the reference images (need 10)")
        source = {"kind": "images", "images": len(paths), "labels_csv": args.labels_csv}
    data = build_baseline(probs, model_info=info, source=source, labels=model.labels, examples=examples,
                          true_labels=true, seed=args.seed, max_samples=args.max_samples,
                          low_confidence=args.low_confidence)
    with tracking.command_run(args, "baseline", model=model, params={"n": int(len(probs)), **source}) as trun:
        out = save_baseline(data, args.out)
        trun.log_metrics({"baseline.n": len(probs), "baseline.low_confidence_rate": data["low_confidence"]["rate"],
                          "baseline.mean_confidence": data["confidence"]["mean"]})
        if data["calibration"]:
            trun.log_metrics({"baseline.reference_accuracy": data["calibration"]["reference_accuracy"]})
        trun.log_artifact(str(out))
    cal = data["calibration"]
    top = int(np.argmax(data["class_counts"]))
    print(f"baseline of {len(probs)} predictions, {model.num_classes} classes (most frequent: {top} "
          f"{data['class_shares'][top] * 100:.1f} %), low-confidence rate "
          f"{data['low_confidence']['rate'] * 100:.1f} %"
          + (f", calibrated on {cal['n']} labelled images (accuracy {cal['reference_accuracy'] * 100:.1f} %)"
             if cal else "") + f" -> {out}")
    return 0


def Path_resolve(p):
    from pathlib import Path
    return Path(p).resolve()
