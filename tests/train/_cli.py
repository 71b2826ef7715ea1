"""Running `edgeprune train` as users do (a subprocess, alone or under torchrun) on a few CIFAR JPEGs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from tests.conftest import asset


def cifar_subset(root: Path, per_class: int) -> Path:
    """An ImageFolder of symlinks to the first `per_class` CIFAR test JPEGs of each class."""
    source = asset("datasets/cifar10_test_jpg/test")
    for folder in sorted(source.iterdir()):
        (root / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir())[:per_class]:
            (root / folder.name / path.name).symlink_to(path)
    return root


def train_args(data: Path, out: Path, epochs: int) -> list[str]:
    weights = asset("weights/cifar10_resnet/resnet20-12fca82f.th")
    return ["train", "--model", "cifar:resnet20", "--weights", str(weights), "--data", str(data), "--epochs",
            str(epochs), "--batch-size", "32", "--device", "cpu", "--workers", "0", "--out", str(out), "--json"]  # fmt: skip


def environment() -> dict[str, str]:
    # one compute thread per process: two ranks on two cores, and the same arithmetic in every run compared
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def edgeprune(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeprune.cli", *args], capture_output=True, text=True,
                          env=environment(), timeout=300, **kwargs)  # fmt: skip


def weights(out: Path) -> dict:
    return load_file(str(out / "model.safetensors"))
