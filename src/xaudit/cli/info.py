"""xaudit info MODEL [--json]"""
from __future__ import annotations


def register(sub):
    from .common import add_model_options
    p = sub.add_parser("info", help="describe a model: format, inputs/outputs, preprocessing, labels, gradients",
                       description="Describe a model: format, inputs/outputs, input size, layout, colour order, "
                                   "value range, labels, and whether gradients are reachable (and why).")
    p.add_argument("model", help="model file, Custom Vision folder/.zip, or module:factory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from .common import load_model_from_args, print_json
    model = load_model_from_args(args)
    info = model.info()
    info["sha256"] = getattr(model, "sha256", None)
    if args.json:
        print_json(info)
        return 0
    labels = info["labels"] or []
    shown = ", ".join(labels[:10]) + (f", ... ({len(labels)} in all)" if len(labels) > 10 else "")
    rows = [
        ("source", info["source"]), ("format", info["format"]), ("sha256", info["sha256"]),
        ("inputs", "; ".join(f"{i.get('name')} {i.get('shape', '')} {i.get('type', i.get('dtype', ''))}".strip()
                             for i in info["inputs"])),
        ("outputs", "; ".join(f"{o.get('name')} {o.get('shape', '')} {o.get('type', o.get('op', ''))}".strip()
                              for o in info["outputs"])),
        ("input size", "x".join(map(str, info["input_size"]))), ("layout", info["layout"]),
        ("colour order", info["color"].upper()), ("value range", info["range"]),
        ("mean / std", f"{info['mean']} / {info['std']}"), ("resize policy", info["resize"]),
        ("output", info["output_kind"]), ("fixed batch", info["fixed_batch"] or "no (dynamic)"),
        ("classes", f"{info['num_classes']}: {shown}"),
        ("gradients", ("yes" if info["gradients_reachable"] else "no") + f" ({info['gradients_reason']})"),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    return 0
