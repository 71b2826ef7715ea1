"""Channel importance criteria as torch-pruning Importance objects: a higher score keeps the channel.

A channel of a dependency group can be produced by several coupled filters (residual adds) and read by several
layers (branches, concatenations); each criterion says which of those it looks at, as its paper does for one layer:

- `l1`     Li et al. 2016, "Pruning Filters for Efficient ConvNets": the L1 norm of the filters that produce the
           channel (coupled filters summed). No data.
- `bn`     Liu et al. 2017, "Network Slimming": |γ| of the batch norms on the channel (mean over coupled ones).
           No data. Groups without a batch norm get no score, so they are not pruned under `bn`.
- `taylor` Molchanov et al. 2017, "Pruning CNNs for Resource Efficient Inference": |Σ z · ∂C/∂z| over the data,
           the first-order change of the loss C when the feature map z read by the next layers is removed.
           Computed as |Σ w · ∂C/∂w| over each reader's weights on that input channel, which equals it exactly
           for convolutions and linear layers; readers summed, then L2-normalised per group as in the paper.
           Needs data and a loss.
- `apoz`   Hu et al. 2016, "Network Trimming": 1 − APoZ, the Average Percentage of Zeros of the activation the
           next layers read (hooked at their input, so after any pooling in between), over the data. After
           ReLU a zero is exactly 0; for activations with a negative regime (leaky ReLU, SiLU, Mish, hardswish)
           a "zero" is a value ≤ 0, the counterpart of ReLU's zero. Readers averaged. Needs data.
- `thinet` Luo et al. 2017, "ThiNet": the greedy order in which removing channels least changes the next layers'
           output on sampled positions of the data (prune/reconstruct.py). Readers' objectives added. Needs data.

Scores are normalised per group (mean, or L2 for taylor). That keeps each layer's ranking as the paper has it
and makes scores of different layers comparable for global ranking.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeprune.errors import ConfigError, UnknownName
from edgeprune.prune import tp_adapter as tpa
from edgeprune.prune.criterion_names import CRITERION_NAMES, SEEDED_CRITERIA
from edgeprune.prune.reconstruct import ThinetImportance

Batch = tuple[torch.Tensor, Any]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


class LayerScoreImportance(tpa.GroupMagnitudeImportance):
    """Scores a group from per-layer scores of some of its layers; subclasses say which layers and how."""

    def __init__(self, reduction: str, normalizer: str | Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(p=1, group_reduction=reduction, normalizer=normalizer)

    def layer_score(self, layer: nn.Module, handler: Callable, idxs: list[int]) -> torch.Tensor | None:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        scores, roots = [], []
        for i, (dep, idxs) in enumerate(group):
            score = self.layer_score(dep.target.module, dep.handler, idxs)
            if score is not None:
                scores.append(score)
                roots.append(group[i].root_idxs)
        if not scores:
            return None
        return tpa.normalized(self, self._reduce_to_root(scores, roots, width=len(group[0].root_idxs)))

    def _reduce_to_root(self, scores: list[torch.Tensor], roots: list[list[int]], width: int) -> torch.Tensor:
        """Sum (or average) the layers' scores onto the root's channels. torch-pruning's `_reduce` sizes the result
        like the first score, which is wrong when that layer reads a root channel several times (SPPF's cv2 reads
        cv1's output and three poolings of it, so its scores are 4x the root's width)."""
        reduced = torch.zeros(width, dtype=torch.float32)
        used = 0
        for score, root_idxs in zip(scores, roots):
            if any(r is None for r in root_idxs):
                continue
            reduced.scatter_add_(0, torch.tensor(root_idxs, dtype=torch.long), score.to(torch.float32).cpu())
            used += 1
        return reduced / used if self.group_reduction == "mean" and used else reduced


class FilterL1Importance(LayerScoreImportance):
    """Li et al. 2016: sum of |w| of each filter producing the channel."""

    def __init__(self):
        super().__init__(reduction="sum", normalizer="mean")

    def layer_score(self, layer, handler, idxs):
        if handler not in tpa.OUT_CHANNEL_HANDLERS:
            return None
        weight = layer.weight.detach()
        if getattr(layer, "transposed", False):
            weight = weight.transpose(0, 1)
        return weight[idxs].abs().flatten(1).sum(1)


def _per_input_channel(layer: nn.Module, values: torch.Tensor) -> torch.Tensor:
    """Sum a weight-shaped tensor over everything but the layer's input channel."""
    if isinstance(layer, nn.Linear):
        return values.sum(0)
    if layer.transposed:  # (in, out / groups, k…)
        return values.flatten(1).sum(1)
    groups = layer.groups
    per_group = values.flatten(2).sum(2)  # (out, in / groups)
    return per_group.view(groups, -1, per_group.shape[1]).sum(1).flatten()  # (groups · in / groups) = in


class TaylorImportance(LayerScoreImportance):
    """Molchanov et al. 2017 from the gradients `collect` accumulated (see the module docstring)."""

    def __init__(self):
        super().__init__(reduction="sum", normalizer=lambda scores: scores / scores.norm().clamp_min(1e-30))

    def collect(self, model: nn.Module, data: Iterable[Batch], loss_fn: LossFn) -> None:
        """Accumulate ∂loss/∂w over the batches (eval mode: batch-norm statistics stay as they are)."""
        model.eval()
        model.zero_grad(set_to_none=True)
        n = 0
        with torch.enable_grad(), _on_the_data_device(model) as follow:
            for batch in data:
                loss = loss_fn(model, follow(_checked(batch)))
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
                    raise ConfigError(
                        "loss_fn returned something that is not a differentiable scalar tensor",
                        expected="loss_fn(model, batch) -> 0-d tensor computed from model(batch[0])",
                    )
                loss.backward()
                n += 1
        _check_batches(n)

    def layer_score(self, layer, handler, idxs):
        if handler not in tpa.IN_CHANNEL_HANDLERS or layer.weight.grad is None:
            return None
        change = _per_input_channel(layer, layer.weight.detach() * layer.weight.grad)
        return change[idxs].abs()


class ApozImportance(LayerScoreImportance):
    """Hu et al. 2016 from the activation statistics `collect` gathered (see the module docstring)."""

    def __init__(self):
        super().__init__(reduction="mean", normalizer="mean")
        self.apoz: dict[nn.Module, torch.Tensor] = {}

    @torch.no_grad()
    def collect(self, model: nn.Module, data: Iterable[Batch]) -> None:
        """Count, per input channel of every convolution and linear layer, the inputs ≤ 0."""
        zeros: dict[nn.Module, torch.Tensor] = {}
        counts: dict[nn.Module, int] = {}

        def count(layer, inputs):
            x = inputs[0].detach()
            dims = [d for d in range(x.dim()) if d != (x.dim() - 1 if isinstance(layer, nn.Linear) else 1)]
            zeros[layer] = zeros.get(layer, 0) + (x <= 0).sum(dims, dtype=torch.float64)
            counts[layer] = counts.get(layer, 0) + x.numel() // x.shape[-1 if isinstance(layer, nn.Linear) else 1]

        model.eval()
        layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
        hooks = [layer.register_forward_pre_hook(count) for layer in layers]
        n = 0
        try:
            with _on_the_data_device(model) as follow:
                for batch in data:
                    model(follow(_checked(batch))[0])
                    n += 1
        finally:
            for hook in hooks:
                hook.remove()
        _check_batches(n)
        self.apoz = {layer: (zeros[layer] / counts[layer]).float().cpu() for layer in zeros}

    def layer_score(self, layer, handler, idxs):
        if handler not in tpa.IN_CHANNEL_HANDLERS or layer not in self.apoz:
            return None
        return 1.0 - self.apoz[layer][idxs]


class RandomGroupImportance(tpa.Importance):
    """Random scores, scaled by a random factor per group, so that global ranking prunes each group by a different
    share. Not a criterion from a paper: it makes randomly pruned variants (validating latency predictions on
    varied widths) and a random baseline. Deterministic for a seed."""

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, group) -> torch.Tensor:
        width = len(group[0].root_idxs)
        factor = 0.1 + 0.9 * torch.rand((), generator=self.generator)
        return torch.rand(width, generator=self.generator) * factor


@dataclass(frozen=True)
class Criterion:
    name: str
    paper: str
    needs_data: bool
    needs_loss: bool
    make: Callable[..., tpa.Importance]

    @property
    def seeded(self) -> bool:
        """make(seed): one of criterion_names.SEEDED_CRITERIA."""
        return self.name in SEEDED_CRITERIA


CRITERIA: dict[str, Criterion] = {}


def _register(criterion: Criterion) -> None:
    if criterion.name in CRITERIA:
        raise ValueError(f"criterion {criterion.name!r} is registered twice")
    if criterion.name not in CRITERION_NAMES:
        raise ValueError(f"criterion {criterion.name!r} is not listed in prune/criterion_names.py")
    CRITERIA[criterion.name] = criterion


_register(Criterion("l1", "Li et al. 2016 (filter L1 norm)", False, False, FilterL1Importance))
_register(Criterion("bn", "Liu et al. 2017 (network slimming, |BN γ|)", False, False,
                    lambda: tpa.BNScaleImportance(group_reduction="mean", normalizer="mean")))  # fmt: skip
_register(Criterion("taylor", "Molchanov et al. 2017 (first-order Taylor)", True, True, TaylorImportance))
_register(Criterion("apoz", "Hu et al. 2016 (average percentage of zeros)", True, False, ApozImportance))
_register(Criterion("thinet", "Luo et al. 2017 (ThiNet: next layer's output reconstructed)", True, False,
                    ThinetImportance))  # fmt: skip
_register(Criterion("random", "random scores, a random scale per group (variants and baselines)", False, False,
                    RandomGroupImportance))  # fmt: skip


def criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise UnknownName("pruning criterion", name, CRITERIA)
    return CRITERIA[name]


def needs_data(name: str) -> bool:
    return criterion(name).needs_data


def make_importance(name: str, model: nn.Module, data: Iterable[Batch] | None = None,
                    loss_fn: LossFn | None = None, seed: int = 0) -> tpa.Importance:  # fmt: skip
    """The criterion's Importance, with its data statistics gathered on `model` when it needs them."""
    spec = criterion(name)
    if spec.needs_data and data is None:
        raise ConfigError(
            f"pruning criterion {name!r} ranks channels from data, and no data was given",
            fix="pass data (batches of (inputs, targets)), or use a data-free criterion: l1 or bn",
        )
    if spec.needs_loss and loss_fn is None:
        raise ConfigError(
            f"pruning criterion {name!r} needs the gradients of a loss, and no loss function was given",
            expected="loss_fn(model, batch) -> scalar loss",
            fix="pass loss_fn, or use l1, bn or apoz",
        )
    importance = spec.make(seed) if spec.seeded else spec.make()
    if isinstance(importance, TaylorImportance):
        importance.collect(model, data, loss_fn)
    elif isinstance(importance, ApozImportance):
        importance.collect(model, data)
    elif isinstance(importance, ThinetImportance):
        importance.collect(model, map(_checked, data), seed)
    return importance


def classification_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Cross-entropy of the model's logits against the batch's integer labels (taylor's default for classifiers)."""
    inputs, labels = batch[0], batch[1]
    return nn.functional.cross_entropy(model(inputs), labels)


@contextlib.contextmanager
def _on_the_data_device(model: nn.Module) -> Iterator[Callable[[Batch], Batch]]:
    """Score where the data is (a GPU when the batches are there): the model follows the batches' device for the
    block and goes back afterwards, with the gradients taylor gathered."""
    home = next((p.device for p in model.parameters()), torch.device("cpu"))

    def follow(batch: Batch) -> Batch:
        where = batch[0].device
        if next((p.device for p in model.parameters()), where) != where:
            model.to(where)
        return batch

    try:
        yield follow
    finally:
        model.to(home)


def _checked(batch: Any) -> Batch:
    if not (isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor)):
        raise ConfigError(
            f"a data batch is a {type(batch).__name__}",
            expected="(inputs, targets) pairs with a tensor of inputs first",
        )
    return batch


def _check_batches(n: int) -> None:
    if n == 0:
        raise ConfigError("the data for the pruning criterion yielded no batches", fix="pass at least one batch")
