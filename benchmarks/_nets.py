"""Models shared by the benchmarks: the ResNet18-sized net at 224 px (BasicBlock x
[2,2,2,2], widths 64..512, BatchNorm, random seeded weights; no torchvision) behind a
minimal in-process adapter, and the shipped sign model (TorchScript / ONNX, plus an eager
copy of the same weights for Captum, whose layer hooks need a ``nn.Module``)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from xaudit.model import Model, Preprocessing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for i, w in enumerate((64, 128, 256, 512)):
            layers.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18(seed: int = 0, classes: int = 1000) -> ResNet18:
    """ResNet18-sized net, default init from an explicit generator + non-trivial BN stats."""
    g = torch.Generator().manual_seed(seed)
    net = ResNet18(classes)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan) ** 0.5)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / m.in_features) ** 0.5)
                m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


class ModuleModel(Model):
    """Minimal in-process adapter over an eager module (logits out), with gradients."""

    format = "torch"

    def __init__(self, module, size, name="resnet18-sized", mean=IMAGENET_MEAN, std=IMAGENET_STD, classes=1000):
        self.module = module.eval()
        self._setup(source=name, labels=[str(i) for i in range(classes)], input_size=(size, size),
                    preprocessing=Preprocessing(mean=mean, std=std), output_kind="logits")
        self._d = None

    def _forward_native(self, native):
        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(native))).numpy()

    def _check_gradients(self):
        from xaudit.white_box import for_torch_module
        self._d = for_torch_module(self.module, self.preprocessing, self.input_size)
        return True, self._d.notes

    def _differentiable(self):
        return self._d


def resnet18_model(seed: int = 0) -> ModuleModel:
    return ModuleModel(resnet18(seed), 224, name="ResNet18-sized 224 px")


def shipped(name: str):
    """``xaudit.load_model`` on a shipped model file, or None when it is not there."""
    try:
        from pathlib import Path

        from xaudit.data import model_path
        from xaudit.loader import load_model
        p = model_path(name)
        return load_model(str(p)) if Path(p).exists() else None
    except Exception:  # noqa: BLE001 - the shipped models are optional for the benchmarks
        return None


def signs_eager():
    """Eager ``SmallResNet`` carrying the shipped ``signs.pt`` weights (bit-identical outputs),
    and its preprocessing (mean, std); None when the shipped model is absent."""
    try:
        from xaudit.data import model_path
        from xaudit.data.nets import MEAN, STD, SmallResNet
        ts = torch.jit.load(str(model_path("signs.pt")))
        net = SmallResNet(43)
        net.load_state_dict(ts.state_dict(), strict=True)
        return net.eval(), MEAN, STD
    except Exception:  # noqa: BLE001
        return None


def sign_image(seed: int = 0) -> np.ndarray:
    """A canonical 64 px sign image from the shipped generator (RGB [0,1] float32)."""
    from xaudit.data.generate import make_signs
    return make_signs(1, seed=seed)[0][0].astype(np.float32) / 255.0


def textured_image(size: int, seed: int = 0) -> np.ndarray:
    """Blocky colour image with noise: quickshift finds a few dozen superpixels."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.random((8, 8, 3)).repeat(size // 8, 0).repeat(size // 8, 1)
                   + rng.normal(0, 0.05, (size, size, 3)), 0, 1).astype(np.float32)
