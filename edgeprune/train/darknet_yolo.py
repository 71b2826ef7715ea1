"""Fine-tuning Darknet detectors (e.g. after pruning) as `darknet detector train` does: the [yolo] layers' loss
(train/yolo_loss.py), SGD with the cfg's [net] momentum, decay, learning rate, burn-in and steps policy, batch
norm and [dropout] in training mode, and the cfg's augmentation (train/darknet_data.py). Deterministic for a seed.

The raw outputs come from forward pre-hooks on the [yolo] blocks, so the model's inference graph is untouched.
Everything a cfg asks for that this cannot reproduce is refused with a ConfigError naming the option.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import ConfigError, DataError
from edgeprune.models.base import LoadedModel
from edgeprune.models.darknet import layers as L
from edgeprune.models.darknet.build import DarknetModel
from edgeprune.models.darknet.cfg import Section
from edgeprune.progress import NoProgress, Progress
from edgeprune.train.darknet_data import Augmentation, training_sample
from edgeprune.train.yolo_loss import YoloHead, YoloLoss, yolo_heads
from edgeprune.types import Record
from edgeprune.verify.yolo_data import YoloDataset

DARKNET_BN_MOMENTUM = 0.01  # Darknet's rolling mean/variance: .99 · rolling + .01 · batch statistic
POLICIES = ("constant", "step", "steps")
# Options of any layer that change how Darknet updates it (src/parser.c); none is reproduced.
LAYER_TRAINING_OPTIONS = ("stopbackward", "dont_update", "burnin_update", "learning_rate", "onlyforward")
# [net] options that must stay off (their Darknet default), and those that matter only with augmentation.
NET_OFF = ("adam", "track", "ema_alpha", "adversarial_lr")
NET_AUGMENT_OFF = ("mosaic", "mixup", "cutmix", "blur", "gaussian_noise")


@dataclass(frozen=True)
class DarknetRecipe(Record):
    """How to fine-tune; None takes the cfg's [net] value (or Darknet's default where the cfg has none)."""

    epochs: int
    batch_size: int | None = None  # images per SGD step ([net] batch)
    subdivisions: int | None = None  # the step's images go through forward/backward in this many parts
    lr: float | None = None  # [net] learning_rate
    momentum: float | None = None  # [net] momentum
    decay: float | None = None  # [net] decay: weight decay of conv/connected weights only, as Darknet
    burn_in: int | None = None  # [net] burn_in: the first steps run at lr·(step/burn_in)^power
    augment: bool = True  # the cfg's augmentation; False: each image exactly as preprocessed for inference
    flip: bool | None = None  # [net] flip
    jitter: float | None = None  # the last [yolo] layer's jitter
    bn_momentum: float | None = None  # batch-norm running statistics update; None: Darknet's 0.01
    # Not Darknet: afterwards, re-estimate the batch-norm running statistics as plain averages over this many
    # training images (inference preprocessing; 0 = off). Darknet's 0.01 running average needs thousands of steps
    # to follow weights that moved, so after a short fine-tune the inference statistics would be stale.
    recalibrate_bn: int = 256
    split: str = "train"  # the data yaml's split to train on
    limit: int | None = None  # that many images, spread over the split (None: all)
    seed: int = 0

    def check(self) -> None:
        def positive(value) -> bool:
            return value is None or value > 0

        if self.epochs < 0 or not all(map(positive, (self.batch_size, self.subdivisions, self.lr, self.limit))):
            raise ConfigError(f"Darknet fine-tuning recipe {self} is not usable",
                              expected="epochs ≥ 0; batch size, subdivisions, lr and limit > 0")  # fmt: skip
        if (self.momentum is not None and not 0 <= self.momentum < 1) or (self.decay is not None and self.decay < 0):
            raise ConfigError("momentum must be in [0, 1) and decay ≥ 0")
        if (self.burn_in is not None and self.burn_in < 0) or (self.jitter is not None and not 0 <= self.jitter < 0.5):
            raise ConfigError("burn_in must be ≥ 0 and jitter in [0, 0.5)")
        if (self.bn_momentum is not None and not 0 <= self.bn_momentum <= 1) or self.recalibrate_bn < 0:
            raise ConfigError("bn_momentum must be in [0, 1] and recalibrate_bn ≥ 0")


@dataclass(frozen=True)
class _Settings:
    """The recipe with every None resolved from the cfg, in one place."""

    batch: int
    subdivisions: int
    lr: float
    momentum: float
    decay: float
    burn_in: int
    power: float
    policy: str
    steps: tuple[int, ...]
    scales: tuple[float, ...]
    step: int
    scale: float
    bn_momentum: float
    augmentation: Augmentation | None


def finetune_darknet(
    loaded: LoadedModel, data_yaml, recipe: DarknetRecipe, progress: Progress | None = None
) -> list[float]:
    """Train the Darknet detector in place on a YOLO data yaml; returns each epoch's mean loss per image."""
    recipe.check()
    model = _darknet_module(loaded)
    heads = yolo_heads(model)
    settings = _resolve(recipe, model, heads)
    dataset = _dataset(loaded, data_yaml, recipe.split, recipe.limit, heads)
    loss_fn = YoloLoss(heads)
    optimizer = torch.optim.SGD(_parameter_groups(model, settings.decay), lr=settings.lr, momentum=settings.momentum)
    rng = np.random.default_rng(recipe.seed)
    images = dataset.images
    steps_per_epoch = math.ceil(len(images) / settings.batch)
    progress = progress or NoProgress()
    losses, done = [], 0
    with _training(model, settings.bn_momentum, recipe.seed), yolo_inputs(model) as raw, \
            progress.task("fine-tune", recipe.epochs * steps_per_epoch) as update:  # fmt: skip
        for _ in range(recipe.epochs):
            order = rng.permutation(len(images))
            total = 0.0
            for start in range(0, len(images), settings.batch):
                picked = order[start : start + settings.batch]
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(settings, done + 1)
                optimizer.zero_grad(set_to_none=True)
                for part in np.array_split(picked, min(settings.subdivisions, len(picked))):
                    x, truths = _batch(dataset, part, loaded, heads, settings.augmentation, rng)
                    raw.clear()
                    model(x)
                    loss, _ = loss_fn(raw, truths)
                    (loss / len(picked)).backward()
                    total += float(loss.detach())
                optimizer.step()
                done += 1
                update(done)
            losses.append(total / len(images))
    if recipe.recalibrate_bn and recipe.epochs:
        _recalibrate_bn(model, dataset.subset(recipe.recalibrate_bn), loaded, heads,
                        math.ceil(settings.batch / settings.subdivisions))  # fmt: skip
    loaded._fingerprint = None  # the weights changed
    return losses


def darknet_loss(loaded: LoadedModel, data_yaml, *, split: str = "train", limit: int | None = None,
                 batch_size: int = 8) -> dict[str, float]:  # fmt: skip
    """The mean loss per image (total, box, obj, cls) in inference mode, on images preprocessed for inference
    (`limit` of them, spread over the split)."""
    model = _darknet_module(loaded)
    heads = yolo_heads(model)
    dataset = _dataset(loaded, data_yaml, split, limit, heads)
    loss_fn = YoloLoss(heads)
    sums = {"total": 0.0, "box": 0.0, "obj": 0.0, "cls": 0.0}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), yolo_inputs(model) as raw:
            for start in range(0, len(dataset.images), batch_size):
                part = np.arange(start, min(start + batch_size, len(dataset.images)))
                x, truths = _batch(dataset, part, loaded, heads, None, np.random.default_rng(0))
                raw.clear()
                model(x)
                loss, parts = loss_fn(raw, truths)
                sums["total"] += float(loss)
                for name, value in parts.items():
                    sums[name] += value
    finally:
        model.train(was_training)
    return {name: value / len(dataset.images) for name, value in sums.items()}


@contextlib.contextmanager
def yolo_inputs(model: DarknetModel) -> Iterator[list[torch.Tensor]]:
    """A list that each forward pass fills with the raw inputs of the [yolo] layers, in cfg order."""
    captured: list[torch.Tensor] = []
    hooks = [block.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
             for block in model.yolo_layers]  # fmt: skip
    try:
        yield captured
    finally:
        for hook in hooks:
            hook.remove()


def learning_rate(settings: _Settings, step: int) -> float:
    """Darknet's get_current_rate for update number `step` (1 for the first)."""
    if step < settings.burn_in:
        return settings.lr * (step / settings.burn_in) ** settings.power
    if settings.policy == "step":
        return settings.lr * settings.scale ** (step // settings.step)
    rate = settings.lr
    if settings.policy == "steps":
        for boundary, factor in zip(settings.steps, settings.scales):
            if boundary > step:
                break
            rate *= factor
    return rate


def _darknet_module(loaded: LoadedModel) -> DarknetModel:
    if not isinstance(loaded.module, DarknetModel) or loaded.task != "detection":
        raise ConfigError(
            f"{loaded.spec} is not a Darknet detector",
            expected="a darknet: model with [yolo] layers",
            fix="fine-tune other detectors with their own framework",
        )
    return loaded.module


def _dataset(loaded: LoadedModel, data_yaml, split: str, limit: int | None, heads: list[YoloHead]) -> YoloDataset:
    if not str(data_yaml).endswith((".yaml", ".yml")):
        raise DataError(f"{data_yaml} is not a data yaml", expected="a YOLO data yaml (path, train, val, names)")
    dataset = YoloDataset.from_yaml(data_yaml, split=split).subset(limit).checked(heads[0].classes)
    preprocessing = loaded.preprocessing
    if preprocessing is None or preprocessing.layout != "NCHW" or preprocessing.channel_order not in ("RGB", "L"):
        raise ConfigError(f"{loaded.spec} does not read images as Darknet does", expected="RGB or grey NCHW input")
    return dataset


def _batch(dataset: YoloDataset, picked, loaded: LoadedModel, heads: list[YoloHead], augmentation, rng):
    images, truths = [], []
    for k in picked:
        path = dataset.images[int(k)]
        image, truth = training_sample(path, dataset.labels(path), loaded.preprocessing, heads[-1].max_boxes,
                                       augmentation, rng)  # fmt: skip
        images.append(image)
        truths.append(torch.from_numpy(truth))
    return torch.from_numpy(np.stack(images)), truths


def _parameter_groups(model: nn.Module, decay: float) -> list[dict]:
    """Darknet decays convolution and connected weights only, not biases or batch-norm scales."""
    decayed = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if id(p) in decayed], "weight_decay": decay},
            {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]  # fmt: skip


@contextlib.contextmanager
def _training(model: DarknetModel, bn_momentum: float, seed: int) -> Iterator[None]:
    """Training mode as Darknet's: batch statistics with its running-average rate, [dropout] layers dropping
    (their blocks are the identity at inference; hooks drop here, from a torch RNG seeded for this run only)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = bn_momentum
    hooks = [block.register_forward_hook(lambda m, args, out: F.dropout(out, m.probability, training=m.training))
             for block in model.blocks if isinstance(block, L.Dropout) and block.probability > 0]  # fmt: skip
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        for hook in hooks:
            hook.remove()
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()


def _recalibrate_bn(model: DarknetModel, dataset: YoloDataset, loaded: LoadedModel, heads: list[YoloHead],
                    batch_size: int) -> None:  # fmt: skip
    """Batch-norm running statistics := the average of the batch statistics over `dataset` (weights untouched)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()  # [dropout] blocks stay the identity: no dropping hooks here
    try:
        with torch.no_grad():
            for start in range(0, len(dataset.images), batch_size):
                part = np.arange(start, min(start + batch_size, len(dataset.images)))
                model(_batch(dataset, part, loaded, heads, None, None)[0])
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()


def _resolve(recipe: DarknetRecipe, model: DarknetModel, heads: list[YoloHead]) -> _Settings:
    """The recipe over the cfg's [net] (AlexeyAB's defaults where absent), after refusing what cannot be honoured."""
    net = model.sections[0]
    _refuse(model, recipe.augment)
    batch = recipe.batch_size or net.integer("batch", 1)
    policy = net.text("policy", "constant")
    if policy not in POLICIES:
        raise ConfigError(f"{net.where('policy')}: [net] policy={policy} is not supported for fine-tuning",
                          expected=" | ".join(POLICIES), fix="set policy=steps (or constant) in [net]")  # fmt: skip
    steps = tuple(net.integers("steps")) if "steps" in net.options else ()
    scales = tuple(net.numbers("scales")) if "scales" in net.options else ()
    if policy == "steps" and len(steps) != len(scales):
        raise ConfigError(f"{net.where('steps')}: [net] has {len(steps)} steps but {len(scales)} scales")
    augmentation = None
    if recipe.augment:
        last = model.sections[heads[-1].index + 1]
        jitter = recipe.jitter if recipe.jitter is not None else last.number("jitter", 0.2)
        if not 0 <= jitter < 0.5:
            raise ConfigError(f"{last.where('jitter')}: [yolo] jitter={jitter} must be in [0, 0.5)")
        flip = recipe.flip if recipe.flip is not None else bool(net.integer("flip", 1))
        augmentation = Augmentation(jitter, flip, net.number("hue", 0.0), net.number("saturation", 1.0),
                                    net.number("exposure", 1.0))  # fmt: skip
    return _Settings(
        batch=batch,
        subdivisions=min(batch, recipe.subdivisions or net.integer("subdivisions", 1)),
        lr=recipe.lr if recipe.lr is not None else net.number("learning_rate", 0.001),
        momentum=recipe.momentum if recipe.momentum is not None else net.number("momentum", 0.9),
        decay=recipe.decay if recipe.decay is not None else net.number("decay", 0.0001),
        burn_in=recipe.burn_in if recipe.burn_in is not None else net.integer("burn_in", 0),
        power=net.number("power", 4.0),
        policy=policy,
        steps=steps,
        scales=scales,
        step=max(1, net.integer("step", 1)),
        scale=net.number("scale", 1.0),
        bn_momentum=recipe.bn_momentum if recipe.bn_momentum is not None else DARKNET_BN_MOMENTUM,
        augmentation=augmentation,
    )


def _refuse(model: DarknetModel, augment: bool) -> None:
    net = model.sections[0]
    for key in NET_OFF + (NET_AUGMENT_OFF if augment else ()):
        if key in net.options and net.number(key) != 0:
            raise _option_error(net, key, augment and key in NET_AUGMENT_OFF)
    for block, section in zip(model.blocks, model.sections[1:]):
        for key in LAYER_TRAINING_OPTIONS:
            if key in section.options:
                raise _option_error(section, key, False, layer=block.index)
        if augment and section.kind == "yolo":
            if section.integer("random", 0):
                raise _option_error(
                    section,
                    "random",
                    True,
                    layer=block.index,
                    why="multi-scale training; edgeprune trains at the cfg's input size",
                )
            if section.number("resize", 1.0) != 1:
                raise _option_error(section, "resize", True, layer=block.index)


def _option_error(section: Section, key: str, augmentation: bool, layer: int | None = None,
                  why: str | None = None) -> ConfigError:  # fmt: skip
    where = f" (layer {layer})" if layer is not None else ""
    return ConfigError(
        f"{section.where(key)}: [{section.name}]{where} {key}={section.options[key]} is not supported by edgeprune's "
        "Darknet fine-tuning" + (f" ({why})" if why else ""),
        fix=f"set {key}= to its default in the cfg" + (", or fine-tune with augment=False" if augmentation else ""),
    )
