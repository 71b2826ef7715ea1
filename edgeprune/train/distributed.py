"""Training on several processes with plain torch.distributed, launched by `torchrun` (WORLD_SIZE, RANK and
LOCAL_RANK in the environment): gloo on the CPU, nccl on CUDA. Each rank reads its share of every global batch,
batch norm statistics are taken over the global batch, and gradients are averaged by DDP, so the run follows the
one-process run up to floating-point summation order."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from edgeprune.errors import DataError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes files and shows progress."""
        return self.rank == 0


def launched_ranks() -> Ranks:
    """This process's place in torchrun's launch (one rank when not launched by it)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    env = os.environ
    return Ranks(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join torchrun's process group for the block (left again at its end); nothing to do for one process or when
    a caller already joined it."""
    ranks = launched_ranks()
    if ranks.world == 1 or dist.is_initialized():
        yield ranks
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield launched_ranks()
    finally:
        dist.destroy_process_group()


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """Under torchrun each rank takes the GPU of its local rank unless the user named one."""
    if device.type == "cuda" and ranks.world > 1 and device.index in (None, 0):
        return torch.device("cuda", ranks.local_rank)
    return device


def same_on_every_rank(value, ranks: Ranks):
    """Rank 0's `value` (a picklable object) on every rank."""
    if ranks.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def stop_if_any_failed(failure: str | None, ranks: Ranks, device: torch.device) -> None:
    """Raise on every rank when one could not read its samples, naming the first rank that failed: without this
    the others would wait for its gradients until the process group's timeout."""
    if ranks.world == 1:
        if failure is not None:
            raise DataError(failure)
        return
    flag = torch.tensor([0 if failure is None else 1], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if int(flag):
        messages: list[str | None] = [None] * ranks.world
        dist.all_gather_object(messages, failure)
        first = next(r for r, message in enumerate(messages) if message is not None)
        raise DataError(f"rank {first} of {ranks.world} failed: {messages[first]}")


def summed(values: list[float], ranks: Ranks) -> list[float]:
    """Each value added up over the ranks (float64)."""
    if ranks.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


class _SummedOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: each rank's input feeds every rank's output, so the gradient is the sum
    of every rank's output gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class _GlobalBatchNorm:
    """Mixed into a BatchNorm class: in training, mean and variance over every rank's share of the batch, the
    gradient flowing through the other ranks' statistics as in one process. Each rank's mean and variance come
    from torch.var_mean and are combined exactly (Chan et al.'s parallel variance), which keeps float32 rounding at
    one process's level: summing squares over 32k values per channel was off by ~1e-4 relative (measured on
    resnet20's running variances). torch's SyncBatchNorm does the same on GPUs only; it refuses CPU tensors,
    which gloo runs on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1, *([1] * (x.dim() - 2))]
        local_var, local_mean = torch.var_mean(x, dims, correction=0)
        count = x.numel() // x.shape[1]
        n = float(_SummedOverRanks.apply(torch.tensor([float(count)], device=x.device)))
        mean = _SummedOverRanks.apply(local_mean * (count / n))
        var = _SummedOverRanks.apply((local_var + (local_mean - mean) ** 2) * (count / n))
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                self.running_var.mul_(1 - factor).add_(factor * var.detach() * n / max(n - 1, 1.0))
        return y


_GLOBAL_CLASSES: dict[type, type] = {}


@contextlib.contextmanager
def global_batch_norm(model: nn.Module, ranks: Ranks) -> Iterator[None]:
    """Batch norm over the global batch for the block (with several ranks). Each layer's class is swapped for a
    subclass and back, so its parameters, buffers and state-dict keys stay those of the model."""
    if ranks.world == 1:
        yield
        return
    swapped = []
    for module in model.modules():
        cls = type(module)
        if cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            if cls not in _GLOBAL_CLASSES:
                _GLOBAL_CLASSES[cls] = type(f"Global{cls.__name__}", (_GlobalBatchNorm, cls), {})
            module.__class__ = _GLOBAL_CLASSES[cls]
            swapped.append((module, cls))
    try:
        yield
    finally:
        for module, cls in swapped:
            module.__class__ = cls


def data_parallel(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """`model` wrapped in DDP with several ranks (its buffers are kept equal by the global batch norm, so they are
    not broadcast at every step); the model itself with one."""
    if ranks.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
