"""Darknet [route] groups=G without the chunk: the layer a grouped route reads is computed as G convolutions, one
per group (models/darknet/parts.py), and every route reading it takes its parts, so torch-pruning sees no split."""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from edgeprune.errors import ModelError
from edgeprune.models.darknet import layers as L
from edgeprune.models.darknet.parts import PartsConvolutional, PartsRoute
from edgeprune.prune.slicing import check_splittable, output_slice

Replacements = dict[str, Callable[[nn.Module], nn.Module]]  # as in prune/rewrites.py


def find(root: nn.Module) -> Replacements:
    """The layers grouped routes read (split into parts) and every route reading them; ModelError when the layout
    has no exact prunable form."""
    from edgeprune.models.darknet import DarknetModel

    if not isinstance(root, DarknetModel):
        return {}
    blocks = root.blocks
    splits: dict[int, int] = {}
    for route in blocks:
        if type(route) is not L.Route or route.groups == 1:
            continue
        for j in route.inputs:
            source = blocks[j]
            where = f"Darknet layer {j} (read by the grouped [route] at layer {route.index})"
            if not isinstance(source, L.Convolutional):
                raise ModelError(
                    f"{where} is a {type(source).__name__.lower()}; edgeprune prunes through grouped routes that "
                    "read a [convolutional] layer directly",
                    fix="prune a model without this layout, or use depth pruning only",
                )
            check_splittable(source, where)
            if splits.setdefault(j, route.groups) != route.groups:
                raise ModelError(f"{where} is read by grouped routes with different groups= ({splits[j]}, "
                                 f"{route.groups})")  # fmt: skip
    readers = {b.index for b in blocks if set(b.inputs) & set(splits)}
    for index in sorted(readers):
        if not isinstance(blocks[index], L.Route):
            source = sorted(set(blocks[index].inputs) & set(splits))[0]
            raise ModelError(
                f"Darknet layer {source} feeds a grouped [route] and also layer {index}, a "
                f"{type(blocks[index]).__name__.lower()}; edgeprune prunes such layers only when every reader is a "
                "[route]",
                fix="prune a model without this layout, or use depth pruning only",
            )
    found: Replacements = {f"blocks.{j}": functools.partial(_parts_convolutional, groups=g) for j, g in splits.items()}
    found.update({f"blocks.{i}": _parts_route for i in readers})
    return found


def _parts_route(route: L.Route) -> PartsRoute:
    return PartsRoute(route.index, route.layers, route.groups, route.group_id)


def _parts_convolutional(block: L.Convolutional, groups: int) -> PartsConvolutional:
    width = block.conv.out_channels // groups
    return PartsConvolutional(block.index, block.inputs,
                              [output_slice(block, k * width, (k + 1) * width) for k in range(groups)])  # fmt: skip
