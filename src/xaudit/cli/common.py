"""Options and helpers shared by sub-commands."""
from __future__ import annotations

import argparse
import json
import sys


def add_model_options(p: argparse.ArgumentParser):
    """Model-loading overrides shared by every command that loads a model."""
    g = p.add_argument_group("model overrides")
    g.add_argument("--labels", metavar="FILE", help="labels file (one per line, index order)")
    g.add_argument("--color", choices=["rgb", "bgr"], help="colour order the model expects")
    g.add_argument("--range", dest="value_range", choices=["0-1", "0-255"], help="input value range")
    g.add_argument("--mean", help="per-channel mean, e.g. 0.485,0.456,0.406 (model colour order/range)")
    g.add_argument("--std", help="per-channel std, e.g. 0.229,0.224,0.225")
    g.add_argument("--layout", choices=["NCHW", "NHWC"], help="input tensor layout")
    g.add_argument("--input-size", help="H,W or one number for square inputs")
    g.add_argument("--resize", choices=["stretch", "center-crop", "custom-vision"], help="resize/crop policy")
    g.add_argument("--output", dest="output_kind", choices=["probabilities", "logits", "auto"],
                   help="declare whether the model outputs probabilities or logits")
    g.add_argument("--factory-weights", dest="weights", metavar="STATE_DICT",
                   help="state-dict file for a module:factory PyTorch source")
    g.add_argument("--allow-pickle", action="store_true",
                   help="allow unpickling arbitrary objects when loading a PyTorch file (trusted files only)")


def model_overrides(args) -> dict:
    keys = ["labels", "color", "value_range", "mean", "std", "layout", "input_size", "resize",
            "output_kind", "weights", "allow_pickle"]
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) not in (None, False)}
    return out


def load_model_from_args(args, source=None):
    from ..loader import load_model
    return load_model(source or args.model, **model_overrides(args))


def print_json(obj):
    json.dump(obj, sys.stdout, indent=2, default=_default)
    sys.stdout.write("\n")


def _default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def progress(iterable, args, **kw):
    """tqdm progress bar on stderr unless --quiet."""
    from tqdm.auto import tqdm
    kw["disable"] = bool(getattr(args, "quiet", False)) or bool(kw.get("disable", False))
    return tqdm(iterable, file=sys.stderr, **kw)
