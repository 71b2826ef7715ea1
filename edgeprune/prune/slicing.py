"""Copies of a convolution or batch norm that compute only some of their output channels (exact rewrites)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from edgeprune.errors import ModelError


def conv_rows(conv: nn.Conv2d, rows: Sequence[int]) -> nn.Conv2d:
    """A copy of `conv` computing only output channels `rows`, in that order (ungrouped or depthwise)."""
    if conv.groups > 1 and not conv.groups == conv.in_channels == conv.out_channels:
        raise ValueError(f"{conv} is a grouped convolution: its output channels cannot be picked on their own")
    part = copy.deepcopy(conv)
    part.weight = _picked(conv.weight, rows)
    if conv.bias is not None:
        part.bias = _picked(conv.bias, rows)
    if conv.groups > 1:  # depthwise: each kept filter reads its own channel
        part.groups = part.in_channels = len(rows)
    part.out_channels = len(rows)
    return part


def bn_rows(bn: nn.modules.batchnorm._BatchNorm, rows: Sequence[int]) -> nn.modules.batchnorm._BatchNorm:
    """A copy of `bn` normalising only channels `rows`, in that order."""
    part = copy.deepcopy(bn)
    if bn.affine:
        part.weight, part.bias = _picked(bn.weight, rows), _picked(bn.bias, rows)
    if bn.track_running_stats:
        part.running_mean = bn.running_mean[list(rows)].clone()
        part.running_var = bn.running_var[list(rows)].clone()
    part.num_features = len(rows)
    return part


def output_slice(block: nn.Module, start: int, stop: int) -> nn.Module:
    """A copy of a conv → batch norm → activation block (attributes `conv`, `bn`) computing only output
    channels start:stop."""
    part = copy.deepcopy(block)
    part.conv = conv_rows(block.conv, range(start, stop))
    if getattr(block, "bn", None) is not None:
        part.bn = bn_rows(block.bn, range(start, stop))
    return part


def check_splittable(block: nn.Module, where: str) -> None:
    """Refuse a block whose output is split along channels when its convolution is grouped (no exact split)."""
    if block.conv.groups != 1:
        raise ModelError(
            f"{where}: its output is split along channels, but it is a grouped convolution "
            f"(groups={block.conv.groups}), which edgeprune cannot split exactly",
            fix="prune a model without this layout, or use depth pruning only",
        )


def _picked(parameter: nn.Parameter, rows: Sequence[int]) -> nn.Parameter:
    return nn.Parameter(parameter.detach()[list(rows)].clone(), requires_grad=parameter.requires_grad)
