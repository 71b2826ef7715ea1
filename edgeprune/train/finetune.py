"""Classification fine-tuning: SGD with momentum and a cosine schedule, optional distillation from the unpruned
teacher, optional L1 sparsity on BatchNorm γ (network slimming, Liu et al. 2017). Data is streamed
(train/data.py); it runs on the CPU or a GPU (AMP there), on one process or on every rank of a `torchrun` launch
(train/distributed.py), validates after each epoch when asked (keeping the best epoch, stopping at a target), and
resumes from per-epoch checkpoints. Deterministic for a seed on the CPU."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgeprune.errors import ConfigError
from edgeprune.progress import NoProgress, Progress
from edgeprune.train import distributed as ddp
from edgeprune.train.checkpoint import load_checkpoint, restore_rng_states, save_checkpoint
from edgeprune.train.data import Augmentation, GlobalBatches, Unreadable, loader
from edgeprune.train.device import autocast, grad_scaler, resolve_device
from edgeprune.types import Record

BUILD_DISTILL_ALPHA = 0.5  # the teacher's share of a build's loss with --distill


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

    @classmethod
    def for_build(cls, options) -> FinetuneRecipe:
        """The recipe a build fine-tunes each pruned model with (BuildOptions: --finetune-epochs, --lr, --distill)."""
        return cls(epochs=options.finetune_epochs, lr=options.lr, seed=options.seed,
                   distill_alpha=BUILD_DISTILL_ALPHA if options.distill else 0.0)  # fmt: skip

    def check(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"fine-tuning recipe {self} is not usable", expected="epochs ≥ 0, batch size ≥ 1, lr > 0")
        if not 0 <= self.distill_alpha <= 1 or self.sparsity < 0:
            raise ConfigError("distill_alpha must be in [0, 1] and sparsity ≥ 0")


@dataclass(frozen=True)
class FinetuneResult(Record):
    losses: tuple[float, ...]  # mean training loss per epoch run
    validation: tuple[float, ...]  # validation metric after each epoch run (empty without validation)
    epochs_run: int
    best_epoch: int | None  # 1-based epoch whose weights were kept (None without validation)
    stopped_early: bool


def finetune_classifier(
    model: nn.Module,
    data: Dataset,
    recipe: FinetuneRecipe,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    teacher: nn.Module | None = None,
    progress: Progress | None = None,
    before_epoch: Callable[[int], bool] | None = None,
    device: str | torch.device = "cpu",
    validation: Dataset | None = None,
    stop_at: float | None = None,
    checkpoints: Path | None = None,
    num_workers: int | None = None,
    snapshots: dict[int, Path] | None = None,
) -> FinetuneResult:
    """Train `model` in place on `data` ((C, H, W) preprocessed image, label) samples, e.g. train.data.ImageSamples.

    `mean`/`std` are the normalisation the images went through, so crop padding is black like the raw image's.
    `validation`: top-1 on it after every epoch; the best epoch's weights are restored at the end, and training
    stops as soon as top-1 ≥ `stop_at`. `checkpoints`: a folder where each epoch ends with a checkpoint, and from
    which a rerun continues after the last finished epoch (same weights as an uninterrupted run on the CPU).
    `snapshots` {epochs: path}: the weights after that many epochs (0: before training) saved as safetensors, the
    early checkpoint lottery-ticket rewinding goes back to. `before_epoch(epoch)` runs before each epoch and returns True when it changed the model's parameters (gradual
    pruning): training then goes on with the new ones, the schedule unchanged, momentum kept where a tensor survived.
    Under `torchrun` each rank trains on its share of every batch (DDP); only rank 0 shows progress and writes.
    The model comes back on the CPU, in eval mode.
    """
    recipe.check()
    if recipe.distill_alpha > 0 and teacher is None:
        raise ConfigError("distillation asks for a teacher model", fix="pass the unpruned model, or distill_alpha=0")
    if before_epoch is not None and checkpoints is not None:
        raise ConfigError("a run that prunes between epochs cannot resume from a checkpoint", fix="drop one of them")
    if len(data) == 0:
        raise ConfigError("there are no images to fine-tune on")
    device = resolve_device(device)
    with ddp.process_group(device) as ranks:
        device = ddp.rank_device(device, ranks)
        run = _Run(model, data, recipe, teacher, ranks, device, num_workers, Augmentation.of(
            recipe.crop_padding, recipe.flip, mean, std))  # fmt: skip
        try:
            return run.fit(progress if ranks.main and progress else NoProgress(), before_epoch, validation,
                           stop_at, checkpoints, snapshots or {})  # fmt: skip
        finally:
            model.to("cpu").eval()
            if teacher is not None:
                teacher.to("cpu")


class _Run:
    def __init__(self, model, data, recipe, teacher, ranks, device, num_workers, augmentation):
        self.model, self.data, self.recipe, self.teacher = model.to(device), data, recipe, teacher
        self.ranks, self.device, self.num_workers = ranks, device, num_workers
        self.sampler = GlobalBatches(len(data), recipe.batch_size, recipe.seed, shuffle=True, rank=ranks.rank,
                                     world=ranks.world)  # fmt: skip
        self.loader = loader(data, self.sampler, augmentation, seed=recipe.seed, num_workers=num_workers,
                             pin_memory=device.type == "cuda")  # fmt: skip
        self.steps_per_epoch = len(self.sampler)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                         weight_decay=recipe.weight_decay)  # fmt: skip
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, recipe.epochs * self.steps_per_epoch)
        )
        self.scaler = grad_scaler(device)
        if teacher is not None:
            teacher.to(device).eval()

    def fit(self, progress, before_epoch, validation, stop_at, checkpoints, snapshots) -> FinetuneResult:
        recipe, model = self.recipe, self.model
        history = {"losses": [], "validation": [], "best_epoch": None, "best_state": None, "stopped": False}
        run_id = {"recipe": recipe.to_dict(), "samples": len(self.data),
                  "validation": None if validation is None else len(validation), "stop_at": stop_at}  # fmt: skip
        saved = load_checkpoint(checkpoints, run_id) if checkpoints is not None else None
        if saved is not None:
            self._restore(saved)
            history = saved["history"]
            if self.ranks.main:
                progress.note(f"resuming fine-tuning after epoch {len(history['losses'])} of {recipe.epochs}")
        start = len(history["losses"])
        if start == 0 and 0 in snapshots:
            self._snapshot(snapshots[0])
        total = recipe.epochs * self.steps_per_epoch
        described = f"fine-tune (epochs × batches: {recipe.epochs} × {self.steps_per_epoch})"
        with progress.task(described, total) as update, ddp.global_batch_norm(model, self.ranks):
            update(start * self.steps_per_epoch)
            trained = ddp.data_parallel(model, self.ranks, self.device)
            for epoch in range(start, recipe.epochs):
                if history["stopped"]:
                    break
                if before_epoch is not None and before_epoch(epoch):
                    model.to(self.device)
                    _rebind(self.optimizer, model)
                    trained = ddp.data_parallel(model, self.ranks, self.device)
                history["losses"].append(self._epoch(trained, epoch, update))
                if validation is not None:
                    top1 = evaluate_top1(model, validation, device=self.device, num_workers=self.num_workers)
                    history["validation"].append(top1)
                    if history["best_epoch"] is None or top1 > max(history["validation"][:-1]):
                        history["best_epoch"] = epoch + 1
                        history["best_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                    history["stopped"] = stop_at is not None and top1 >= stop_at and epoch + 1 < recipe.epochs
                if epoch + 1 in snapshots:  # before the checkpoint: a resumed run never skips a snapshot
                    self._snapshot(snapshots[epoch + 1])
                if checkpoints is not None and self.ranks.main:
                    save_checkpoint(checkpoints, {"run": run_id, "history": history, **self._state()})
        if history["best_state"] is not None:
            model.load_state_dict(history["best_state"])
        return FinetuneResult(tuple(history["losses"]), tuple(history["validation"]), len(history["losses"]),
                              history["best_epoch"], history["stopped"])  # fmt: skip

    def _snapshot(self, path: Path) -> None:
        if self.ranks.main:
            from edgeprune.models.saved import save_state_dict

            save_state_dict(self.model, path)

    def _epoch(self, trained: nn.Module, epoch: int, update) -> float:
        """One pass over the data; the mean loss per sample over every rank's samples."""
        recipe = self.recipe
        trained.train()
        self.sampler.epoch = epoch
        total, seen = 0.0, 0
        for step, batch in enumerate(self.loader):
            ddp.stop_if_any_failed(batch.message if isinstance(batch, Unreadable) else None, self.ranks, self.device)
            x, y = (t.to(self.device, non_blocking=True) for t in batch)
            global_size = self._global_size(step)
            with autocast(self.device):
                loss = _loss(trained, self.teacher, x, y, recipe)
            # the rank's mean loss weighted by its share of the global batch, times the ranks DDP averages over:
            # the gradient is the global batch's mean whatever the shares (1.0 in one process)
            share = len(y) * self.ranks.world / global_size
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss * share if share != 1.0 else loss).backward()
            self.scaler.unscale_(self.optimizer)
            if recipe.sparsity > 0:
                _add_bn_l1_subgradient(self.model, recipe.sparsity)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.schedule.step()
            total += float(loss.detach()) * len(y)
            seen += len(y)
            update(epoch * self.steps_per_epoch + step + 1)
        total, seen = ddp.summed([total, float(seen)], self.ranks)
        return total / seen

    def _global_size(self, step: int) -> int:
        return min(self.recipe.batch_size, len(self.data) - step * self.recipe.batch_size)

    def _state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict()}  # fmt: skip

    def _restore(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        if saved["scaler"]:
            self.scaler.load_state_dict(saved["scaler"])
        restore_rng_states(saved["rng"])


def _rebind(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Point the optimizer at the model's current parameters (pruning replaces them), dropping stale state."""
    params = list(model.parameters())
    alive = set(params)
    optimizer.param_groups[0]["params"] = params
    for param in [p for p in optimizer.state if p not in alive]:
        del optimizer.state[param]


def _loss(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor, recipe: FinetuneRecipe):
    logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    if recipe.distill_alpha > 0:
        with torch.no_grad():
            soft = F.softmax(teacher(x).float() / recipe.distill_temperature, dim=1)
        # Hinton et al. 2015: KL on temperature-softened outputs, scaled by T² to keep gradients comparable
        kd = F.kl_div(F.log_softmax(logits.float() / recipe.distill_temperature, dim=1), soft, reduction="batchmean")
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


def evaluate_top1(model: nn.Module, data: Dataset | DataLoader, batch_size: int = 500, *,
                  device: str | torch.device = "cpu", num_workers: int | None = None) -> float:  # fmt: skip
    """Top-1 accuracy of `model` on (image, label) samples: the mean of `correct_per_sample`, over every rank's
    share under `torchrun`."""
    ranks = ddp.launched_ranks() if torch.distributed.is_initialized() else ddp.Ranks()
    correct = correct_per_sample(model, data, batch_size, device=device, num_workers=num_workers)
    hits, count = ddp.summed([float(correct.sum()), float(len(correct))], ranks)
    return hits / count if count else 0.0


def correct_per_sample(model: nn.Module, data: Dataset | DataLoader, batch_size: int = 500, *,
                       device: str | torch.device = "cpu", num_workers: int | None = None) -> torch.Tensor:  # fmt: skip
    """Whether `model`'s top-1 class is each sample's label (a bool tensor on the CPU, in the samples' order),
    streamed; a DataLoader of (images, labels) batches is read as it is. Under `torchrun` each rank scores its
    share only. The model stays on the device it is on when that is `device`'s."""
    device = resolve_device(device)
    ranks = ddp.launched_ranks() if torch.distributed.is_initialized() else ddp.Ranks()
    if isinstance(data, DataLoader):
        batches = data
    else:
        sampler = GlobalBatches(len(data), batch_size, 0, shuffle=False, rank=ranks.rank, world=ranks.world,
                                keep_small_tail=True)  # fmt: skip
        batches = loader(data, sampler, None, num_workers=num_workers, pin_memory=device.type == "cuda")
    moved_from = next(model.parameters()).device if any(True for _ in model.parameters()) else device
    model.to(device).eval()
    correct = []
    try:
        with torch.inference_mode():
            for batch in batches:
                ddp.stop_if_any_failed(batch.message if isinstance(batch, Unreadable) else None, ranks, device)
                if batch is None:  # this rank's share of a last batch smaller than the number of ranks
                    continue
                x, y = batch[0].to(device), torch.as_tensor(batch[1]).to(device)
                with autocast(device):
                    correct.append((model(x).argmax(1) == y).cpu())
    finally:
        model.to(moved_from)
    return torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)
