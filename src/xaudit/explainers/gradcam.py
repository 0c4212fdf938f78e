"""Grad-CAM (Selvaraju et al. 2017) on any differentiable view.

The target layer is, by default, the last layer (in execution order) whose output is
4-D (spatial); ``layer=`` names another one: a module name for torch modules
(``layer4``), a module path or aten output name for TorchScript, a node output name for
ONNX / TF graphs. ``cam = ReLU(sum_c mean_hw(dS/dA_c) * A_c)`` on that layer, upsampled
bilinearly to the input size. Agrees with Captum's ``LayerGradCam(relu_attributions=True)``
on the same layer (see tests); written natively because Captum's layer hooks cannot reach
nodes of converted graphs.
"""
from __future__ import annotations


import numpy as np

from ..errors import UnsupportedOperation
from ..white_box import canonical_tensor, count_calls, spatial_view
from .base import Attribution
from .fullgrad import ForwardReusingExplainer


def select_layer(diff, native, layer=None):
    """``layer`` or the last layer with a 4-D output (cached per input shape)."""
    if layer:
        return layer
    cache = diff.__dict__.setdefault("_gradcam_auto_layer", {})
    key = tuple(native.shape[1:])
    if key not in cache:
        names = diff.spatial_layers(native.detach())
        if not names:
            raise UnsupportedOperation("Grad-CAM needs a layer with a spatial (4-D) output; the model has none")
        cache[key] = names[-1]
    return cache[key]


def forward(diff, x, layer=None):
    native = diff.native(x).detach().requires_grad_(True)  # graphs with frozen weights need this
    name = select_layer(diff, native, layer)
    with diff.capture([name]) as rec:
        out = diff.forward_native(native)
        if name not in rec:
            raise UnsupportedOperation(f"layer {name!r} did not run in the forward pass")
        act = rec[name]
    return {"out": out, "act": act, "name": name}


def backward(diff, fwd, target, upsample_to=None, relu=True):
    import torch
    import torch.nn.functional as F
    act, name, out = fwd["act"], fwd["name"], fwd["out"]
    if not torch.is_tensor(act) or act.ndim != 4:
        raise UnsupportedOperation(f"layer {name!r} has no spatial (4-D) output "
                                   f"(shape {tuple(getattr(act, 'shape', ()))}); choose another --layer")
    (g,) = torch.autograd.grad(out[:, target].sum(), [act])
    ca = diff.channel_axis(name)
    a, g = spatial_view(act, ca), spatial_view(g, ca)
    w = g.mean(dim=(2, 3), keepdim=True)
    cam = (w * a).sum(1, keepdim=True)
    if relu:
        cam = F.relu(cam)
    if upsample_to is not None and tuple(cam.shape[-2:]) != tuple(upsample_to):
        cam = F.interpolate(cam, size=tuple(upsample_to), mode="bilinear", align_corners=False)
    return cam[:, 0].detach(), name


def gradcam_map(diff, x, target, layer=None, upsample_to=None, relu=True):
    """-> (cam (N,h,w) at layer resolution or ``upsample_to``, layer name)."""
    return backward(diff, forward(diff, x, layer), target, upsample_to, relu)


class GradCAM(ForwardReusingExplainer):
    """Parameters: ``layer`` (default: last spatial layer), ``relu`` (default True)."""

    name = "gradcam"
    needs_gradients = True

    def __init__(self, layer: str | None = None, relu: bool = True, **kw):
        super().__init__(layer=layer, relu=relu, **kw)

    def _predict(self, model, x):
        """One forward pass serves both the prediction and the map."""
        import torch

        from .fullgrad import probabilities
        diff = model.differentiable()
        with torch.enable_grad():
            fwd = forward(diff, canonical_tensor(x), self._params.get("layer"))
        count_calls(model, 1)
        self._tls.pending = (x, fwd)
        return probabilities(diff, fwd["out"])[0]

    def _attribute(self, model, x, target, probs) -> Attribution:
        import torch
        diff = model.differentiable()
        pending, self._tls.pending = getattr(self._tls, "pending", None), None
        with torch.enable_grad():
            if pending is not None and pending[0] is x:
                fwd = pending[1]
            else:
                fwd = forward(diff, canonical_tensor(x), self._params.get("layer"))
                count_calls(model, 1)
            cam, name = backward(diff, fwd, target, upsample_to=tuple(model.input_size),
                                 relu=self._params.get("relu", True))
        count_calls(model, 1)
        pretty = diff.module_name(name) if hasattr(diff, "module_name") else name
        return Attribution(cam[0].cpu().numpy().astype(np.float32),
                           meta={"layer": pretty, "layer_output": name, "gradient_source": diff.origin})
