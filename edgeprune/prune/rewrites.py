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

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models.base import LoadedModel
from edgeprune.models.darknet.parts import PartsConvolutional, PartsRoute, tied_parts  # noqa: F401  (their home)
from edgeprune.prune.slicing import check_splittable, output_slice

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
    """Apply every rewrite of the model's family that finds a target in the model, in place; the names applied."""
    names = loaded.family.rewrites
    return tuple(rewrite.name for rewrite in REWRITES.values()
                 if (names is None or rewrite.name in names) and _apply(loaded, rewrite))  # fmt: skip


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
            check_splittable(root.get_submodule(name).cv1, f"{name}.cv1")
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


# --- Darknet [route] groups= (in their own module) -----------------------------------------------------------------

from edgeprune.prune import rewrite_darknet  # noqa: E402  (it needs nothing from here, so no import cycle)

register(Rewrite(
    "darknet-grouped-route-parts",
    "[route] groups=G: the layer it reads computed as G convolutions, one per group, instead of one chunked",
    rewrite_darknet.find,
))  # fmt: skip


# --- torchvision ShuffleNetV2 channel shuffles (in their own module) ----------------------------------------------

from edgeprune.prune import rewrite_shufflenet  # noqa: E402  (it needs nothing from here, so no import cycle)

register(Rewrite(
    "shufflenet-v2-shuffle-free",
    "ShuffleNetV2 channel shuffles folded into the convolutions that read the channels (branch ends split by reader)",
    rewrite_shufflenet.find,
))  # fmt: skip
