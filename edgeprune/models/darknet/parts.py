"""A Darknet layer computed in parts (what the grouped-route rewrite, prune/rewrites.py, makes), and the way back
to plain cfg layers, so that a pruned model is still written as cfg + weights."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from edgeprune.models.darknet import layers as L

if TYPE_CHECKING:
    from edgeprune.models.base import LoadedModel


class PartsConvolutional(L.Block):
    """A Darknet [convolutional] layer computed as convolutions over consecutive ranges of its filters (`parts`,
    each a conv → batch norm → activation block).

    It returns the parts as a tuple; the routes that read it (all are `PartsRoute`) take one part or concatenate
    them all, so no tensor is chunked. With equal part widths (the pruner keeps them equal) the parts, concatenated,
    are again one Darknet layer read by a grouped route.
    """

    def __init__(self, index: int, inputs: tuple[int, ...], parts: Sequence[nn.Module]):
        super().__init__(index, inputs)
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(part(x) for part in self.parts)


class PartsRoute(L.Route):
    """A Darknet [route] reading `PartsConvolutional` layers: with groups, each input's group_id-th part (what
    Darknet's chunk gives), otherwise all parts in order; a plain tensor input is taken whole."""

    def forward(self, *xs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        taken: list[torch.Tensor] = []
        for x in xs:
            if isinstance(x, tuple):
                taken.extend((x[self.group_id],) if self.groups > 1 else x)
            else:
                taken.append(x)
        return taken[0] if len(taken) == 1 else torch.cat(taken, 1)


def tied_parts(root: nn.Module) -> list[tuple[nn.Module, ...]]:
    """Convolutions that must keep equal widths (the parts of one Darknet layer), so the pruned model is still
    expressible as a cfg with [route] groups=."""
    return [tuple(part.conv for part in m.parts) for m in root.modules() if isinstance(m, PartsConvolutional)]


def merged_darknet(root: nn.Module) -> nn.Module:
    """A copy of a (pruned) Darknet model with the grouped-route rewrite undone: every `PartsConvolutional` is one
    [convolutional] again (its parts' filters concatenated in order) and every `PartsRoute` a plain [route], so
    the model is expressible as cfg + weights and computes the same numbers."""
    merged = copy.deepcopy(root)
    blocks = getattr(merged, "blocks", None)
    if blocks is None:
        return merged
    for k, block in enumerate(blocks):
        if isinstance(block, PartsConvolutional):
            blocks[k] = _merged_convolutional(block)
        elif isinstance(block, PartsRoute):
            route = L.Route(block.index, block.layers, block.groups, block.group_id)
            route.inputs = block.inputs
            blocks[k] = route
    return merged


def write_darknet_files(loaded: LoadedModel, out_dir: Path) -> list[Path]:
    """The model as model.cfg + model.weights in Darknet's own formats, for Darknet users."""
    from edgeprune.models.darknet.cfg import write_cfg
    from edgeprune.models.darknet.weights import write_weights

    darknet = merged_darknet(loaded.module)
    return [write_cfg(darknet.cfg_sections(), out_dir / "model.cfg"), write_weights(darknet, out_dir / "model.weights")]


def _merged_convolutional(block: PartsConvolutional) -> L.Convolutional:
    first = block.parts[0]
    conv = first.conv
    merged = copy.deepcopy(first)  # same class, activation and attributes; its tensors are replaced below
    merged.index, merged.inputs = block.index, block.inputs
    weights = [part.conv.weight.detach() for part in block.parts]
    merged.conv = nn.Conv2d(conv.in_channels, sum(w.shape[0] for w in weights), conv.kernel_size, conv.stride,
                            conv.padding, groups=conv.groups, bias=conv.bias is not None)  # fmt: skip
    merged.conv.weight = nn.Parameter(torch.cat(weights))
    if conv.bias is not None:
        merged.conv.bias = nn.Parameter(torch.cat([part.conv.bias.detach() for part in block.parts]))
    if first.bn is not None:
        bn = merged.bn = nn.BatchNorm2d(merged.conv.out_channels, eps=first.bn.eps, momentum=first.bn.momentum)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, name).data.copy_(torch.cat([getattr(part.bn, name).detach() for part in block.parts]))
    return merged
