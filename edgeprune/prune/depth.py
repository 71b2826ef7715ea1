"""Depth pruning: a residual block `x + f(x)` is removed by dropping its branch f, which leaves the identity.

Blocks are ranked by the mean |γ| of the batch norm after the branch's last conv (the one feeding the add),
lowest first: with γ near zero the branch adds little more than a constant. Only blocks whose input and output
shapes agree (no downsampling or projection shortcut) and whose last conv has a batch norm are candidates.

A model's family (`loaded.family.depth`) names the modules with `knows(module)`, `candidates(module)` and
`remove(loaded, names)`: CIFAR and torchvision ResNets (`depth_resnet`), Darknet cfgs (`depth_darknet`),
ultralytics YOLOs (`depth_ultralytics`). Any other model is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from torch import nn

from edgeprune.errors import ConfigError, UnknownName
from edgeprune.models.base import LoadedModel

SUPPORTED = "a CIFAR ResNet, a torchvision ResNet, a Darknet cfg or an ultralytics YOLO"


@dataclass(frozen=True)
class BlockInfo:
    """One removable residual block, in network order."""

    name: str  # module qualified name; Darknet: "layer<i>" of its [shortcut], i as in the original cfg
    score: float  # mean |γ| of the batch norm after the branch's last conv; lowest is removed first
    params: int  # parameters of the residual branch, which go with it


def removable_blocks(loaded: LoadedModel) -> list[BlockInfo]:
    """The residual blocks that can be removed without changing any shape, in network order."""
    return _family(loaded).candidates(loaded.module)


def remove_blocks(loaded: LoadedModel, n: int | None = None, names: Sequence[str] | None = None) -> tuple[str, ...]:
    """Remove the `n` lowest-ranked blocks, or the blocks `names`, in place; returns the names removed, in
    network order (the plan's `removed_blocks`)."""
    if (n is None) == (names is None):
        raise ConfigError("depth pruning needs either a number of blocks or their names", expected="one of the two")
    if isinstance(names, str):
        raise ConfigError(f"block names must be a list, not the string {names!r}", fix=f"pass [{names!r}]")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ConfigError(f"number of blocks to remove is {n!r}", expected="an integer ≥ 0")
    if n == 0 or (names is not None and not names):
        return ()
    family = _family(loaded)
    candidates = family.candidates(loaded.module)
    chosen = _by_rank(loaded, candidates, n) if n is not None else _by_name(candidates, names)
    family.remove(loaded, [c.name for c in chosen])
    loaded._fingerprint = None
    return tuple(c.name for c in chosen)


def replay_blocks(loaded: LoadedModel, names: Sequence[str]) -> tuple[str, ...]:
    """Re-apply a plan's `removed_blocks` on a fresh load of its base model."""
    return remove_blocks(loaded, names=tuple(names))


def _by_rank(loaded: LoadedModel, candidates: list[BlockInfo], n: int) -> list[BlockInfo]:
    if n > len(candidates):
        raise ConfigError(
            f"cannot remove {n} residual blocks: {loaded.spec} has {len(candidates)} removable ones",
            expected=f"at most {len(candidates)}",
            fix="ask for fewer blocks",
        )
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i].score, i))  # ties: earliest first
    return [candidates[i] for i in sorted(order[:n])]


def _by_name(candidates: list[BlockInfo], names: Sequence[str]) -> list[BlockInfo]:
    known = {c.name for c in candidates}
    for name in names:
        if name not in known:
            raise UnknownName("removable block", name, known, fix="list them with removable_blocks()")
    wanted = set(names)
    if len(wanted) < len(names):
        duplicated = sorted(name for name in wanted if list(names).count(name) > 1)
        raise ConfigError(f"block names given twice: {', '.join(duplicated)}", fix="name each block once")
    return [c for c in candidates if c.name in wanted]


def block_layers(loaded: LoadedModel, blocks: Sequence[BlockInfo]) -> dict[str, tuple[str, ...]]:
    """For each block, the name prefixes of the layers that leave with it (its module's own, or the family's)."""
    handler = _family(loaded)
    if hasattr(handler, "block_layers"):
        return handler.block_layers(loaded.module, [b.name for b in blocks])
    return {b.name: (b.name + ".",) for b in blocks}


def _family(loaded: LoadedModel) -> ModuleType:
    """The module that knows this model's residual blocks (`knows`, `candidates(module)`, `remove(loaded, names)`),
    as the model's family names it."""
    handler = loaded.family.depth_pruning(loaded.module)
    if handler is None:
        raise ConfigError(
            f"depth pruning does not know the residual blocks of {loaded.spec} ({type(loaded.module).__name__})",
            expected=SUPPORTED,
            fix="prune channels only for this model",
        )
    return handler


def bn_score(bn: nn.Module) -> float:
    """Mean |γ| of a batch norm: the ranking score of the block it ends."""
    return float(bn.weight.detach().abs().mean())


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)  # Sequential and ModuleList register children by their index as a string
