"""Checks that pruning removed the channels it says it removed, everywhere they are read.

`masked_copy` zeroes, in an unpruned copy, every filter, bias and batch-norm γ/β that produces a channel the
plan removes. Such a channel is then 0 after any activation with act(0) = 0 (ReLU, leaky, SiLU, Mish, hardswish),
so the masked copy computes what the pruned model computes if, and only if, each reader lost exactly those
channels. Valid for conv/batch-norm networks (not LayerNorm/GroupNorm, which mix channels).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeprune.models.base import LoadedModel
from edgeprune.prune import tp_adapter as tpa


def rewritten_copy(loaded: LoadedModel) -> LoadedModel:
    """A deep copy to take before `prune_channels` (which rewrites and prunes in place)."""
    from edgeprune.prune.rewrites import apply_rewrites

    clone = copy.deepcopy(loaded)
    apply_rewrites(clone)
    return clone


def masked_copy(unpruned: LoadedModel, history) -> nn.Module:
    module = copy.deepcopy(unpruned.module)
    with torch.enable_grad():  # the graph is traced through autograd
        graph = tpa.build_dependency_graph(module, unpruned.example_inputs(1))
    with torch.no_grad():
        _mask(module, graph, history)
    return module


def _mask(module: nn.Module, graph: tpa.DependencyGraph, history) -> None:
    for name, out, idxs in history:
        layer = module.get_submodule(name)
        handler = graph.get_pruner_of_module(layer).prune_out_channels
        assert out, "single-step pruning records output-channel pruning only"
        for dep, dep_idxs in graph.get_pruning_group(layer, handler, list(idxs)):
            target = dep.target.module
            if not graph.is_out_channel_pruning_fn(dep.handler):
                continue
            if isinstance(target, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)):
                target.weight[dep_idxs] = 0
                if target.bias is not None:
                    target.bias[dep_idxs] = 0


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / (b.max() - b.min()))
