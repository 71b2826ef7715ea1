"""Classification fine-tuning: SGD with momentum and a cosine schedule, optional distillation from the unpruned
teacher, optional L1 sparsity on BatchNorm γ (network slimming, Liu et al. 2017). Deterministic for a seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.progress import NoProgress, Progress
from edgeprune.types import Record


@dataclass(frozen=True)
class FinetuneRecipe(Record):
    epochs: int
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_padding: int = 4  # random crop after zero-padding the image (CIFAR's standard augmentation); 0 = off
    flip: bool = True
    distill_alpha: float = 0.0  # weight of the teacher's soft targets; 0 = plain cross-entropy
    distill_temperature: float = 4.0
    sparsity: float = 0.0  # λ of the L1 penalty on BatchNorm γ
    seed: int = 0

    def check(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"fine-tuning recipe {self} is not usable", expected="epochs ≥ 0, batch size ≥ 1, lr > 0")
        if not 0 <= self.distill_alpha <= 1 or self.sparsity < 0:
            raise ConfigError("distill_alpha must be in [0, 1] and sparsity ≥ 0")


def finetune_classifier(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    recipe: FinetuneRecipe,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    teacher: nn.Module | None = None,
    progress: Progress | None = None,
    before_epoch: Callable[[int], bool] | None = None,
) -> list[float]:
    """Train `model` in place on preprocessed NCHW `images`; returns the mean loss of each epoch.

    `mean`/`std` are the normalisation the images went through, so crop padding is black like the raw image's.
    `before_epoch(epoch)` runs before each epoch and returns True when it changed the model's parameters (gradual
    pruning): training then goes on with the new ones, the schedule unchanged, momentum kept where a tensor survived.
    """
    recipe.check()
    if recipe.distill_alpha > 0 and teacher is None:
        raise ConfigError("distillation asks for a teacher model", fix="pass the unpruned model, or distill_alpha=0")
    progress = progress or NoProgress()
    generator = torch.Generator().manual_seed(recipe.seed)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels).long()
    steps_per_epoch = (len(x_all) + recipe.batch_size - 1) // recipe.batch_size
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, recipe.epochs * steps_per_epoch))
    black = (-torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1)
    if teacher is not None:
        teacher.eval()
    losses = []
    with progress.task("fine-tune", recipe.epochs * steps_per_epoch) as update:
        for epoch in range(recipe.epochs):
            if before_epoch is not None and before_epoch(epoch):
                _rebind(optimizer, model)
            model.train()
            order = torch.randperm(len(x_all), generator=generator)
            total = 0.0
            for step in range(steps_per_epoch):
                idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
                x = _augment(x_all[idx], recipe, black, generator)
                loss = _loss(model, teacher, x, y_all[idx], recipe)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.sparsity > 0:
                    _add_bn_l1_subgradient(model, recipe.sparsity)
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(idx)
                update(epoch * steps_per_epoch + step + 1)
            losses.append(total / len(x_all))
    model.eval()
    return losses


def _rebind(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Point the optimizer at the model's current parameters (pruning replaces them), dropping stale state."""
    params = list(model.parameters())
    alive = set(params)
    optimizer.param_groups[0]["params"] = params
    for param in [p for p in optimizer.state if p not in alive]:
        del optimizer.state[param]


def _loss(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor, recipe: FinetuneRecipe):
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    if recipe.distill_alpha > 0:
        with torch.no_grad():
            soft = F.softmax(teacher(x) / recipe.distill_temperature, dim=1)
        # Hinton et al. 2015: KL on temperature-softened outputs, scaled by T² to keep gradients comparable
        kd = F.kl_div(F.log_softmax(logits / recipe.distill_temperature, dim=1), soft, reduction="batchmean")
        loss = (1 - recipe.distill_alpha) * loss + recipe.distill_alpha * recipe.distill_temperature**2 * kd
    return loss


def _add_bn_l1_subgradient(model: nn.Module, weight: float) -> None:
    """Network slimming: the subgradient of λ·Σ|γ| added to every BatchNorm γ's gradient."""
    for module in model.modules():
        if (
            isinstance(module, nn.modules.batchnorm._BatchNorm)
            and module.weight is not None
            and module.weight.grad is not None
        ):
            module.weight.grad.add_(weight * torch.sign(module.weight.detach()))


def _augment(x: torch.Tensor, recipe: FinetuneRecipe, black: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    if recipe.crop_padding:
        p = recipe.crop_padding
        padded = black.expand(n, -1, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p : p + h, p : p + w] = x
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if recipe.flip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    return x


def evaluate_top1(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            logits = model(torch.from_numpy(images[start : start + batch_size]))
            correct += int((logits.argmax(1).numpy() == labels[start : start + batch_size]).sum())
    return correct / len(images)
