"""``xaudit serve MODEL``: HTTP predictions with SageMaker-style capture."""
from __future__ import annotations

import sys

from .common import add_model_options


def register(sub):
    p = sub.add_parser("serve", help="serve a model over HTTP with prediction capture",
                       description="POST /invocations (image/png, image/jpeg, application/x-image, "
                                   "application/x-npy, application/json) -> JSON probabilities; GET /ping.")
    p.add_argument("model", help="model file, folder or module:factory")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--capture", metavar="DIR", help="capture folder (or omit for no capture)")
    p.add_argument("--sampling-percentage", type=float, default=50.0, help="share of requests captured (50)")
    p.add_argument("--endpoint", default=None, help="endpoint name in the capture layout (default: model name)")
    p.add_argument("--variant", default="AllTraffic", help="variant name in the capture layout")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-request sampling decisions")
    p.add_argument("--max-bytes", type=int, default=8 * 1024 * 1024, help="request body limit in bytes (413 above)")
    p.add_argument("--max-file-bytes", type=int, default=64 * 1024 * 1024, help="capture file size before rotation")
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import re
    from pathlib import Path

    from .. import tracking
    from ..errors import XauditError
    from ..serve import serve
    from .common import load_model_from_args
    if not 0 <= args.sampling_percentage <= 100:
        raise XauditError(f"--sampling-percentage must be within 0-100, got {args.sampling_percentage}")
    if not 0 < args.port < 65536:
        raise XauditError(f"--port must be 1-65535, got {args.port}")
    model = load_model_from_args(args)
    endpoint = args.endpoint or re.sub(r"[^A-Za-z0-9-]+", "-", Path(str(args.model).rstrip("/")).stem).strip("-") \
        or "xaudit"
    params = {"host": args.host, "port": args.port, "capture": args.capture,
              "sampling_percentage": args.sampling_percentage, "endpoint": endpoint, "variant": args.variant,
              "seed": args.seed}
    with tracking.command_run(args, "serve", model=model, params=params):
        pass  # the serve run records the configuration; requests are not logged per call
    print(f"xaudit serve: {model.source} ({model.format}, {model.num_classes} classes) on "
          f"http://{args.host}:{args.port}/invocations"
          + (f", capturing {args.sampling_percentage:g} % to {args.capture}/{endpoint}/{args.variant}"
             if args.capture else ", no capture"), file=sys.stderr, flush=True)
    serve(model, host=args.host, port=args.port, capture_dir=args.capture,
          sampling_percentage=args.sampling_percentage, endpoint=endpoint, variant=args.variant,
          seed=args.seed, max_bytes=args.max_bytes, max_file_bytes=args.max_file_bytes)
    return 0
