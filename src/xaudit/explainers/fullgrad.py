"""FullGrad (Srinivas & Fleuret, NeurIPS 2019), written natively after the reference code.

Full-gradient decomposition of the target's pre-softmax logit ``f(x)``::

    f(x) = sum(grad_x f * x) + sum_l sum(grad_{z_l} f * b_l)

over every layer ``l`` with an explicit bias (Conv/Linear/Gemm bias, Add-constant,
ImageScaler) or an implicit one (BatchNorm: ``b = beta - mean * gamma / sqrt(var + eps)``),
``z_l`` being that layer's output. The saliency map is::

    M = psi(|grad_x f * x|) + sum_{l spatial} upsample(psi(|grad_{z_l} f * b_l|))

where ``psi`` takes the absolute value, min-max normalises over the whole (C,H,W) tensor,
sums over channels; upsampling is bilinear with ``align_corners=True``; only layers with
4-D (spatial) outputs enter the map (as in the reference), all enter the completeness
check. ``x`` is the *native* input tensor (after the model's declared preprocessing).

``meta["completeness_error"] = |sum input*grad + sum bias*grad - logit| / |logit|``.
"""
from __future__ import annotations

import threading

import numpy as np

from ..white_box import canonical_tensor, count_calls, spatial_view
from .base import Attribution, Explainer

EPS = 1e-6


def _psi(t):
    """abs, min-max over (C,H,W) per image, sum over channels -> (N,1,H,W) (reference order:
    normalise, then sum; computed as (sum_c |t| - C*min) / (max - min + eps), which is the
    same number with one pass over the tensor)."""
    t = t.abs()
    mn, mx = t.reshape(t.shape[0], -1).aminmax(dim=1)
    c = t.shape[1]
    return (t.sum(1, keepdim=True) - c * mn.reshape(-1, 1, 1, 1)) / (mx - mn + EPS).reshape(-1, 1, 1, 1)


def forward(diff, x):
    """Forward pass recording every bias layer's output (hooks removed on exit)."""
    native = diff.native(x).detach().requires_grad_(True)
    with diff.capture() as rec:
        out = diff.forward_native(native)
        layers = [b for b in diff.bias_layers if b.name in rec]
        feats = [rec[b.name] for b in layers]
    return {"native": native, "out": out, "layers": layers, "feats": feats}


def backward(fwd, target: int):
    """-> dict(native, input_grad, bias_terms=[(BiasLayer, g*b)], score (N,))."""
    import torch
    score = fwd["out"][:, target]
    grads = torch.autograd.grad(score.sum(), [fwd["native"]] + fwd["feats"], allow_unused=True)
    terms = []
    for b, g in zip(fwd["layers"], grads[1:]):
        if g is not None:
            terms.append((b, g * b.bias_for(g)))
    return {"native": fwd["native"].detach(), "input_grad": grads[0], "bias_terms": terms, "score": score.detach()}


def decompose(diff, x, target: int):
    """Full-gradient decomposition for one canonical batch ``x`` (torch (N,H,W,3))."""
    return backward(forward(diff, x), target)


def probabilities(diff, out):
    """Class probabilities (N,C) numpy from the differentiable view's score tensor."""
    import torch
    with torch.no_grad():
        z = out.detach().double()
        p = torch.softmax(z, 1) if diff.score_kind == "logit" else torch.exp(z)
        p = p / p.sum(1, keepdim=True)
    return p.float().cpu().numpy()


def completeness_error(dec) -> float:
    total = (dec["input_grad"] * dec["native"]).sum()
    for _, t in dec["bias_terms"]:
        total = total + t.sum()
    logit = dec["score"].sum()
    return float((total - logit).abs() / logit.abs().clamp_min(1e-12))


def saliency(dec, native_channel_axis: int, size):
    """Sum of the normalised input term and spatial bias terms at input size. Layers with the
    same resolution are summed before upsampling (bilinear interpolation is linear, so this is
    the same map with fewer interpolations)."""
    import torch.nn.functional as F
    inp = spatial_view(dec["input_grad"] * dec["native"], native_channel_axis)
    by_res = {}
    used = 0
    for b, t in dec["bias_terms"]:
        if t.ndim != 4:
            continue
        m = _psi(spatial_view(t, b.channel_axis))
        k = tuple(m.shape[-2:])
        by_res[k] = by_res[k] + m if k in by_res else m
        used += 1
    k = tuple(inp.shape[-2:])
    m = _psi(inp)
    by_res[k] = by_res[k] + m if k in by_res else m
    cam = None
    for k, m in by_res.items():
        up = m if k == tuple(size) else F.interpolate(m, size=size, mode="bilinear", align_corners=True)
        cam = up if cam is None else cam + up
    return cam[:, 0], used


class ForwardReusingExplainer(Explainer):
    """Gradient explainers whose prediction forward pass is kept (per thread) for the map:
    ``_predict`` stores ``(x, forward)`` in ``self._tls.pending``; ``_attribute`` takes it.
    Picklable for process executors (the pending forward is transient)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._tls = threading.local()

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("_tls", None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._tls = threading.local()


class FullGrad(ForwardReusingExplainer):
    """FullGrad saliency; no hyper-parameters (deterministic, one forward + one backward)."""

    name = "fullgrad"
    needs_gradients = True

    def _predict(self, model, x):
        """One forward pass serves both the prediction and the decomposition."""
        import torch
        diff = model.differentiable()
        with torch.enable_grad():
            fwd = forward(diff, canonical_tensor(x))
        count_calls(model, 1)
        self._tls.pending = (x, fwd)
        return probabilities(diff, fwd["out"])[0]

    def _attribute(self, model, x, target, probs) -> Attribution:
        import torch
        diff = model.differentiable()
        pending, self._tls.pending = getattr(self._tls, "pending", None), None
        if pending is not None and pending[0] is x:
            fwd = pending[1]
        else:
            with torch.enable_grad():
                fwd = forward(diff, canonical_tensor(x))
            count_calls(model, 1)
        with torch.enable_grad():
            dec = backward(fwd, target)
        count_calls(model, 1)  # the backward pass
        err = completeness_error(dec)
        nca = 1 if diff.preprocessing.layout == "NCHW" else 3
        with torch.no_grad():
            cam, used = saliency(dec, nca, tuple(model.input_size))
        att = cam[0].cpu().numpy().astype(np.float32)
        meta = {
            "completeness_error": err,
            "score": diff.score_kind,
            "target_logit": float(dec["score"][0]),
            "bias_layers": len(dec["bias_terms"]),
            "spatial_bias_layers": used,
            "gradient_source": diff.origin,
            "gradient_notes": diff.notes,
        }
        return Attribution(att, meta=meta)
