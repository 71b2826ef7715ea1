"""Depth pruning of Darknet cfgs: a [shortcut] and its residual branch leave the cfg; later references follow.

A candidate is a [shortcut] with a single `from=` source s and a linear activation, whose branch (the layers
strictly between s and the shortcut) reads only s and itself, is read only by itself and the shortcut, holds no
[yolo], and ends in a batch-normalised [convolutional], optionally followed by [dropout] (Yolo-Fastest). That
covers Darknet-53's conv → conv → shortcut(from=-3) and Yolo-Fastest's conv → depthwise conv → conv → dropout →
shortcut(from=-5). Removing one deletes the branch and the shortcut; whatever read the shortcut reads s instead,
and `layers=`/`from=` of the kept layers are renumbered (relative ones stay relative). The model is rebuilt from
the rewritten sections and the kept layers' tensors are copied over.

A block is named by its shortcut's index in the original cfg ("layer23"). The rebuilt model remembers the
original index of each layer in `original_layers`, so a plan replays on a fresh load of the original cfg and a
second removal names blocks the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

from edgeprune.models.base import LoadedModel
from edgeprune.models.darknet import layers as L
from edgeprune.models.darknet.build import DarknetModel
from edgeprune.prune.depth import BlockInfo, bn_score

ORIGIN = "original_layers"  # attribute of a rebuilt DarknetModel: original cfg index of each layer
_REFERENCES = {"route": "layers", "shortcut": "from"}  # options that name other layers


def knows(module: nn.Module) -> bool:
    return isinstance(module, DarknetModel)


def candidates(model: DarknetModel) -> list[BlockInfo]:
    readers: dict[int, set[int]] = defaultdict(set)
    for block in model.blocks:
        for layer in block.inputs:
            readers[layer].add(block.index)
    origin = _origin(model)
    found = []
    for block in model.blocks:
        branch = _branch(model, block, readers)
        conv = _last_conv(model, branch) if branch else None
        if conv is not None:
            params = sum(p.numel() for i in branch for p in model.blocks[i].parameters())
            found.append(BlockInfo(f"layer{origin[block.index]}", bn_score(conv.bn), params))
    return found


def remove(loaded: LoadedModel, names: Sequence[str]) -> None:
    model = loaded.module
    index_of = {f"layer{original}": index for index, original in enumerate(_origin(model))}
    dropped: set[int] = set()
    alias: dict[int, int] = {}  # removed shortcut -> its source, whose output now stands for it
    for name in names:
        shortcut = index_of[name]
        source = model.blocks[shortcut].sources[0]
        dropped.update(range(source + 1, shortcut + 1))
        alias[shortcut] = source
    kept = [i for i in range(len(model.blocks)) if i not in dropped]
    new_index = {old: new for new, old in enumerate(kept)}

    def target(layer: int) -> int:
        while layer in alias:  # a removed block's source may itself be a removed shortcut
            layer = alias[layer]
        return new_index[layer]

    sections = model.cfg_sections()
    rebuilt = [sections[0]]
    for old in kept:
        section = sections[old + 1]
        key = _REFERENCES.get(section.kind)
        if key:
            raws = section.integers(key)
            moved = [target(old + raw if raw < 0 else raw) for raw in raws]
            section.options[key] = ",".join(
                str(new - new_index[old] if raw < 0 else new) for raw, new in zip(raws, moved)
            )
        rebuilt.append(section)
    pruned = DarknetModel(rebuilt)
    with torch.no_grad():
        for old, new in new_index.items():
            pruned.blocks[new].load_state_dict(model.blocks[old].state_dict())
    pruned.weights_header = model.weights_header
    setattr(pruned, ORIGIN, tuple(_origin(model)[old] for old in kept))
    loaded.module = pruned.train(model.training)


def block_layers(model: DarknetModel, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The name prefixes of the layers each block takes with it: its branch and its [shortcut]."""
    index_of = {f"layer{original}": index for index, original in enumerate(_origin(model))}
    prefixes = {}
    for name in names:
        shortcut = index_of[name]
        source = model.blocks[shortcut].sources[0]
        prefixes[name] = tuple(f"blocks.{i}." for i in range(source + 1, shortcut + 1))
    return prefixes


def _origin(model: DarknetModel) -> tuple[int, ...]:
    return getattr(model, ORIGIN, None) or tuple(range(len(model.blocks)))


def _branch(model: DarknetModel, block: L.Block, readers: dict[int, set[int]]) -> range | None:
    """The layers strictly between a [shortcut]'s source and itself, when they form a removable branch."""
    section = model.sections[block.index + 1]
    if not isinstance(block, L.Shortcut) or len(block.sources) != 1 or section.text("activation", "linear") != "linear":
        return None
    source = block.sources[0]
    branch = range(source + 1, block.index)
    for layer in branch:
        member = model.blocks[layer]
        if (
            isinstance(member, L.Yolo)
            or not all(source <= i < block.index for i in member.inputs)
            or not all(source < i <= block.index for i in readers[layer])
        ):
            return None
    return branch or None


def _last_conv(model: DarknetModel, branch: range) -> L.Convolutional | None:
    """The batch-normalised conv that feeds the add, through [dropout] layers only."""
    for layer in reversed(branch):
        block = model.blocks[layer]
        if not isinstance(block, L.Dropout):
            return block if isinstance(block, L.Convolutional) and block.bn is not None else None
    return None
