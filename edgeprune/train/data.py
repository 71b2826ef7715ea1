"""Classification data streamed through torch.utils.data: images decoded (and augmented) on access, in worker
processes, so no dataset-sized array is ever built.

Every random draw is a function of (seed, epoch, sample index) and the shuffle order a function of (seed, epoch),
so a run's batches do not depend on the number of workers, on which rank reads a sample, or on a resume.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from edgeprune.errors import EdgepruneError
from edgeprune.types import Preprocessing
from edgeprune.verify.data import ImageFolder, load_image


def default_workers(gpu: bool) -> int:
    """Decoding processes beside the training one. Feeding a GPU: up to 4, a core left to the training process.
    Training on the CPU, torch's threads already use every core and a worker competes with them (each parallel
    region waits for the thread it displaced): on 2 cores, resnet20 trained at 0.78x the in-memory path's speed
    with 1 worker and 0.81x with none (benchmarks/train_memory.py). So there, workers only from 8 cores."""
    cores = os.cpu_count() or 1
    if gpu:
        return max(0, min(4, cores - 1))
    return min(4, cores // 4) if cores >= 8 else 0


class ImageSamples(Dataset):
    """An ImageFolder's images, each decoded and preprocessed as the model declares when it is read."""

    def __init__(self, folder: ImageFolder, preprocessing: Preprocessing):
        self.samples = folder.samples
        self.preprocessing = preprocessing

    @classmethod
    def scan(cls, root: str | Path, class_names: Sequence[str] | None, preprocessing: Preprocessing) -> ImageSamples:
        return cls(ImageFolder.scan(root, class_names), preprocessing)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return torch.from_numpy(load_image(path, self.preprocessing)), label


class TensorSamples(Dataset):
    """Preprocessed images already in memory (N, C, H, W) and their labels: for tests and small callers."""

    def __init__(self, images, labels):
        self.images = torch.as_tensor(np.asarray(images, dtype=np.float32))
        self.labels = torch.as_tensor(np.asarray(labels)).long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


@dataclass(frozen=True)
class Augmentation:
    """CIFAR's augmentation: a random crop after padding with black (zero in pixel space), and a horizontal flip."""

    padding: int
    flip: bool
    black: tuple[float, ...]  # the normalised value of a black pixel, per channel: -mean / std

    @classmethod
    def of(cls, padding: int, flip: bool, mean: Sequence[float], std: Sequence[float]) -> Augmentation:
        return cls(padding, flip, tuple(-m / s for m, s in zip(mean, std)))


def augment(x: torch.Tensor, augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """One (C, H, W) image through `augmentation`, its draws taken from `generator`."""
    c, h, w = x.shape
    p = augmentation.padding
    if p:
        dy, dx = torch.randint(0, 2 * p + 1, (2,), generator=generator).tolist()
        padded = torch.tensor(augmentation.black, dtype=x.dtype).view(c, 1, 1).expand(c, h + 2 * p, w + 2 * p).clone()
        padded[:, p : p + h, p : p + w] = x
        x = padded[:, dy : dy + h, dx : dx + w]
    if augmentation.flip and float(torch.rand((), generator=generator)) < 0.5:
        x = x.flip(2)
    return x


def mixed_seed(*numbers: int) -> int:
    """A 63-bit seed drawn from the numbers (NumPy's SeedSequence, so nearby inputs give unrelated streams)."""
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1, dtype=np.uint64)[0]) >> 1


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(mixed_seed(seed, epoch)))


@dataclass(frozen=True)
class Unreadable:
    """A sample that could not be read, passed along as a value: a worker's exception would reach the training
    loop as a traceback inside a message, and under DDP the other ranks must hear of it too."""

    message: str


class Drawn(Dataset):
    """`base` read by (epoch, index) keys, augmented with draws seeded from (seed, epoch, index)."""

    def __init__(self, base: Dataset, augmentation: Augmentation | None, seed: int):
        self.base, self.augmentation, self.seed = base, augmentation, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        try:
            x, label = self.base[index]
        except EdgepruneError as exc:
            return Unreadable(exc.message)
        if self.augmentation is not None:
            x = augment(x, self.augmentation, torch.Generator().manual_seed(mixed_seed(self.seed, epoch, index)))
        return x, label


class GlobalBatches(Sampler):
    """Batches of `batch_size` over the (seed, epoch) order, this rank's share of each: the ranks' shares of a
    batch together are the batch one process would read. With several ranks a last batch smaller than the number
    of ranks is dropped (a rank without samples could not take part in the step)."""

    def __init__(self, n: int, batch_size: int, seed: int, *, shuffle: bool, rank: int = 0, world: int = 1,
                 keep_small_tail: bool = False):  # fmt: skip
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world, self.keep_small_tail = rank, world, keep_small_tail
        self.epoch = 0

    def batches(self) -> list[torch.Tensor]:
        order = epoch_order(self.n, self.seed, self.epoch) if self.shuffle else torch.arange(self.n)
        batches = list(order.split(self.batch_size))
        if batches and len(batches[-1]) < self.world and not self.keep_small_tail:
            batches.pop()
        return batches

    def __iter__(self):
        for batch in self.batches():
            yield [(self.epoch, int(i)) for i in batch.tensor_split(self.world)[self.rank]]

    def __len__(self) -> int:
        return len(self.batches())


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor] | Unreadable | None:
    """Stack the samples; the first Unreadable instead when there is one; None for an empty share."""
    for item in items:
        if isinstance(item, Unreadable):
            return item
    if not items:
        return None
    return torch.stack([x for x, _ in items]), torch.tensor([label for _, label in items], dtype=torch.long)


def loader(data: Dataset, sampler: GlobalBatches, augmentation: Augmentation | None, *, seed: int = 0,
           num_workers: int | None = None, pin_memory: bool = False) -> DataLoader:  # fmt: skip
    """`pin_memory` is set when feeding a GPU, which also sizes the default number of workers."""
    workers = default_workers(pin_memory) if num_workers is None else num_workers
    return DataLoader(Drawn(data, augmentation, seed), batch_sampler=sampler, num_workers=workers,
                      collate_fn=collate, pin_memory=pin_memory)  # fmt: skip
