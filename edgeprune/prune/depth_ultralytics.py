"""Depth pruning of ultralytics YOLOs: a residual Bottleneck (`add` set: x + cv2(cv1(x))) becomes the identity.

Where a Bottleneck sits decides how:
- in an nn.Sequential (inside C3/C3k/C2, or a layer of the model itself, e.g. yolov3.yaml's backbone), the
  Sequential just passes x on; a layer of the model keeps ultralytics' routing attributes (f, i, type, np);
- directly in the `m` of a C2f (or C3k2), whose forward concatenates every bottleneck's output: the removed
  one's output equals its input, so the concatenation holds that input twice. Its slice of cv2's weights is
  added onto the slice of the identical input and the duplicate leaves the concatenation (`FoldedC2f`), which
  computes the same numbers with fewer channels.
Bottlenecks elsewhere (C2fAttn, modules that override C2f's forward) and other residual modules (PSABlock,
GhostBottleneck, ResNetBlock) are not candidates.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.models.base import LoadedModel
from edgeprune.prune.depth import BlockInfo, bn_score, replace_module

_ROUTING = ("f", "i", "type")


class FoldedC2f(nn.Module):
    """A C2f (or C3k2) with removed bottlenecks (nn.Identity in `m`) whose duplicate outputs are folded into cv2:
    only the outputs at `concat` (0 and 1 are cv1's halves, k + 2 is m[k]'s) are concatenated."""

    def __init__(self, cv1: nn.Module, cv2: nn.Module, m: nn.ModuleList, concat: Sequence[int]):
        super().__init__()
        self.cv1, self.cv2, self.m = cv1, cv2, m
        self.concat = tuple(concat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat([y[i] for i in self.concat], 1))


def knows(module: nn.Module) -> bool:
    """An ultralytics model (looked up, not imported: importing ultralytics writes its settings)."""
    tasks = sys.modules.get("ultralytics.nn.tasks")
    return bool(tasks and isinstance(module, tasks.BaseModel))


def candidates(model: nn.Module) -> list[BlockInfo]:
    from ultralytics.nn.modules.block import Bottleneck

    modules = dict(model.named_modules())
    found = []
    for name, block in modules.items():
        if isinstance(block, Bottleneck) and block.add and hasattr(block.cv2, "bn") and _placement(modules, name):
            found.append(BlockInfo(name, bn_score(block.cv2.bn), sum(p.numel() for p in block.parameters())))
    return found


def remove(loaded: LoadedModel, names: Sequence[str]) -> None:
    model = loaded.module
    modules = dict(model.named_modules())
    placement = {name: _placement(modules, name) for name in names}
    folds: dict[str, list[int]] = defaultdict(list)  # C2f name -> indices in its m
    for name in names:
        parent, _, child = name.rpartition(".")
        if placement[name] == "c2f":
            folds[parent.rpartition(".")[0]].append(int(child))
    for name in folds:  # before anything changes
        _check_foldable(name, modules[name])
    for name in names:
        if placement[name] == "sequential":
            replace_module(model, name, _keep_routing(modules[name], nn.Identity()))
    for name, indices in folds.items():
        replace_module(model, name, _fold(modules[name], indices))


def _placement(modules: dict[str, nn.Module], name: str) -> str | None:
    """'sequential' or 'c2f' when the Bottleneck `name` can be removed where it sits, else None."""
    from ultralytics.nn.modules.block import C2f

    parent_name = name.rpartition(".")[0]
    parent = modules.get(parent_name)
    if isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward:
        return "sequential"
    owner = modules.get(parent_name.rpartition(".")[0])
    if not isinstance(parent, nn.ModuleList) or getattr(owner, "m", None) is not parent:
        return None
    if isinstance(owner, FoldedC2f) or (isinstance(owner, C2f) and type(owner).forward is C2f.forward):
        return "c2f"
    return None


def _check_foldable(name: str, c2f: nn.Module) -> None:
    concat, conv, width = _concat(c2f), c2f.cv2.conv, c2f.cv1.conv.out_channels // 2
    if conv.groups != 1 or conv.in_channels != width * len(concat):
        raise ConfigError(
            f"{name}.cv2 takes {conv.in_channels} channels in {conv.groups} groups, not {len(concat)} x {width} in one",
            expected="an unmodified C2f, or one modified by depth pruning only",
            fix="remove blocks before pruning channels (the plan replays in that order)",
        )


def _concat(c2f: nn.Module) -> list[int]:
    return list(getattr(c2f, "concat", range(2 + len(c2f.m))))


def _fold(c2f: nn.Module, indices: list[int]) -> FoldedC2f:
    """`c2f` with m[k] removed for k in `indices`, each duplicate output's cv2 weights folded onto its twin."""
    concat, conv, width = _concat(c2f), c2f.cv2.conv, c2f.cv1.conv.out_channels // 2
    slices = {position: conv.weight.detach()[:, j * width : (j + 1) * width] for j, position in enumerate(concat)}
    for k in sorted(indices):
        c2f.m[k] = nn.Identity()
        twin = k + 1
        while twin >= 2 and isinstance(c2f.m[twin - 2], nn.Identity):  # an earlier removed block passed it on
            twin -= 1
        slices[twin] = slices[twin] + slices.pop(k + 2)
        concat.remove(k + 2)
    folded = nn.Conv2d(
        width * len(concat), conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        bias=conv.bias is not None, padding_mode=conv.padding_mode,
    ).to(conv.weight)  # fmt: skip
    with torch.no_grad():
        folded.weight.copy_(torch.cat([slices[position] for position in concat], 1))
        if conv.bias is not None:
            folded.bias.copy_(conv.bias)
    c2f.cv2.conv = folded
    return _keep_routing(c2f, FoldedC2f(c2f.cv1, c2f.cv2, c2f.m, concat))


def _keep_routing(original: nn.Module, replacement: nn.Module) -> nn.Module:
    """A layer of the model is run by ultralytics' forward through its `f` (inputs) and `i` (index); the
    module that takes its place needs them, and `type`/`np` for model summaries."""
    for key in _ROUTING:
        if hasattr(original, key):
            setattr(replacement, key, getattr(original, key))
    if hasattr(original, "np"):
        replacement.np = sum(p.numel() for p in replacement.parameters())
    return replacement
