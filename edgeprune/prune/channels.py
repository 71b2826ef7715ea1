"""Channel pruning of a LoadedModel in place with torch-pruning, returning a replayable PrunePlan."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import nn

from edgeprune.errors import ConfigError, ModelError
from edgeprune.models.base import LoadedModel
from edgeprune.prune import importance as imp
from edgeprune.prune import tp_adapter as tpa
from edgeprune.prune.groups import (
    TRACING_ERRORS,
    check_channel_splits,
    check_traceable,
    dependency_graph,
    example_inputs,
    kept_layers,
    min_channels,
    output_layers,
    untraceable,
)  # fmt: skip
from edgeprune.prune.rewrites import apply_rewrites, tied_parts
from edgeprune.types import PrunePlan

History = tuple[tuple[str, bool, tuple[int, ...]], ...]


@contextlib.contextmanager
def channel_pruner(
    loaded: LoadedModel,
    criterion: str,
    *,
    round_to: int | None = None,
    data: Iterable[imp.Batch] | None = None,
    loss_fn: imp.LossFn | None = None,
    seed: int = 0,
    **options,
) -> Iterator[_ChannelPruner]:
    """The pruner of `loaded` (its rewrites already applied) ranking by `criterion`; `options` go to torch-pruning.
    Tracing errors inside the block become a ModelError naming the model; taylor's gradients are dropped after."""
    spec = imp.criterion(criterion)
    check_traceable(loaded)
    if spec.needs_loss and loss_fn is None and loaded.task == "classification":
        loss_fn = imp.classification_loss
    module = loaded.module.eval()
    importance = imp.make_importance(criterion, module, data, loss_fn, seed)
    try:
        yield _ChannelPruner(loaded, example_inputs(loaded), importance, round_to=round_to, **options)
    except TRACING_ERRORS as exc:
        raise untraceable(loaded, exc) from exc
    finally:
        module.zero_grad(set_to_none=True)  # taylor's gradients, pruned along with the weights


def prune_channels(
    loaded: LoadedModel,
    ratio: float,
    criterion: str,
    *,
    round_to: int | None = None,
    global_ranking: bool = False,
    data: Iterable[imp.Batch] | None = None,
    loss_fn: imp.LossFn | None = None,
    seed: int = 0,
) -> PrunePlan:
    """Remove `ratio` of the prunable channels, ranked by `criterion`, from the model in place.

    With local ranking every dependency group loses `ratio` of its channels; with `global_ranking` the lowest
    scores over the whole model go. `round_to` keeps each pruned width a multiple of that hardware step. No
    layer keeps fewer than `round_to` (or 1) channels, or its original width when that is smaller. `data` are
    (inputs, targets) batches for the criteria that need them (taylor, apoz); taylor also needs `loss_fn(model,
    batch)`, which defaults to cross-entropy against the targets for classification models. `seed` seeds the
    `random` criterion.
    """
    _check_options(ratio, round_to, global_ranking)
    before = _Before(loaded)
    with channel_pruner(loaded, criterion, round_to=round_to, data=data, loss_fn=loss_fn, seed=seed,
                        pruning_ratio=ratio, global_pruning=global_ranking) as pruner:  # fmt: skip
        for group in pruner.step(interactive=True):
            group = pruner.within_minimum(group)
            if group is not None:
                group.prune()
    return before.plan(loaded, pruner, criterion, float(ratio), round_to, global_ranking)


def prune_channels_to(
    loaded: LoadedModel,
    widths: Mapping[str, int],
    criterion: str,
    *,
    round_to: int | None = None,
    data: Iterable[imp.Batch] | None = None,
    loss_fn: imp.LossFn | None = None,
    seed: int = 0,
) -> PrunePlan:
    """Prune the model in place to the widths the planner chose: `widths` maps a dependency group's root layer
    (the first layer whose output channels are the group's) to the channels it keeps, the highest-ranked by
    `criterion`; groups not named stay as they are. Names are module names after the model's exact rewrites
    (applied here first)."""
    before = _Before(loaded)
    kept = removable = 0
    with channel_pruner(loaded, criterion, round_to=round_to, data=data, loss_fn=loss_fn, seed=seed,
                        pruning_ratio=0.0) as pruner:  # fmt: skip
        graph = pruner.DG
        names = tpa.module_names(graph)
        todo = []
        for group in list(graph.get_all_groups(ignored_layers=pruner.ignored_layers,
                                               root_module_types=pruner.root_module_types)):  # fmt: skip
            dep = group[0].dep
            root, handler = dep.target.module, dep.handler
            width = graph.get_out_channels(root)
            named = [names.get(d.target.module) for d, _ in group if graph.is_out_channel_pruning_fn(d.handler)]
            key = next((name for name in named if name in widths), None)
            if key is None or width is None:
                continue
            removable += width
            if widths[key] >= width:
                kept += width
                continue
            full = graph.get_pruning_group(root, handler, list(range(width)))
            heads = attention_heads(full)
            target = min(width, math.ceil(max(widths[key], min_channels(width, round_to)) / heads) * heads)
            kept += target
            if target >= width:
                continue
            n_groups = tpa.channel_groups(pruner, full)
            size = width // n_groups
            scores = pruner.estimate_importance(full).view(n_groups, size).mean(0)
            dims = torch.argsort(scores)[: size - math.ceil(target / n_groups)].tolist()
            todo.append((root, handler, [d + g * size for g in range(n_groups) for d in dims]))
        # every score first: tied convolutions average their scores, which needs them all still unpruned
        for root, handler, idxs in todo:
            chosen = graph.get_pruning_group(root, handler, idxs)
            if not tpa.keeps_every_layer(graph, chosen):
                raise RuntimeError(f"pruning {names.get(root)} would empty a layer coupled to it")
            chosen.prune()
    return before.plan(loaded, pruner, criterion, 1 - kept / removable if removable else 0.0, round_to, True)


class _Before:
    """What a PrunePlan records of the model before pruning; applies the exact rewrites pruning needs."""

    def __init__(self, loaded: LoadedModel):
        self.fingerprint = loaded.fingerprint
        self.macs, self.params = count_macs_params(loaded)
        self.rewrites = apply_rewrites(loaded)

    def plan(self, loaded: LoadedModel, pruner, criterion: str, channel_ratio: float, round_to: int | None,
             global_ranking: bool) -> PrunePlan:  # fmt: skip
        loaded._fingerprint = None
        sync_widths(loaded.module)
        macs_after, params_after = count_macs_params(loaded)
        return PrunePlan(
            base_model=loaded.spec, base_fingerprint=self.fingerprint, criterion=criterion,
            channel_ratio=channel_ratio, round_to=round_to, global_ranking=global_ranking, rewrites=self.rewrites,
            channel_history=_history(pruner.pruning_history()), params_before=self.params, params_after=params_after,
            macs_before=self.macs, macs_after=macs_after,
        )  # fmt: skip


def replay_channels(loaded: LoadedModel, history: History) -> None:
    """Prune the channels a plan recorded, in place, on a fresh load of its base model (rewrites replayed first)."""
    graph = dependency_graph(loaded)
    try:
        graph.load_pruning_history([(name, out, list(idxs)) for name, out, idxs in history])
    except (AttributeError, *TRACING_ERRORS) as exc:
        raise ModelError(
            f"the plan's channel history does not fit {loaded.spec} ({str(exc).splitlines()[0][:160]})",
            fix="replay the plan on its base_model, after replaying its rewrites and removed blocks",
        ) from exc
    sync_widths(loaded.module)
    loaded._fingerprint = None


def sync_widths(module: nn.Module) -> None:
    """Set the widths some models keep as plain attributes and read in forward, which pruning does not update
    (torchvision's VisionTransformer reshapes its patches to `hidden_dim`)."""
    from torchvision.models import VisionTransformer

    for m in module.modules():
        if isinstance(m, VisionTransformer):
            m.hidden_dim = m.conv_proj.out_channels


def attention_heads(group) -> int:
    """The width step a dependency group must keep: the least common multiple of the head counts of the
    multi-head attentions whose embedding it prunes (1 without any), so every head keeps equal width."""
    return math.lcm(1, *(dep.target.module.num_heads for dep, _ in group
                         if isinstance(dep.target.module, nn.MultiheadAttention)))  # fmt: skip


def _check_options(ratio: float, round_to: int | None, global_ranking: bool) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ConfigError(
            f"channel pruning ratio {ratio!r} is out of range",
            expected="a fraction of the channels to remove, 0 <= ratio < 1",
        )
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise ConfigError(f"round_to {round_to!r} is not a channel count", expected="a positive integer, or None")
    if not isinstance(global_ranking, bool):
        raise ConfigError(f"global_ranking {global_ranking!r} is not a bool")


def count_macs_params(loaded: LoadedModel) -> tuple[int, int]:
    """Multiply-accumulates of one inference at the model's input size, and parameters (torch-pruning's count)."""
    return tpa.count_ops_and_params(loaded.module, example_inputs(loaded))


def _history(raw) -> History:
    return tuple((str(name), bool(out), tuple(int(i) for i in idxs)) for name, out, idxs in raw)


class _ChannelPruner(tpa.BasePruner):
    """torch-pruning's BasePruner, plus: no layer is pruned below its minimum width, and tied convolutions (the
    parts of one Darknet layer) share one score per channel so they keep equal widths."""

    def __init__(self, loaded: LoadedModel, example, importance, *, round_to: int | None, **options):
        kept = kept_layers(loaded)
        with torch.enable_grad():  # torch-pruning traces its graph through autograd
            super().__init__(loaded.module, example, importance, round_to=round_to, ignored_layers=kept, **options)
        # the output layers come from this pruner's own graph (tracing twice costs a forward pass at full size)
        protected = kept + output_layers(self.DG)
        check_channel_splits(loaded, self.DG, protected)
        self.ignored_layers = [m for layer in protected for m in layer.modules()]
        self.tied = {conv: tie for tie in tied_parts(loaded.module) for conv in tie}
        self.scores: dict[nn.Module, torch.Tensor] = {}
        # torch-pruning drops a group that would empty a layer, leaving it unpruned at any ratio; `within_minimum`
        # trims such a group to the minimum width instead, then checks it
        tpa.allow_emptying_groups(self.DG)

    def estimate_importance(self, group) -> torch.Tensor | None:
        root = group[0].dep.target.module
        estimate = super().estimate_importance
        if root in self.tied:
            groups = [self.DG.get_pruning_group(conv, tpa.prune_conv_out_channels, list(range(conv.out_channels)))
                      for conv in self.tied[root]]  # fmt: skip
            scores = [estimate(g) for g in groups]
            score = None if any(s is None for s in scores) else torch.stack(scores).mean(0)
        else:
            score = estimate(group)
        if score is not None:
            self.scores[root] = score
        return score

    def _whole_heads(self, group):
        """The group pruning fewer channels (its highest-scored back) where attention needs the kept width to be a
        multiple of its head count; None when that leaves nothing to prune."""
        heads = attention_heads(group)
        dep, idxs = group[0]
        surplus = (self.DG.get_out_channels(dep.target.module) - len(idxs)) % heads
        if not surplus:
            return group
        scores = self.scores[dep.target.module]
        idxs = sorted((int(i) for i in idxs), key=lambda i: float(scores[i]))[: len(idxs) - (heads - surplus)]
        return self.DG.get_pruning_group(dep.target.module, dep.handler, idxs) if idxs else None

    def within_minimum(self, group):
        """The group, or one pruning fewer channels (the lowest-scored) so the root keeps its minimum width;
        None when nothing is left to prune."""
        group = self._whole_heads(group)
        if group is None:
            return None
        dep, idxs = group[0]
        module, handler = dep.target.module, dep.handler
        width = self.DG.get_out_channels(module)
        keep = min_channels(width, self.round_to)
        if width - len(idxs) < keep:
            scores = self.scores[module]
            n_groups = tpa.channel_groups(self, group)  # grouped convolutions prune the same index in every group
            size = width // n_groups
            dim_scores = scores.view(n_groups, size).mean(0)
            dims = sorted({i % size for i in idxs}, key=lambda d: float(dim_scores[d]))
            dims = dims[: size - math.ceil(keep / n_groups)]
            if not dims:
                return None
            group = self.DG.get_pruning_group(module, handler, [d + g * size for g in range(n_groups) for d in dims])
        if tpa.keeps_every_layer(self.DG, group):
            return group
        # a layer holding only a slice of the group (part of a concatenation) would lose all its channels: keep
        # the group's highest-scored channels back, one step at a time, until every coupled layer keeps some
        scores = self.scores[module]
        idxs = sorted(group[0][1], key=lambda i: float(scores[int(i)]))
        step = self.round_to or 1
        while len(idxs) > step:
            idxs = idxs[:-step]
            group = self.DG.get_pruning_group(module, handler, [int(i) for i in idxs])
            if tpa.keeps_every_layer(self.DG, group):
                return group
        return None
