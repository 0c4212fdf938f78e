"""Options and helpers shared by sub-commands."""
from __future__ import annotations

import argparse
import json
import sys

from .._json import json_default


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
    json.dump(obj, sys.stdout, indent=2, default=json_default)
    sys.stdout.write("\n")


def progress(iterable, args, **kw):
    """tqdm progress bar on stderr unless --quiet."""
    from tqdm.auto import tqdm
    kw["disable"] = bool(getattr(args, "quiet", False)) or bool(kw.get("disable", False))
    return tqdm(iterable, file=sys.stderr, **kw)


# ----------------------------------------------------------------------------- executors
EXIT_PARTIAL = 4    # some tasks failed: everything else was written; rerun with the same --out to retry them


def add_executor_options(p: argparse.ArgumentParser):
    """``--executor local|process|ray``, ``--workers``, ``--ray-address``, ``--threads``."""
    g = p.add_argument_group("execution (see docs/scale-out.md)")
    g.add_argument("--executor", default="local", type=str.lower, choices=["local", "process", "ray"],
                   help="where tasks run: in this process (default), a process pool on this machine, or Ray")
    g.add_argument("--workers", type=int, metavar="N",
                   help="worker processes / Ray actors (default: the CPU count; Ray: the cluster's CPUs)")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to connect to (auto, ray://host:10001, host:6379); default: start a local Ray")
    g.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch threads per worker (default 1; the same value on every executor keeps results "
                        "bit-identical)")


def raise_if_all_failed(failed: list, total: int):
    """Every task failed with the same kind of bad input (a wrong --target, --layer, an
    unreadable image given alone ...): that is a usage error (exit 2, one line), not a
    partial result."""
    if failed and len(failed) >= total and all(f.get("user_error") for f in failed):
        from ..errors import XauditError
        raise XauditError(str(failed[0].get("error", "")).splitlines()[0])


def report_failures(failed: list, what: str = "task"):
    """One stderr line per failed task: ``xaudit: <what> failed: <key>: <error>``."""
    for f in failed:
        err = str(f.get("error", "")).splitlines()[0] if f.get("error") else "unknown error"
        sys.stderr.write(f"xaudit: {what} failed: {f.get('key')}: {err}\n")
