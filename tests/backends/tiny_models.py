"""Tiny classifiers for the backend tests (importable as `python:tests.backends.tiny_models:<name>` from the repo
root), and a labelled ImageFolder they classify perfectly in PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

CLASSES = ("a", "b", "c", "d")
edgeprune_input = {"shape": (1, 3, 16, 16), "class_names": list(CLASSES)}


class TinyNet(nn.Module):
    """conv-bn-relu ×2, global average pool, linear: every layer kind the quantizers handle."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, len(CLASSES))

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class OutlierNet(TinyNet):
    """TinyNet whose conv2 input holds one channel ~10^4 times larger than the others, and carries no information
    (a constant): per-tensor 8-bit activations give the informative channels a step of ~40 while they span ~1, so
    an int8 conv2 sees zeros where the classes differ. Only conv2 is hurt; int8 genuinely fails on it."""

    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.conv1.weight[0].zero_()
            self.bn1.bias[0] = 1e4
            self.conv2.weight[:, 0] *= 1e-4  # keeps the float model's output scale sane


def _seeded(cls):
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = cls().eval()
        with torch.no_grad():  # non-trivial BatchNorm statistics, so folding BN is exercised
            for bn in (model.bn1, model.bn2):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
            model.fc.weight.mul_(20.0)  # logits that differ between images, so the labels are not all one class
        if cls is OutlierNet:
            with torch.no_grad():
                model.bn1.running_mean[0], model.bn1.running_var[0] = 0.0, 1.0
        return model
    finally:
        torch.random.set_rng_state(generator_state)


def tiny() -> nn.Module:
    return _seeded(TinyNet)


def outlier() -> nn.Module:
    return _seeded(OutlierNet)


def labelled_folder(root: Path, module: nn.Module, n: int = 48, seed: int = 0) -> Path:
    """`n` random PNGs (lossless, so the model sees exactly these pixels), each filed under the class `module`
    predicts for it: PyTorch top-1 is 1.0 by construction and any runtime difference shows as a drop."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 256, size=(n, 1, 1, 3))  # a colour per image, so images differ after pooling
    pixels = np.clip(base + rng.integers(-40, 41, size=(n, 16, 16, 3)), 0, 255).astype(np.uint8)
    with torch.inference_mode():
        x = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
        predicted = module(x).argmax(1).numpy()
    for i, (image, label) in enumerate(zip(pixels, predicted)):
        Image.fromarray(image).save(root / CLASSES[label] / f"{i:03d}.png")
    return root
