"""Magnitude 2:4 semi-structured sparsity (Han et al. 2015's magnitude pruning in the form sparse tensor cores run).

The pattern is NVIDIA's (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks"; the Ampere whitepaper's
"fine-grained structured sparsity"; ASP, apex/contrib/sparsity): in every group of 4 consecutive weights along the
reduction (input-channel, K) dimension, at most 2 are nonzero. For a Conv2d weight (out, in, kh, kw) a group is 4
consecutive input channels at one (output channel, kernel position); for a Linear weight (out, in), 4 consecutive
inputs of one output. TensorRT runs such layers on Ampere/Orin sparse tensor cores when the engine is built with
BuilderFlag.SPARSE_WEIGHTS; everywhere else the zeros are stored and multiplied like any other weight.

The mask is kept while fine-tuning by a forward pre-hook that zeroes the masked weights before every forward, so
the state dict keeps its plain `weight` names (saving and reloading need nothing new) and the hook survives the
deep copies trainers make; `released` removes the hooks and zeroes the weights one last time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from edgeprune.types.results import TWO_OF_FOUR, TWO_OF_FOUR_SPEED

PATTERN, SPEED_NOTE = TWO_OF_FOUR, TWO_OF_FOUR_SPEED
GROUP, KEPT = 4, 2


def _candidates(module: nn.Module) -> Iterator[tuple[str, nn.Module, bool]]:
    """Every Conv2d and Linear: (name, layer, whether it can hold the pattern)."""
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Conv2d):
            yield name, layer, layer.groups == 1 and layer.in_channels % GROUP == 0
        elif isinstance(layer, nn.Linear):
            yield name, layer, layer.in_features % GROUP == 0


def dense_layers(module: nn.Module) -> tuple[str, ...]:
    """The Conv2d/Linear layers that stay dense: grouped convs, and input-channel counts that are not a multiple of 4
    (a group of 4 along K cannot be formed; TensorRT runs them dense)."""
    return tuple(name for name, _, eligible in _candidates(module) if not eligible)


def eligible_layers(module: nn.Module) -> tuple[str, ...]:
    """The Conv2d (groups == 1) and Linear layers whose input-channel count is a multiple of 4."""
    return tuple(name for name, _, eligible in _candidates(module) if eligible)


def two_of_four_masks(module: nn.Module) -> dict[str, torch.Tensor]:
    """{layer name: bool mask shaped like its weight}, keeping the 2 largest |w| in every group of 4 consecutive
    input channels at each (output channel, kernel position), for every eligible Conv2d (groups == 1) and Linear.
    Ties go to the lower input channel."""
    return {name: _mask(layer.weight.detach()) for name, layer, eligible in _candidates(module) if eligible}


def _mask(weight: torch.Tensor) -> torch.Tensor:
    grouped = _groups(weight.abs().float())
    # a stable sort of -|w| ranks equal magnitudes by position: deterministic where topk's order is not
    order = torch.argsort(-grouped, dim=-1, stable=True)[..., :KEPT]
    keep = torch.zeros_like(grouped, dtype=torch.bool).scatter_(-1, order, True)
    return _ungroup(keep, weight.shape)


def _groups(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, *kernel) → (out, *kernel, in / 4, 4): the last axis is one group of 4 consecutive input channels."""
    moved = weight.movedim(1, -1)
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // GROUP, GROUP)


def _ungroup(grouped: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return grouped.reshape(*grouped.shape[:-2], shape[1]).movedim(-1, 1).contiguous()


def apply_masks(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the weights the masks drop, in place."""
    with torch.no_grad():
        for name, mask in masks.items():
            weight = module.get_submodule(name).weight
            weight.mul_(mask.to(weight.device, weight.dtype))


class _KeepMask:
    """Forward pre-hook: the masked weights are zeroed before every forward, i.e. after every optimizer step, so
    training only ever sees (and moves) the kept ones. A class, not a closure: deep copies carry their own mask."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def __call__(self, layer: nn.Module, inputs) -> None:
        weight = layer.weight
        if self.mask.device != weight.device:
            self.mask = self.mask.to(weight.device)
        with torch.no_grad():
            weight.mul_(self.mask.to(weight.dtype))


@contextlib.contextmanager
def masks_kept(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Apply the masks and keep them through whatever trains `module` in place inside the block; on leaving, the
    hooks are removed and the masks applied once more (the last optimizer step ran after the last forward)."""
    apply_masks(module, masks)
    for name, mask in masks.items():
        module.get_submodule(name).register_forward_pre_hook(_KeepMask(mask.clone()))
    try:
        yield
    finally:
        released(module)
        apply_masks(module, masks)


def released(module: nn.Module) -> None:
    """Remove every mask-keeping hook from `module` (also those a trainer's deep copy brought back), zeroing the
    weights by each hook's mask first."""
    for layer in module.modules():
        for key, hook in list(layer._forward_pre_hooks.items()):
            if isinstance(hook, _KeepMask):
                hook(layer, ())
                del layer._forward_pre_hooks[key]


def check_two_of_four(weights: Mapping[str, np.ndarray | torch.Tensor]) -> list[str]:
    """Names of the tensors (out, in, ...) that break the pattern: more than 2 nonzeros in some group of 4
    consecutive input channels (axis 1), or an input axis that is not a multiple of 4."""
    broken = []
    for name, value in weights.items():
        tensor = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))
        if tensor.ndim < 2 or tensor.shape[1] % GROUP:
            broken.append(name)
        elif int((_groups(tensor) != 0).sum(-1).max()) > KEPT:
            broken.append(name)
    return broken


def layer_weights(module: nn.Module, names) -> dict[str, torch.Tensor]:
    """{layer name: weight} of the named layers."""
    return {name: module.get_submodule(name).weight.detach() for name in names}
