"""Depth pruning of ResNets (CIFAR and torchvision): blocks with an identity shortcut become nn.Identity.

A block computes relu(f(x) + x). Its input x is itself the output of a ReLU (the stem's, through a max pool in
torchvision, or the previous block's), so x ≥ 0 and, with f removed, relu(x) = x: nn.Identity is exactly the
block without its branch. Blocks with a downsampling shortcut change the shape and are not candidates.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from torch import nn

from edgeprune.models.base import LoadedModel
from edgeprune.models.cifar import BasicBlock
from edgeprune.prune.depth import BlockInfo, bn_score, replace_module


def knows(module: nn.Module) -> bool:
    """A CIFAR ResNet or a torchvision ResNet."""
    from edgeprune.models.cifar import CifarResNet

    torchvision_resnet = sys.modules.get("torchvision.models.resnet")  # not imported: not a torchvision model
    return isinstance(module, CifarResNet) or bool(torchvision_resnet and isinstance(module, torchvision_resnet.ResNet))


def candidates(module: nn.Module) -> list[BlockInfo]:
    blocks = []
    for name, block in module.named_modules():
        bn = _last_bn(block)
        if bn is not None and isinstance(module.get_submodule(name.rpartition(".")[0]), nn.Sequential):
            blocks.append(BlockInfo(name, bn_score(bn), sum(p.numel() for p in block.parameters())))
    return blocks


def remove(loaded: LoadedModel, names: Sequence[str]) -> None:
    for name in names:
        replace_module(loaded.module, name, nn.Identity())


def _last_bn(block: nn.Module) -> nn.BatchNorm2d | None:
    """The batch norm before the add, for a block with an identity shortcut; None for anything else."""
    if isinstance(block, BasicBlock):
        return block.bn2 if isinstance(block.shortcut, nn.Identity) else None
    torchvision_resnet = sys.modules.get("torchvision.models.resnet")
    if torchvision_resnet is None or getattr(block, "downsample", True) is not None:
        return None
    if isinstance(block, torchvision_resnet.BasicBlock):
        return block.bn2
    if isinstance(block, torchvision_resnet.Bottleneck):
        return block.bn3
    return None
