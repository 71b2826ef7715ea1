"""ShuffleNetV2 (torchvision) without channel shuffles: every shuffle folded into the convolutions that read it.

torch-pruning cannot follow `channel_shuffle` (view → transpose → view; it fails building the graph, and lists
ShuffleNet as unsupported). A shuffle is a fixed permutation of channels, and every channel is eventually read by
a convolution — the first 1×1 of a stride-1 block's second branch (the channels in its half), both branches of
the next stride-2 block, or conv5 — so no tensor has to be permuted: each branch's last 1×1 conv → BN → ReLU is
split, by rows, into one part per block that reads its channels, and each reader gets the concatenation of its
parts with its input columns (depthwise filters and their BN, for branch1) reordered to match. The same numbers
up to summation order (tests/prune/test_rewrites.py), the same parameters, regrouped; the parts prune like any
convolution, and a concatenation is something torch-pruning follows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgeprune.errors import ModelError
from edgeprune.prune.slicing import bn_rows, conv_rows

Channel = tuple[str, int]  # (the part-producing layer, its output channel)


class ShuffleFreeStages(nn.Module):
    """stage2, stage3, stage4 and conv5 of a ShuffleNetV2, computed from parts; replaces `stage2` (the others
    become identities). `reads[e]` are the part slots block e concatenates; `writes[e]` the slots its parts fill."""

    def __init__(self, net: nn.Module):
        super().__init__()
        blocks = [b for stage in (net.stage2, net.stage3, net.stage4) for b in stage]
        width = net.stage2[0].branch2[0].in_channels
        reads = _trace_reads(blocks, width)
        events = [*range(len(blocks)), "conv5"]
        rows = {(producer, e): r for e in events for producer, r in _rows_read(reads[e])}
        names = list(rows)  # slot k holds the part of producer names[k][0] that event names[k][1] reads
        if names[0] != ("input", 0) or rows[names[0]] != list(range(width)) or reads[0] != sorted(reads[0]):
            raise ModelError(
                "this ShuffleNetV2 variant does not start its stages with a stride-2 block reading the stem",
                fix="prune a torchvision ShuffleNetV2, or use depth pruning only",
            )
        slot = {name: k for k, name in enumerate(names)}
        self.reads = tuple(tuple(slot[(producer, e)] for producer, _ in _rows_read(reads[e])) for e in events)
        self.strides = tuple(b.stride for b in blocks)
        self.n_slots = len(names)
        self.heads, self.tails, self.writes = nn.ModuleList(), nn.ModuleList(), []
        for e, block in enumerate(blocks):
            columns = _positions(reads[e], [(names[k][0], i) for k in self.reads[e] for i in rows[names[k]]])
            head = nn.ModuleDict({"b2": nn.Sequential(_columns(block.branch2[0], columns), *block.branch2[1:5])})
            tail, writes = nn.ModuleDict(), []
            if block.stride > 1:  # branch1: depthwise → BN → 1×1 → BN → ReLU, all of it reading the whole input
                head["b1"] = _depthwise(block.branch1[0], block.branch1[1], columns)
                sources = {"b1": (_columns(block.branch1[2], columns), *block.branch1[3:])}
            else:
                sources = {}
            sources["b2"] = tuple(block.branch2[5:])
            for branch, (conv, bn, act) in sources.items():
                parts = [k for k, (producer, _) in enumerate(names) if producer == f"{e}.{branch}"]
                tail[branch] = nn.ModuleList(_rows(conv, bn, act, rows[names[k]]) for k in parts)
                writes.append(tuple(parts))
            self.heads.append(head)
            self.tails.append(tail)
            self.writes.append(tuple(writes))
        final = [(names[k][0], i) for k in self.reads[-1] for i in rows[names[k]]]
        self.conv5 = nn.Sequential(_columns(net.conv5[0], _positions(reads["conv5"], final)), *net.conv5[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slots: list[torch.Tensor | None] = [x] + [None] * (self.n_slots - 1)
        for e, (stride, head, tail) in enumerate(zip(self.strides, self.heads, self.tails)):
            inputs = _gather(slots, self.reads[e])
            outputs = [head["b1"](inputs)] if stride > 1 else []
            outputs.append(head["b2"](inputs))
            for branch_input, parts, writes in zip(outputs, tail.values(), self.writes[e]):
                for part, slot in zip(parts, writes):
                    slots[slot] = part(branch_input)
        return self.conv5(_gather(slots, self.reads[-1]))


def _gather(slots: list, indices: Sequence[int]) -> torch.Tensor:
    tensors = [slots[i] for i in indices]
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, 1)


def _trace_reads(blocks: Sequence[nn.Module], width: int) -> dict:
    """The logical channel order each block (and conv5) reads, in terms of (producer, channel): the shuffles
    replayed on labels instead of tensors."""
    features: list[Channel] = [("input", i) for i in range(width)]
    reads = {}
    for e, block in enumerate(blocks):
        new = [(f"{e}.b2", i) for i in range(block.branch2[-3].out_channels)]
        if block.stride == 1:
            kept, reads[e] = features[: len(features) // 2], features[len(features) // 2 :]
            concatenated = kept + new
        else:
            reads[e] = features
            concatenated = [(f"{e}.b1", i) for i in range(block.branch1[-3].out_channels)] + new
        half = len(concatenated) // 2  # channel_shuffle(x, 2): out[2i + g] = x[g * half + i]
        features = [concatenated[g * half + i] for i in range(half) for g in range(2)]
    reads["conv5"] = features
    return reads


def _rows_read(read: Sequence[Channel]) -> list[tuple[str, list[int]]]:
    """The producers a read takes channels from (in order of first appearance), each with its rows, ascending."""
    rows: dict[str, list[int]] = {}
    for producer, i in read:
        rows.setdefault(producer, []).append(i)
    return [(producer, sorted(r)) for producer, r in rows.items()]


def _positions(logical: Sequence[Channel], physical: Sequence[Channel]) -> list[int]:
    """For each physical input position, the logical column the original layer had there."""
    where = {channel: j for j, channel in enumerate(logical)}
    if sorted(where) != sorted(physical):
        raise AssertionError("a shuffle-free read does not cover the channels the original read")
    return [where[channel] for channel in physical]


def _columns(conv: nn.Conv2d, columns: list[int]) -> nn.Conv2d:
    """`conv` reading its input channels in a new order (column k of the result is old column columns[k])."""
    new = _like(conv, conv.in_channels, conv.out_channels, conv.groups)
    new.weight = nn.Parameter(conv.weight.detach()[:, columns].clone())
    if conv.bias is not None:
        new.bias = nn.Parameter(conv.bias.detach().clone())
    return new


def _depthwise(conv: nn.Conv2d, bn: nn.BatchNorm2d, order: list[int]) -> nn.Sequential:
    """A depthwise conv and its BN with their channels reordered."""
    return nn.Sequential(conv_rows(conv, order), bn_rows(bn, order))


def _rows(conv: nn.Conv2d, bn: nn.BatchNorm2d, act: nn.Module, rows: list[int]) -> nn.Sequential:
    """A 1×1 conv → BN → ReLU computing only output channels `rows`."""
    return nn.Sequential(conv_rows(conv, rows), bn_rows(bn, rows), type(act)())


def _like(conv: nn.Conv2d, cin: int, cout: int, groups: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, conv.kernel_size, conv.stride, conv.padding, conv.dilation, groups,
                     bias=conv.bias is not None)  # fmt: skip


def find(root: nn.Module) -> dict:
    """stage2 → the shuffle-free stages; stage3, stage4, conv5 → identities (their layers live on in stage2)."""
    from torchvision.models import ShuffleNetV2

    targets = {}
    for name, module in root.named_modules():
        if isinstance(module, ShuffleNetV2):
            prefix = f"{name}." if name else ""
            targets[f"{prefix}stage2"] = lambda _, net=module: ShuffleFreeStages(net)
            for identity in ("stage3", "stage4", "conv5"):
                targets[f"{prefix}{identity}"] = lambda _: nn.Identity()
    return targets
