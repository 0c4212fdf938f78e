"""Adversarial drift scenario on the shipped sign model.

Targeted DeepFool pushes sign images to class 14 ('Stop'); ``xaudit serve`` (subprocess,
50 % capture) receives clean then mixed traffic over loopback; ``xaudit monitor`` must flag
class 14 in the adversarial window and not in the clean one; ``xaudit audit`` explains the
captured adversarial inputs; FullGrad attribution inside the ground-truth sign mask is
compared for clean vs adversarial captured inputs.

    python experiments/adversarial_drift.py [--model signs.pt] [--quick] [--out DIR]
Result: experiments/results/adversarial_drift.json (core: xaudit.monitoring.scenario)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="signs.pt", help="shipped model name or a path (signs.pt / signs.onnx)")
    ap.add_argument("--quick", action="store_true", help="small traffic (about 1 min)")
    ap.add_argument("--n-clean", type=int, default=None)
    ap.add_argument("--n-mixed", type=int, default=None)
    ap.add_argument("--adversarial-share", type=float, default=0.8)
    ap.add_argument("--explain", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "adversarial_drift"))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    try:
        from xaudit.data import model_path
        from xaudit.data.generate import make_signs
    except ImportError as e:
        sys.exit(f"adversarial_drift: the shipped sign model/data are not available ({e})")
    src = Path(args.model) if Path(args.model).exists() else Path(model_path(args.model))
    n_clean = args.n_clean or (100 if args.quick else 400)
    n_mixed = args.n_mixed or (160 if args.quick else 800)
    images, labels, masks = make_signs(n_clean + n_mixed, seed=args.seed)
    reference = make_signs(200 if args.quick else 600, seed=args.seed + 1)[0]
    from xaudit.monitoring.scenario import run_scenario
    res = run_scenario(src, args.out, images, labels, masks, reference, target=14, n_clean=n_clean,
                       n_mixed=n_mixed, adversarial_share=args.adversarial_share, explain=args.explain,
                       seed=args.seed)
    out = HERE / "results" / "adversarial_drift.json"
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: res[k] for k in ("attack", "mask_share", "clean_window_quiet", "pass")}, indent=1))
    print(f"wrote {out}")
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
