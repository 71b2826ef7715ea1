"""Held-out top-1 in PyTorch on an ImageFolder split (the build's, edgeprune/build/data.py: split_data), shared by
the benchmarks that compare pruning methods by accuracy (reconstruction.py, rewinding.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeprune.verify.data import ImageFolder, load_image

ASSETS = Path(__file__).resolve().parent.parent.parent / "shared" / "assets"
CIFAR_TEST = ASSETS / "datasets" / "cifar10_test_jpg" / "test"  # CIFAR-10's 10,000 test images as JPEGs


def images(model, folder: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of the folder, preprocessed for `model`, and its label."""
    samples = ImageFolder.scan(folder, model.class_names).samples
    stacked = np.stack([load_image(path, model.preprocessing) for path, _ in samples])
    return torch.from_numpy(stacked), torch.tensor([label for _, label in samples])


@torch.no_grad()
def top1(model, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    inputs, labels = data
    model.module.eval()
    correct = sum(int((model.module(inputs[k : k + 250]).argmax(1) == labels[k : k + 250]).sum())
                  for k in range(0, len(labels), 250))  # fmt: skip
    return correct / len(labels)
