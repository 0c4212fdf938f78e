"""Integrated Gradients (Sundararajan et al. 2017) via Captum, on the canonical input.

Captum's ``IntegratedGradients`` runs on ``x -> Differentiable.logits(x)`` (canonical
RGB [0,1] image, so the baseline lives in the image space the user sees and the model's
preprocessing is part of the differentiated function). Baselines: ``black`` (zeros),
``blurred`` (Gaussian blur of the image, sigma = ``blur_sigma`` x image side) or ``mean``
(the image's per-channel mean colour). Attribution summed over colour channels to HxW
(signed). ``meta["convergence_delta"]`` = |sum(attr) - (f(x) - f(baseline))| from Captum.
"""
from __future__ import annotations

import numpy as np

from ..errors import XauditError
from ..white_box import canonical_tensor, count_calls
from .base import Attribution, Explainer

BASELINES = ("black", "blurred", "mean")


def make_baseline(x: np.ndarray, kind: str, blur_sigma: float = 0.1) -> np.ndarray:
    if kind == "black":
        return np.zeros_like(x)
    if kind == "mean":
        return np.broadcast_to(x.reshape(-1, 3).mean(0), x.shape).astype(np.float32).copy()
    if kind == "blurred":
        from scipy.ndimage import gaussian_filter
        s = blur_sigma * max(x.shape[:2])
        return gaussian_filter(x, sigma=(s, s, 0), mode="nearest").astype(np.float32)
    raise XauditError(f"unknown baseline {kind!r}: choose one of {', '.join(BASELINES)}")


class IntegratedGradients(Explainer):
    """Parameters: ``steps`` (50), ``baseline`` (black|blurred|mean), ``method``
    (Captum's integration rule, default gausslegendre), ``batch`` (internal batch size)."""

    name = "ig"
    needs_gradients = True

    def __init__(self, steps: int = 50, baseline: str = "black", method: str = "gausslegendre",
                 batch: int = 25, blur_sigma: float = 0.1, **kw):
        super().__init__(steps=steps, baseline=baseline, method=method, batch=batch, blur_sigma=blur_sigma, **kw)

    def _attribute(self, model, x, target, probs) -> Attribution:
        import torch
        from captum.attr import IntegratedGradients as CaptumIG
        p = self._params
        steps = int(p.get("steps", 50))
        if steps < 1:
            raise XauditError(f"--steps must be >= 1, got {steps}")
        kind = p.get("baseline", "black")
        base = make_baseline(np.asarray(x, np.float32), kind, float(p.get("blur_sigma", 0.1)))
        diff = model.differentiable()
        batch = int(p.get("batch", 25))
        fixed = getattr(diff, "fixed_batch", None) or getattr(model, "fixed_batch", None)
        if fixed:
            batch = int(fixed)
        ig = CaptumIG(lambda t: diff.logits(t))
        with torch.enable_grad():
            attr, delta = ig.attribute(canonical_tensor(x), baselines=canonical_tensor(base), target=int(target),
                                       n_steps=steps, method=p.get("method", "gausslegendre"),
                                       internal_batch_size=batch, return_convergence_delta=True)
        count_calls(model, 2 * steps)  # one forward + one backward per step
        att = attr[0].detach().sum(-1).cpu().numpy().astype(np.float32)
        return Attribution(att, meta={"convergence_delta": float(delta.abs().max()), "baseline": kind,
                                      "steps": steps, "gradient_source": diff.origin},
                           arrays={"baseline": base})
