"""What a planner can remove from a model, and what the model's layers look like after a choice of removals.

A `Structure` is read once from the model (with its exact rewrites applied, as pruning applies them):
- channel groups: torch-pruning's dependency groups, each with the conv/linear layers whose output or input widths
  follow it (a concatenation's consumer by the share it reads; a linear layer after a flatten by the spatial
  positions per channel), its removal unit (the hardware step) and minimum width, and the criterion's channel
  scores, normalised per group to a mean of 1 and weighted by the number of layers the group spans over two, so
  that an ordinary channel (one producer, one consumer) is worth about 1 and a residual-stream channel more;
- removable residual blocks (prune/depth.py), with the layers that go with each.

`layers(state)` gives the model's layers (LayerUse) after a choice of kept widths and removed blocks, without
building that model; the planner prices a choice through it, and tests check it against the realized model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.latency.microbench import LayerUse, layer_uses
from edgeprune.models.base import LoadedModel
from edgeprune.prune import importance as imp
from edgeprune.prune import tp_adapter as tpa
from edgeprune.prune.channels import attention_heads
from edgeprune.prune.groups import _instances, min_channels


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are removed together (lowest score first). `members` are (layer name, "out" | "in", cum)
    where cum[r] is how many of that layer's channels go when the group's r lowest-scored channels go (one each for
    a plain consumer, the spatial positions for a linear layer after a flatten, only its share for a layer that
    holds part of a concatenation)."""

    key: str  # the name of one layer whose output channels are the group's (the root)
    width: int
    unit: int  # channels removed at a time
    min_width: int
    members: tuple[tuple[str, str, np.ndarray], ...] = field(repr=False)
    scores: np.ndarray = field(repr=False)  # normalised channel scores, ascending

    def value_of(self, kept: int, kept_after: int) -> float:
        """Sum of the scores of the channels removed going from `kept` to `kept_after` (lowest go first)."""
        return float(self.scores[self.width - kept : self.width - kept_after].sum())

    @property
    def output_layers(self) -> tuple[str, ...]:
        return tuple(name for name, side, _ in self.members if side == "out")


@dataclass(frozen=True)
class Block:
    """A removable residual block: its name (prune/depth.py), depth score and the layers that go with it."""

    name: str
    score: float
    layers: frozenset[str]
    value: float  # see _priced_blocks


@dataclass
class PlanState:
    """A choice: kept width per group key, and removed blocks."""

    kept: dict[str, int]
    removed: set[str] = field(default_factory=set)

    def copy(self) -> PlanState:
        return PlanState(dict(self.kept), set(self.removed))


@dataclass
class Structure:
    uses: list[LayerUse]
    groups: dict[str, ChannelGroup]
    blocks: dict[str, Block]
    step: int

    def initial(self) -> PlanState:
        return PlanState({key: g.width for key, g in self.groups.items()})

    def layers(self, state: PlanState) -> list[LayerUse]:
        """The model's layers after `state`'s removals, in execution order."""
        gone = set().union(*(self.blocks[b].layers for b in state.removed)) if state.removed else set()
        delta_in: dict[str, int] = {}
        delta_out: dict[str, int] = {}
        for key, group in self.groups.items():
            removed = group.width - state.kept[key]
            if removed:
                for name, side, cum in group.members:
                    target = delta_out if side == "out" else delta_in
                    target[name] = target.get(name, 0) + int(cum[removed])
        return [self.resized(u, delta_in.get(u.name, 0), delta_out.get(u.name, 0)) for u in self.uses
                if u.name not in gone]  # fmt: skip

    @staticmethod
    def resized(use: LayerUse, less_in: int, less_out: int) -> LayerUse:
        """`use` with `less_in` fewer input and `less_out` fewer output channels (a depthwise layer loses the
        larger of the two on both sides)."""
        if not (less_in or less_out):
            return use
        if use.signature.kind == "depthwise":
            width = use.out_channels - max(less_in, less_out)
            return replace(use, in_channels=width, out_channels=width)
        return replace(use, in_channels=use.in_channels - less_in, out_channels=use.out_channels - less_out)


def read_structure(
    loaded: LoadedModel,
    criterion: str,
    step: int,
    *,
    data: Iterable[imp.Batch] | None = None,
    loss_fn: imp.LossFn | None = None,
    blocks: bool = True,
) -> Structure:
    """The channel groups and removable blocks of `loaded` (not modified: a copy is analysed)."""
    from edgeprune.prune.channels import channel_pruner
    from edgeprune.prune.rewrites import apply_rewrites

    if step < 1:
        raise ConfigError(f"channel step {step} is not a channel count", expected="a positive integer")
    block_list = _blocks(loaded) if blocks else []
    work = copy.deepcopy(loaded)
    apply_rewrites(work)
    uses = layer_uses(work)
    known = {u.name for u in uses}
    groups: dict[str, ChannelGroup] = {}
    with channel_pruner(work, criterion, round_to=step, data=data, loss_fn=loss_fn, pruning_ratio=0.0) as pruner:
        graph = pruner.DG
        names = tpa.module_names(graph)
        for group in graph.get_all_groups(ignored_layers=pruner.ignored_layers,
                                          root_module_types=pruner.root_module_types):  # fmt: skip
            root = group[0].dep.target.module
            width = graph.get_out_channels(root)
            if width is None or names.get(root) not in known:
                continue
            scores = pruner.estimate_importance(group)
            if scores is None:
                continue
            n_groups = tpa.channel_groups(pruner, group)
            scores = scores.detach().float().view(n_groups, -1).mean(0).repeat(n_groups)
            scores = (scores / scores.mean().clamp_min(1e-12)).cpu().numpy().astype(np.float64)
            order = np.argsort(scores, kind="stable")
            members = _members(group, names, width, known, order)
            if not members:
                continue
            # a channel's worth grows with the layers it feeds: a residual stream channel runs through every block
            # of its stage, an ordinary one through two layers (normalised scores alone rate them the same)
            scores = scores * (len(members) / 2)
            heads = attention_heads(group)  # realize keeps multiples of it; so must the plan
            unit = math.lcm(step * n_groups if n_groups > 1 else step, heads)
            groups[names[root]] = ChannelGroup(
                key=names[root], width=width, unit=unit,
                min_width=max(min_channels(width, step), n_groups, heads, _keeps_every_member(members, width)),
                members=members, scores=scores[order],
            )  # fmt: skip
    groups = _tie(groups, pruner.tied, names)
    return Structure(uses, groups, _priced_blocks(block_list, uses, groups), step)


def _members(group, names, width: int, known: set[str], order: np.ndarray):
    """(layer, side, cum) of the group's conv/linear layers; cum follows the group's channels in `order`."""
    hits: dict[tuple[str, str], np.ndarray] = {}
    for item in group:
        name = names.get(item.dep.target.module)
        handler = item.dep.handler
        side = "out" if handler in tpa.OUT_CHANNEL_HANDLERS else "in" if handler in tpa.IN_CHANNEL_HANDLERS else None
        if name not in known or side is None:
            continue
        counts = np.bincount(np.asarray(item.root_idxs, dtype=np.int64), minlength=width)[:width]
        hits[(name, side)] = np.maximum(hits.get((name, side), 0), counts)  # one layer reached by two paths
    return tuple((name, side, np.concatenate([[0], np.cumsum(h[order])]).astype(np.int64))
                 for (name, side), h in hits.items())  # fmt: skip


def _keeps_every_member(members, width: int) -> int:
    """The fewest group channels to keep so that no layer loses all of its channels: a layer that holds only part
    of the group (a slice of a concatenation) empties before the group does."""
    keep = 1
    for _, _, cum in members:
        if cum[-1] > 0:
            emptied_at = int(np.argmax(cum >= cum[-1]))  # group channels removed when this layer has none left
            keep = max(keep, width - emptied_at + 1)
    return keep


def _tie(groups: dict[str, ChannelGroup], tied: Mapping, names) -> dict[str, ChannelGroup]:
    """Tied convolutions (the parts of one Darknet layer) must keep equal widths: one group for all of them."""
    merged = dict(groups)
    for conv, tie in tied.items():
        keys = [names.get(c) for c in tie if names.get(c) in merged]
        if len(keys) < 2 or names.get(conv) != keys[0]:
            continue
        first = merged[keys[0]]
        members = first.members + tuple(m for k in keys[1:] for m in groups[k].members)
        for k in keys[1:]:
            merged.pop(k, None)
        merged[keys[0]] = replace(first, members=members)
    return merged


def _blocks(loaded: LoadedModel) -> list[tuple[str, float, tuple[str, ...]]]:
    """(name, score, name prefixes of its layers) of each removable block; none for families without blocks."""
    from edgeprune.prune.depth import block_layers, removable_blocks

    try:
        found = removable_blocks(loaded)
    except ConfigError:
        return []
    layers = block_layers(loaded, found)
    return [(b.name, b.score, layers[b.name]) for b in found if not _folds_into_concatenation(loaded.module, b.name)]


def _folds_into_concatenation(module, name: str) -> bool:
    """An ultralytics Bottleneck directly in a C2f/C3k2: removing it also narrows the next conv (its duplicate
    input is folded, prune/depth_ultralytics.py), which `Structure.layers` does not model, so the planner leaves
    these blocks to `prune --blocks`."""
    owner_name = name.rpartition(".")[0].rpartition(".")[0]
    if not owner_name:
        return False
    owner = module.get_submodule(owner_name)
    # looked up, not imported: importing ultralytics writes its settings, and only its own models hold a C2f
    return any(m is owner for m in _instances(module, "ultralytics.nn.modules.block", "C2f"))


def _priced_blocks(found, uses: list[LayerUse], groups: dict[str, ChannelGroup]) -> dict[str, Block]:
    """A block's value in the groups' currency (a channel between one producer and one consumer is worth 1, each
    layer side counting half): half the input plus output channels of its layers, weighted by the block's depth
    score over the mean score (the seed's rule: a block with small γ adds little)."""
    if not found:
        return {}
    mean_score = float(np.mean([score for _, score, _ in found])) or 1.0
    blocks = {}
    for name, score, prefixes in found:
        mine = [u for u in uses if u.name.startswith(prefixes)]
        sides = sum(u.in_channels + u.out_channels for u in mine) / 2
        blocks[name] = Block(name, score, frozenset(u.name for u in mine), sides * max(score / mean_score, 1e-3))
    return blocks


def conv_macs(use: LayerUse) -> float:
    """Multiply-accumulates of one layer at batch 1."""
    s = use.signature
    if s.kind == "linear":
        return float(s.height * use.in_channels * use.out_channels)
    out_h = (s.height + 2 * s.padding[0] - s.dilation[0] * (s.kernel[0] - 1) - 1) // s.stride[0] + 1
    out_w = (s.width + 2 * s.padding[1] - s.dilation[1] * (s.kernel[1] - 1) - 1) // s.stride[1] + 1
    per_output = math.prod(s.kernel) * (1 if s.kind == "depthwise" else use.in_channels // max(s.groups, 1))
    return float(per_output * use.out_channels * out_h * out_w)


def realize(loaded: LoadedModel, structure: Structure, state: PlanState, criterion: str, reconstruct: bool = False,
            **prune_options):  # fmt: skip
    """Apply `state` to `loaded` in place: remove its blocks, then prune each group to its kept width; with
    `reconstruct`, refit the layers that read pruned channels on `prune_options['data']` (prune/reconstruct.py).
    Returns the PrunePlan (removed blocks, rewrites, channel history, refits)."""
    from edgeprune.prune.channels import prune_channels_to
    from edgeprune.prune.depth import remove_blocks

    removed = remove_blocks(loaded, names=sorted(state.removed)) if state.removed else ()
    rename = _renaming(loaded)
    # a group is found by its root layer, or by any other layer whose outputs are only its own (the root may have
    # gone with a removed block)
    owners: dict[str, set[str]] = {}
    for key, group in structure.groups.items():
        for name in group.output_layers:
            owners.setdefault(name, set()).add(key)
    widths = {}
    for key, group in structure.groups.items():
        if state.kept[key] < group.width:
            widths.update({rename(name): state.kept[key] for name in group.output_layers
                           if name == key or owners[name] == {key}})  # fmt: skip
    before = copy.deepcopy(loaded) if reconstruct else None
    plan = prune_channels_to(loaded, widths, criterion, round_to=structure.step, **prune_options)
    if before is not None:
        from edgeprune.prune.reconstruct import refit_after_pruning

        refits = refit_after_pruning(before, loaded, plan, prune_options["data"])
        plan = replace(plan, reconstructed=tuple((r.name, r.error_before, r.error_after) for r in refits))
    return replace(plan, removed_blocks=tuple(removed))


def _renaming(loaded: LoadedModel):
    """Layer names of the unpruned model -> names after block removal (Darknet renumbers its layers)."""
    origin = getattr(loaded.module, "original_layers", None)
    if origin is None:
        return lambda name: name
    new_index = {str(old): str(new) for new, old in enumerate(origin)}

    def rename(name: str) -> str:
        head, index, rest = name.split(".", 2) if name.count(".") >= 2 else (*name.split(".", 1), "")
        if head != "blocks" or index not in new_index:
            return name
        return ".".join(p for p in ("blocks", new_index[index], rest) if p)

    return rename
