"""Shared test fixtures. Real assets come from ../shared/assets; tests that need them skip when it is absent."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"
CIFAR_TEST = ASSETS / "datasets" / "cifar10_test_jpg" / "test"
CIFAR_WEIGHTS = ASSETS / "weights" / "cifar10_resnet"


def pytest_configure(config):
    """Under pytest-xdist (CI: -n 2 on 2 cores) torch runs one thread per worker, here and in every process a test
    starts (OMP_NUM_THREADS, unless set): two workers of torch's default two threads each oversubscribe the cores,
    and its threads wait on each other. 45 plan/prune/train tests on -n 2 took 394-407 s that way and 89 s with one
    thread (this machine, shared, load 7-9)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def asset(relative: str) -> Path:
    """A path under ../shared/assets, or a skip naming what is missing."""
    path = ASSETS / relative
    if not path.exists():
        pytest.skip(f"needs ../shared/assets/{relative} (real test assets are not beside this checkout)")
    return path


def tiny_vit():
    """A two-layer torchvision VisionTransformer with 3 heads of width 16 on 32² inputs, classifier drawn at random."""
    import torch
    from torchvision.models import VisionTransformer

    from edgeprune.models.base import LoadedModel, image_input

    torch.manual_seed(0)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=3, hidden_dim=48, mlp_dim=96,
                            num_classes=10)  # fmt: skip
    torch.nn.init.normal_(net.heads.head.weight, std=0.02)  # torchvision zero-inits it: the output would be constant
    return LoadedModel(module=net.eval(), spec="python:tiny_vit", task="classification", inputs=image_input(32, 32),
                       preprocessing=None)  # fmt: skip


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 900, env: dict[str, str] | None = None) -> CliResult:
    """Run `edgeprune ARGS` as a user would, in a fresh interpreter (`env` is added to this process's environment)."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgeprune.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def resnet20_weights() -> Path:
    return asset("weights/cifar10_resnet/resnet20-12fca82f.th")


@pytest.fixture(scope="session")
def cifar_test_dir() -> Path:
    return asset("datasets/cifar10_test_jpg/test")


@pytest.fixture()
def small_cifar(tmp_path, cifar_test_dir) -> Path:
    """10 images of each CIFAR-10 class (8 fine-tune, 2 held out)."""
    return link_small_cifar(cifar_test_dir, tmp_path / "cifar100")


def link_small_cifar(cifar_test_dir: Path, root: Path) -> Path:
    """`root`: 10 images of each CIFAR-10 class, linked."""
    for folder in sorted(cifar_test_dir.iterdir()):
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:10]:
            (root / folder.name / image.name).symlink_to(image)
    return root


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A small conv net exported by our own backend (dynamic batch), for agent tests."""
    from edgeprune.backends.onnxruntime import OnnxRuntimeBackend
    from edgeprune.models import LoadOptions, load_model

    model = load_model("cifar:resnet20", LoadOptions())
    out = tmp_path_factory.mktemp("tiny")
    return OnnxRuntimeBackend().export(model, out).path


@pytest.fixture(scope="session")
def coco16_yaml(tmp_path_factory) -> Path:
    """16 COCO128 images with their labels, copied so that ultralytics' label cache is written beside the copy."""
    source = asset("datasets/coco128")
    names = yaml.safe_load(asset("datasets/yaml/coco128.yaml").read_text())["names"]
    root = tmp_path_factory.mktemp("coco16")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for image in sorted((source / "images" / "train2017").glob("*.jpg"))[:16]:
        shutil.copy(image, root / "images")
        label = source / "labels" / "train2017" / f"{image.stem}.txt"
        if label.is_file():
            shutil.copy(label, root / "labels")
    spec = {"train": "images", "val": "images", "names": names}
    (root / "relative.yaml").write_text(yaml.safe_dump({"path": ".", **spec}))  # beside the yaml, as edgeprune reads it
    data = root / "coco16.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), **spec}))  # ultralytics reads a relative path differently
    return data


@contextlib.contextmanager
def small_tmpfs(mount: Path, mib: int, free_kib: int | None = None) -> Iterator[Path]:
    """A real tmpfs of `mib` MiB mounted at `mount` (root only: skips otherwise, CI runs as root), filled up to its
    last `free_kib` KiB when given; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a full or read-only disk is a real tmpfs, and mounting one needs root (CI runs as root)")
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        if free_kib is not None:
            stats = os.statvfs(mount)
            filler = stats.f_bavail * stats.f_frsize - free_kib * 1024
            with open(mount / "filler", "wb") as f:
                chunk = b"\0" * (1 << 20)
                while filler > 0:
                    filler -= f.write(chunk[: min(len(chunk), filler)])
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def remount_read_only(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
