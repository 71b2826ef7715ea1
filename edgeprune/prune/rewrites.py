"""Exact module rewrites that make a model prunable by torch-pruning, applied and replayed by name.

Each rewrite removes an op torch-pruning maps to the wrong channels. It maps a `chunk`/`split` along channels by
the order in which it discovers the split's *used* outputs, not by their position (so it prunes the wrong indices
or fails with an IndexError), and it takes a zero-padding of channels for an element-wise op. The convolution
whose output was split or padded becomes one convolution per part, holding that part's filters and batch-norm
statistics, and the parts are routed where the slices went. The result computes the same numbers (bit for bit
in tests/prune/test_rewrites.py, which checks 1e-5), with the same parameters, regrouped.

A rewrite's name goes into `PrunePlan.rewrites`; `replay_rewrites` applies the named ones to a fresh load.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models.base import LoadedModel
from edgeprune.models.darknet import layers as L
from edgeprune.prune.slicing import output_slice

Replacements = dict[str, Callable[[nn.Module], nn.Module]]  # qualified module name -> makes its replacement


@dataclass(frozen=True)
class Rewrite:
    """`find(root)` names the modules the rewrite applies to, each with how to build its replacement."""

    name: str
    summary: str
    find: Callable[[nn.Module], Replacements]


REWRITES: dict[str, Rewrite] = {}


def register(rewrite: Rewrite) -> Rewrite:
    if rewrite.name in REWRITES:
        raise ValueError(f"rewrite {rewrite.name!r} is registered twice")
    REWRITES[rewrite.name] = rewrite
    return rewrite


def apply_rewrites(loaded: LoadedModel) -> tuple[str, ...]:
    """Apply every registered rewrite that finds a target in the model, in place; the names applied."""
    return tuple(rewrite.name for rewrite in REWRITES.values() if _apply(loaded, rewrite))


def replay_rewrites(loaded: LoadedModel, names: tuple[str, ...] | list[str]) -> None:
    """Apply the named rewrites (from a PrunePlan) to a fresh load of the plan's base model."""
    for name in names:
        if name not in REWRITES:
            raise UnknownName("rewrite", name, REWRITES, fix="replay the plan with the edgeprune version that made it")
        if not _apply(loaded, REWRITES[name]):
            raise ModelError(
                f"rewrite {name!r} of the plan finds nothing to rewrite in {loaded.spec}",
                fix="replay the plan on the model it was made from (its base_model)",
            )


def _apply(loaded: LoadedModel, rewrite: Rewrite) -> bool:
    root = loaded.module
    targets = rewrite.find(root)
    for name, build in targets.items():
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        original = getattr(parent, child)
        replacement = build(original)
        replacement.training = original.training  # not .train(): the reused children keep their own modes
        for key, value in vars(original).items():  # frameworks' routing attributes (ultralytics' f, i, type, np)
            if not key.startswith("_") and key not in vars(replacement):
                setattr(replacement, key, value)
        setattr(parent, child, replacement)
    if targets:
        loaded._fingerprint = None  # the parameters are regrouped under new names
    return bool(targets)


def _check_splittable(block: nn.Module, where: str) -> None:
    if block.conv.groups != 1:
        raise ModelError(
            f"{where}: its output is split along channels, but it is a grouped convolution "
            f"(groups={block.conv.groups}), which edgeprune cannot split exactly",
            fix="prune a model without this layout, or use depth pruning only",
        )


# --- ultralytics C2f / C3k2 / C2PSA --------------------------------------------------------------------------


class _SplitCv1(nn.Module):
    """A block whose `cv1` output is split in halves, with cv1 as two convolutions, one per half."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.c = original.cv1.conv.out_channels // 2
        self.cv1a = output_slice(original.cv1, 0, self.c)
        self.cv1b = output_slice(original.cv1, self.c, 2 * self.c)
        self.cv2 = original.cv2
        self.m = original.m


class SplitC2f(_SplitCv1):
    """ultralytics' C2f (and its subclasses C3k2, C2fCIB, C2fPSA) without the chunk: with a = cv1a(x), b = cv1b(x),
    y = [a, b, m1(b), m2(m1(b)), …] and cv2(cat(y[i] for i in concat)). `concat` is every output, or for depth
    pruning's FoldedC2f the ones it kept."""

    def __init__(self, original: nn.Module):
        super().__init__(original)
        self.concat = tuple(getattr(original, "concat", range(2 + len(original.m))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1a(x), self.cv1b(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat([y[i] for i in self.concat], 1))


class SplitC2PSA(_SplitCv1):
    """ultralytics' C2PSA without the split: cv2(cat(cv1a(x), m(cv1b(x))))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(torch.cat((self.cv1a(x), self.m(self.cv1b(x))), 1))


def _find_split_cv1(replacement: type[nn.Module], *classes: tuple[str, str]) -> Callable[[nn.Module], Replacements]:
    """A finder for modules of `classes` ((defining module, class name)), subclasses included when they keep the
    forward (C3k2, C2fCIB, C2fPSA share C2f's layout; others are left alone)."""

    def find(root: nn.Module) -> Replacements:
        found = []
        for module_name, class_name in classes:
            # a module that was never imported cannot have instances in the model
            cls = getattr(sys.modules.get(module_name), class_name, None)
            if cls is not None:
                found += [n for n, m in root.named_modules() if isinstance(m, cls) and type(m).forward is cls.forward]
        for name in found:
            _check_splittable(root.get_submodule(name).cv1, f"{name}.cv1")
        return dict.fromkeys(found, replacement)

    return find


register(Rewrite(
    "ultralytics-c2f-split-cv1",
    "C2f/C3k2 (also after depth pruning): cv1 computed as two convolutions instead of one chunked in halves",
    _find_split_cv1(SplitC2f, ("ultralytics.nn.modules.block", "C2f"),
                    ("edgeprune.prune.depth_ultralytics", "FoldedC2f")),
))  # fmt: skip
register(Rewrite(
    "ultralytics-c2psa-split-cv1",
    "C2PSA: cv1 computed as two convolutions instead of one split in halves",
    _find_split_cv1(SplitC2PSA, ("ultralytics.nn.modules.block", "C2PSA")),
))  # fmt: skip


# --- CIFAR ResNets: option-A (zero-padded) shortcuts --------------------------------------------------------


class ConvBN(nn.Module):
    """conv → batch norm."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class PartsBasicBlock(nn.Module):
    """A CIFAR BasicBlock whose option-A shortcut (subsample, zero-pad the new channels) is added only to the
    channels it has: conv2 → bn2 is computed as three parts — below, beside and above the shortcut's channels —
    and relu(cat(low, mid + shortcut, high)) is what relu(bn2(conv2(·)) + pad(shortcut)) computes.

    torch-pruning takes the padding for an element-wise op and would couple channels of different widths.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1, self.bn1 = block.conv1, block.bn1
        pad, second = block.shortcut.pad, ConvBN(block.conv2, block.bn2)
        width = block.conv2.out_channels
        bounds = ((0, pad), (pad, width - pad), (width - pad, width))
        self.low, self.mid, self.high = (output_slice(second, a, b) for a, b in bounds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        shortcut = x[:, :, ::2, ::2]
        return F.relu(torch.cat((self.low(out), self.mid(out) + shortcut, self.high(out)), 1))


def _find_cifar_option_a(root: nn.Module) -> Replacements:
    from edgeprune.models.cifar import BasicBlock, ZeroPadShortcut

    return {name: PartsBasicBlock for name, m in root.named_modules()
            if isinstance(m, BasicBlock) and isinstance(m.shortcut, ZeroPadShortcut)}  # fmt: skip


register(Rewrite(
    "cifar-option-a-shortcut-parts",
    "CIFAR ResNet option-A shortcut: conv2/bn2 in three parts, the shortcut added to the middle one only",
    _find_cifar_option_a,
))  # fmt: skip


# --- Darknet [route] groups= ---------------------------------------------------------------------------------


class PartsConvolutional(L.Block):
    """A Darknet [convolutional] layer computed as `groups` convolutions over consecutive ranges of its filters.

    It returns the parts as a tuple; the routes that read it (all are `PartsRoute`) take one part or concatenate
    them all, so no tensor is chunked. With equal part widths (the pruner keeps them equal) the parts, concatenated,
    are again one Darknet layer read by a grouped route.
    """

    def __init__(self, block: L.Convolutional, groups: int):
        super().__init__(block.index, block.inputs)
        width = block.conv.out_channels // groups
        self.parts = nn.ModuleList(output_slice(block, k * width, (k + 1) * width) for k in range(groups))

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


def _find_darknet(root: nn.Module) -> Replacements:
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
            _check_splittable(source, where)
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
    found: Replacements = {f"blocks.{j}": functools.partial(PartsConvolutional, groups=g) for j, g in splits.items()}
    found.update({f"blocks.{i}": _parts_route for i in readers})
    return found


def _parts_route(route: L.Route) -> PartsRoute:
    return PartsRoute(route.index, route.layers, route.groups, route.group_id)


register(Rewrite(
    "darknet-grouped-route-parts",
    "[route] groups=G: the layer it reads computed as G convolutions, one per group, instead of one chunked",
    _find_darknet,
))  # fmt: skip


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


# --- torchvision ShuffleNetV2 channel shuffles (in their own module) ----------------------------------------------

from edgeprune.prune import rewrite_shufflenet  # noqa: E402  (it needs nothing from here, so no import cycle)

register(Rewrite(
    "shufflenet-v2-shuffle-free",
    "ShuffleNetV2 channel shuffles folded into the convolutions that read the channels (branch ends split by reader)",
    rewrite_shufflenet.find,
))  # fmt: skip
