"""Small CNNs for the shipped demo models (no torchvision).

* ``SmallResNet``: stem conv(stride 2, 16 ch)+BN+ReLU, two residual stages (24/48 channels,
  stride 2 each; a block = two 3x3 conv+BN, 1x1 conv+BN downsample on the skip), global
  average pool, linear -> logits. ~44 K parameters, 64x64 input (any size works).
  The 3x3 convolutions pad by reflection (``padding_mode="reflect"``, the default since the
  FullGrad pointing-game study in docs/gradients.md): with zero padding, a stride-2 conv on an
  even-sized map pads the top/left edge only, the trained net grew border detectors there,
  and FullGrad's deepest bias terms pointed at them. ``padding_mode="zeros"`` is kept.
* ``PlainNet``: the same without BatchNorm and without skips (conv+bias, ReLU), for
  tests where BN folding must not matter.

Both take normalised NCHW float input (the declared preprocessing: RGB, 0-1, then
``(x - MEAN) / STD``) and return logits. ``export_spec(model)`` gives the network as a
flat list of ops with BatchNorm folded into conv weights/biases, which the ONNX and TF
exporters in ``xaudit.data.export`` turn into graphs.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


class ConvBN(nn.Module):
    def __init__(self, cin, cout, k, stride, padding_mode="zeros"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False,
                              padding_mode=padding_mode)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, padding_mode="zeros"):
        super().__init__()
        self.c1 = ConvBN(cin, cout, 3, stride, padding_mode)
        self.c2 = ConvBN(cout, cout, 3, 1, padding_mode)
        self.downsample = ConvBN(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        out = F.relu(self.c1(x))
        out = self.c2(out)
        sc = x if self.downsample is None else self.downsample(x)
        return F.relu(out + sc)


class SmallResNet(nn.Module):
    def __init__(self, num_classes: int, stem: int = 16, widths=(24, 48), blocks=(1, 1),
                 padding_mode: str = "reflect"):
        super().__init__()
        self.stem = ConvBN(3, stem, 3, 2, padding_mode)
        layers, cin = [], stem
        for w, nb in zip(widths, blocks):
            for j in range(nb):
                layers.append(BasicBlock(cin, w, stride=2 if j == 0 else 1, padding_mode=padding_mode))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.layers(x)
        x = x.mean(dim=(2, 3))
        return self.fc(x)


class PlainNet(nn.Module):
    """BN-free, skip-free conv net: conv(bias)+ReLU x4 (strides 2,1,2,2), GAP, linear."""

    def __init__(self, num_classes: int, widths=(16, 32, 48, 64)):
        super().__init__()
        strides = (2, 1, 2, 2)
        convs, cin = [], 3
        for w, s in zip(widths, strides):
            convs.append(nn.Conv2d(cin, w, 3, stride=s, padding=1))
            cin = w
        self.convs = nn.ModuleList(convs)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        for c in self.convs:
            x = F.relu(c(x))
        return self.fc(x.mean(dim=(2, 3)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- folding
def fold_conv_bn(cb) -> tuple[np.ndarray, np.ndarray, int, int]:
    """ConvBN or Conv2d -> (W (O,I,k,k), b (O,), stride, pad) float64 with BN folded."""
    if isinstance(cb, ConvBN):
        conv, bn = cb.conv, cb.bn
        W = conv.weight.detach().double().numpy()
        b = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(W.shape[0])
        g = bn.weight.detach().double().numpy()
        beta = bn.bias.detach().double().numpy()
        rm = bn.running_mean.detach().double().numpy()
        rv = bn.running_var.detach().double().numpy()
        s = g / np.sqrt(rv + bn.eps)
        W = W * s[:, None, None, None]
        b = (b - rm) * s + beta
    else:
        conv = cb
        W = conv.weight.detach().double().numpy()
        b = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(W.shape[0])
    return W, b, int(conv.stride[0]), int(conv.padding[0])


def export_spec(model: nn.Module) -> list[dict]:
    """Network as ops over named tensors; input ``x`` (normalised NCHW), output ``logits``.

    ops: conv {name, W, b, stride, pad, inp, out}, relu {inp, out}, add {a, b, out},
    gap {inp, out} (global average pool -> (N, C)), fc {name, W (O,I), b, inp, out}."""
    model = model.eval()
    ops: list[dict] = []

    def conv(name, m, inp, out):
        W, b, s, p = fold_conv_bn(m)
        mode = (m.conv if isinstance(m, ConvBN) else m).padding_mode
        ops.append({"op": "conv", "name": name, "W": W, "b": b, "stride": s, "pad": p,
                    "pad_mode": "reflect" if (mode == "reflect" and p) else "zeros", "inp": inp, "out": out})

    if isinstance(model, SmallResNet):
        conv("stem", model.stem, "x", "stem")
        ops.append({"op": "relu", "inp": "stem", "out": "stem_relu"})
        cur = "stem_relu"
        for i, blk in enumerate(model.layers):
            n = f"block{i}"
            conv(f"{n}_conv1", blk.c1, cur, f"{n}_c1")
            ops.append({"op": "relu", "inp": f"{n}_c1", "out": f"{n}_c1_relu"})
            conv(f"{n}_conv2", blk.c2, f"{n}_c1_relu", f"{n}_c2")
            sc = cur
            if blk.downsample is not None:
                conv(f"{n}_down", blk.downsample, cur, f"{n}_down")
                sc = f"{n}_down"
            ops.append({"op": "add", "a": f"{n}_c2", "b": sc, "out": f"{n}_add"})
            ops.append({"op": "relu", "inp": f"{n}_add", "out": f"{n}_out"})
            cur = f"{n}_out"
    elif isinstance(model, PlainNet):
        cur = "x"
        for i, c in enumerate(model.convs):
            conv(f"conv{i}", c, cur, f"conv{i}")
            ops.append({"op": "relu", "inp": f"conv{i}", "out": f"conv{i}_relu"})
            cur = f"conv{i}_relu"
    else:
        raise TypeError(f"export_spec supports SmallResNet and PlainNet, not {type(model).__name__}")
    ops.append({"op": "gap", "inp": cur, "out": "pooled"})
    ops.append({"op": "fc", "name": "fc", "W": model.fc.weight.detach().double().numpy(),
                "b": model.fc.bias.detach().double().numpy(), "inp": "pooled", "out": "logits"})
    return ops


def run_spec(ops: list[dict], x: np.ndarray) -> np.ndarray:
    """Reference numpy/torch execution of an export spec (float64) -> logits."""
    t = {"x": torch.as_tensor(np.asarray(x, np.float64))}
    for o in ops:
        if o["op"] == "conv":
            inp, pad = t[o["inp"]], o["pad"]
            if o.get("pad_mode") == "reflect":
                inp, pad = F.pad(inp, [pad] * 4, mode="reflect"), 0
            t[o["out"]] = F.conv2d(inp, torch.as_tensor(o["W"]), torch.as_tensor(o["b"]),
                                   stride=o["stride"], padding=pad)
        elif o["op"] == "relu":
            t[o["out"]] = F.relu(t[o["inp"]])
        elif o["op"] == "add":
            t[o["out"]] = t[o["a"]] + t[o["b"]]
        elif o["op"] == "gap":
            t[o["out"]] = t[o["inp"]].mean(dim=(2, 3))
        elif o["op"] == "fc":
            t[o["out"]] = F.linear(t[o["inp"]], torch.as_tensor(o["W"]), torch.as_tensor(o["b"]))
    return t["logits"].numpy()
