"""Peak memory and speed of `edgeprune train` on 10 000 vs 40 000 images (issue 17): the streamed pipeline must
not grow with the dataset (RSS(40k) ≤ 1.2 × RSS(10k)) and must train at least 0.8 × as fast on the CPU as the
in-memory path it replaced.

    python benchmarks/train_memory.py [--out benchmarks/results/train_memory.json]

The data: the 10 000 CIFAR-10 test JPEGs of shared/assets, and the same images listed four times (a symlink tree
with four names per image). Each `train` run (cifar:resnet20, 1 epoch, batch 128, --device cpu, default workers: none on 2 cores)
is a subprocess whose memory is sampled every 50 ms: RSS of the process plus its DataLoader workers, the peak
kept. Its images/s there is end to end (Python start, model load and folder scan included); the training
throughput is compared in one process, below.

Throughput comparison, in one process and on the same 10 000 images: the streamed `finetune_classifier` for one
epoch, vs the in-memory path of commit 4c7bb1c (its finetune.py, read with `git show` and imported as it was, fed
the whole preprocessed array as its `load_all` built it). The in-memory figure counts training only; the time to
build its array is reported separately.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"
DATA = ASSETS / "datasets" / "cifar10_test_jpg" / "test"
WEIGHTS = ASSETS / "weights" / "cifar10_resnet" / "resnet20-12fca82f.th"
IN_MEMORY_COMMIT = "4c7bb1c"  # the last commit whose fine-tuning took one in-memory array


def listed(times: int, root: Path) -> Path:
    """An ImageFolder with every CIFAR test image under `times` names."""
    for folder in sorted(DATA.iterdir()):
        (root / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir()):
            for copy in range(times):
                (root / folder.name / f"{copy}_{path.name}").symlink_to(path)
    return root


def peak_rss_of(command: list[str]) -> tuple[int, float, subprocess.CompletedProcess]:
    """Run `command`; the peak of (its RSS + its children's), in bytes, and the wall time."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                total = parent.memory_info().rss + sum(
                    child.memory_info().rss for child in parent.children(recursive=True)
                )
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    return peak, wall, subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def train_run(data: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "edgeprune.cli", "train", "--model", "cifar:resnet20", "--weights",
               str(WEIGHTS), "--data", str(data), "--epochs", "1", "--device", "cpu", "--out", str(out), "--json"]  # fmt: skip
    peak, wall, proc = peak_rss_of(command)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    images = sum(1 for _ in data.rglob("*.jpg"))
    return {"images": images, "peak_rss_mb": round(peak / 2**20, 1), "wall_s": round(wall, 1),
            "images_per_s_end_to_end": round(images / wall, 1)}  # fmt: skip


def in_memory_finetune():
    """finetune.py of IN_MEMORY_COMMIT, imported as a module of its own."""
    source = subprocess.run(["git", "show", f"{IN_MEMORY_COMMIT}:edgeprune/train/finetune.py"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "finetune_in_memory.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("finetune_in_memory", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def throughput() -> dict:
    from edgeprune.models import LoadOptions, load_model
    from edgeprune.train.data import ImageSamples
    from edgeprune.train.finetune import FinetuneRecipe, finetune_classifier
    from edgeprune.verify.data import ImageFolder, load_image

    def model():
        return load_model("cifar:resnet20", LoadOptions(weights=str(WEIGHTS)))

    recipe = FinetuneRecipe(epochs=1)
    loaded = model()
    folder = ImageFolder.scan(DATA, loaded.class_names)
    pre = loaded.preprocessing
    started = time.perf_counter()
    finetune_classifier(loaded.module, ImageSamples(folder, pre), recipe, mean=pre.mean, std=pre.std)
    streamed = time.perf_counter() - started

    old = in_memory_finetune()
    loaded = model()
    started = time.perf_counter()
    images = np.stack([load_image(path, pre) for path, _ in folder.samples])  # what load_all did
    labels = np.array([label for _, label in folder.samples], dtype=np.int64)
    loading = time.perf_counter() - started
    started = time.perf_counter()
    old.finetune_classifier(loaded.module, images, labels, old.FinetuneRecipe(epochs=1), mean=pre.mean, std=pre.std)
    in_memory = time.perf_counter() - started
    n = len(folder.samples)
    return {"images": n, "streamed_images_per_s": round(n / streamed, 1),
            "in_memory_images_per_s": round(n / in_memory, 1), "in_memory_array_build_s": round(loading, 1),
            "ratio": round(in_memory / streamed, 3), "torch_threads": torch.get_num_threads()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_memory.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {f"{times * 10}k": train_run(listed(times, tmp / f"data{times}"), tmp / f"out{times}")
                for times in (1, 4)}  # fmt: skip
    result = {
        "runs": runs,
        "rss_ratio_40k_to_10k": round(runs["40k"]["peak_rss_mb"] / runs["10k"]["peak_rss_mb"], 3),
        "throughput": throughput(),
        "cpu_count": os.cpu_count(),
    }
    result["bounds_met"] = result["rss_ratio_40k_to_10k"] <= 1.2 and result["throughput"]["ratio"] >= 0.8
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
