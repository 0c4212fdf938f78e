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
from .base import Attribution, Explainer


def select_layer(diff, native, layer=None):
    if layer:
        return layer
    names = diff.spatial_layers(native.detach())
    if not names:
        raise UnsupportedOperation("Grad-CAM needs a layer with a spatial (4-D) output; the model has none")
    return names[-1]


def gradcam_map(diff, x, target, layer=None, upsample_to=None, relu=True):
    """-> (cam (N,h,w) at layer resolution or ``upsample_to``, layer name)."""
    import torch
    import torch.nn.functional as F
    native = diff.native(x).detach().requires_grad_(True)  # graphs with frozen weights need this
    name = select_layer(diff, native, layer)
    with diff.capture([name]) as rec:
        out = diff.forward_native(native)
        if name not in rec:
            raise UnsupportedOperation(f"layer {name!r} did not run in the forward pass")
        act = rec[name]
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


class GradCAM(Explainer):
    """Parameters: ``layer`` (default: last spatial layer), ``relu`` (default True)."""

    name = "gradcam"
    needs_gradients = True

    def __init__(self, layer: str | None = None, relu: bool = True, **kw):
        super().__init__(layer=layer, relu=relu, **kw)

    def _attribute(self, model, x, target, probs) -> Attribution:
        import torch
        diff = model.differentiable()
        with torch.enable_grad():
            cam, name = gradcam_map(diff, canonical_tensor(x), target, self._params.get("layer"),
                                    upsample_to=tuple(model.input_size), relu=self._params.get("relu", True))
        count_calls(model, 2)
        pretty = diff.module_name(name) if hasattr(diff, "module_name") else name
        return Attribution(cam[0].cpu().numpy().astype(np.float32),
                           meta={"layer": pretty, "layer_output": name, "gradient_source": diff.origin})
