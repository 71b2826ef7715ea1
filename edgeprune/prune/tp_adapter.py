"""The one module of edgeprune that imports torch-pruning (pinned to 1.6.* in pyproject.toml): graph building,
dependency groups, pruners, importance classes and the pruning functions come from here.

Most of it re-exports torch-pruning's public API. The rest reaches into its internals, for lack of a public
equivalent. tests/prune/test_tp_adapter.py checks each on the installed release, so a release that renames or
changes one fails there by name instead of pruning the wrong channels (a missing one also raises an
EdgepruneError naming it, at its first use):

- `module_names`: `DependencyGraph._module2name`, the graph's module -> qualified name map. Without it a group's
  layers have no names: the planner keys its groups by them and `prune_channels_to` takes its widths by them.
- `channel_groups`: `BasePruner._get_channel_groups`, how many convolution groups share each channel index.
  Without it a grouped convolution is scored and cut per channel rather than per index in every group, so its
  kept width need not divide by its groups, as a convolution requires.
- `allow_emptying_groups` overrides `DependencyGraph.check_pruning_group` on one graph: `BasePruner.step` skips,
  silently, a group that would empty any coupled layer (a slice of a concatenation), which leaves it unpruned at
  every ratio; edgeprune trims such a group to its minimum instead (prune/channels.py `within_minimum`), then
  checks it with `keeps_every_layer`, the class's own check past the override.
- `normalized`: `GroupMagnitudeImportance._normalize`, the normalisers ("mean", a callable) edgeprune's criteria
  share with torch-pruning's `bn` importance. Without it scores stay unnormalised per group, and global ranking
  compares raw magnitudes of different layers.
- `is_split`: `ops.OPTYPE.SPLIT`, the graph node type of torch.split/chunk, for the channel-split check.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import EdgepruneError

VERSION: str = tp.__version__
DependencyGraph = tp.DependencyGraph
BasePruner = tp.pruner.BasePruner
Importance = tp.importance.Importance
GroupMagnitudeImportance = tp.importance.GroupMagnitudeImportance
BNScaleImportance = tp.importance.BNScaleImportance
prune_conv_out_channels = tp.prune_conv_out_channels

# the handlers of layers that produce a group's channels (their filters) and that read them (their input slices);
# a depthwise convolution's in- and out-channel handlers are one function: it both reads and produces the channel
OUT_CHANNEL_HANDLERS = frozenset(
    {tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels, tp.prune_linear_out_channels}
)
IN_CHANNEL_HANDLERS = frozenset(
    {tp.prune_conv_in_channels, tp.prune_depthwise_conv_in_channels, tp.prune_linear_in_channels}
)


def build_dependency_graph(module: nn.Module, example_inputs) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of `module`, traced with `example_inputs` (the caller enables grad)."""
    return tp.DependencyGraph().build_dependency(module, example_inputs, verbose=False)


def count_ops_and_params(module: nn.Module, example_inputs) -> tuple[int, int]:
    """Multiply-accumulates of one forward on `example_inputs`, and parameters, as torch-pruning counts them."""
    macs, params = tp.utils.count_ops_and_params(module, example_inputs)
    return int(macs), int(params)


def module_names(graph: tp.DependencyGraph) -> Mapping[nn.Module, str]:
    """Module -> its qualified name in the traced model (internal: `DependencyGraph._module2name`)."""
    return _internal(graph, "_module2name", "DependencyGraph._module2name")


def channel_groups(pruner: tp.pruner.BasePruner, group) -> int:
    """How many convolution groups of `group`'s layers share each channel index: pruning removes the same index
    from every group (internal: `BasePruner._get_channel_groups`)."""
    return _internal(pruner, "_get_channel_groups", "BasePruner._get_channel_groups")(group)


def allow_emptying_groups(graph: tp.DependencyGraph) -> None:
    """Make the pruner owning `graph` yield every group, including one that would empty a coupled layer (it
    skips those otherwise); the caller trims and checks them with `keeps_every_layer` (internal: overrides
    `DependencyGraph.check_pruning_group`, which `BasePruner.step` calls on its graph)."""
    graph.check_pruning_group = lambda group: True


def keeps_every_layer(graph: tp.DependencyGraph, group) -> bool:
    """Whether pruning `group` leaves every layer in it at least one channel (torch-pruning's own check, also
    where `allow_emptying_groups` replaced it)."""
    return tp.DependencyGraph.check_pruning_group(graph, group)


def normalized(importance: tp.importance.GroupMagnitudeImportance, scores: torch.Tensor) -> torch.Tensor:
    """`scores` normalised by `importance.normalizer` as torch-pruning's importances normalise theirs (internal:
    `GroupMagnitudeImportance._normalize`)."""
    normalize = _internal(importance, "_normalize", "GroupMagnitudeImportance._normalize")
    return normalize(scores, importance.normalizer)


def is_split(node) -> bool:
    """Whether a dependency-graph node is a torch.split/chunk (internal: `ops.OPTYPE.SPLIT`)."""
    return node.type == _internal(getattr(getattr(tp, "ops", None), "OPTYPE", None), "SPLIT", "ops.OPTYPE.SPLIT")


def _internal(owner, name: str, label: str):
    """`owner.name`, or an error naming the torch-pruning internal this release lacks."""
    try:
        return getattr(owner, name)
    except AttributeError:
        raise EdgepruneError(
            f"torch-pruning {VERSION} has no {label}, which edgeprune/prune/tp_adapter.py relies on",
            expected="torch-pruning 1.6.*, the release edgeprune is tested with",
            fix='pip install "torch-pruning==1.6.*"',
        ) from None
