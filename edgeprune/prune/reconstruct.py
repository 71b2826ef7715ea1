"""ThiNet (Luo et al. 2017, "ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression"): channels
chosen by how well the next layer's output survives without them, and the next layer's weights refit by least
squares on the channels kept.

Both work on what a consumer layer (a convolution or linear layer reading the pruned channels) computes at sampled
output positions. For input channel c, z_c is its contribution to every output channel there (the layer's weights
on c times c's input patch); the layer's output is Σ_c z_c (+ bias). ThiNet removes greedily the channel whose
removal keeps ‖Σ_removed z_c‖² smallest; with the Gram matrix G = [z_c · z_c'] each step is a lookup. Channels
read by several consumers (a residual stream) add the consumers' Gram matrices, which is the same objective over
all of them at once.

`reconstruct` refits each consumer whose inputs were pruned: min ‖X' Wᵀ − Y‖² over its sampled positions, X' the
pruned network's input patches (earlier refits applied, so their remaining error is compensated) and Y what the
unpruned layer computed there. It applies after any criterion.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.models.base import LoadedModel
from edgeprune.prune import tp_adapter as tpa
from edgeprune.types import PrunePlan

SAMPLES_PER_IMAGE = 10  # output positions sampled per image and layer (ThiNet's paper samples 10)
MAX_ROWS = 20000  # sampled positions a layer's least squares is solved on (rows of X')
# At least this many rows per unknown of a refit filter: more positions per image when the images are few. With 64
# images, 10 positions each and ResNet-20's 288 unknowns, held-out error rose after the refit on some layers (the
# fit followed the sample): measured in tests/prune/test_reconstruct.py's first version.
ROWS_PER_UNKNOWN = 8
RIDGE = 1e-6  # relative to the mean diagonal of X'ᵀX': keeps channels that never fire from making it singular


def _consumers(model: nn.Module) -> dict[str, nn.Module]:
    """Convolutions and linear layers that read a whole input (no grouped or depthwise convolutions)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)}  # fmt: skip


def _patches(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Input patches, (N, positions, in_channels, k·k): what each output position of `layer` reads."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, 1, x.shape[-1], 1) if x.dim() == 2 else x.reshape(x.shape[0], -1, x.shape[-1], 1)
    cols = nn.functional.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding,
                                stride=layer.stride)  # (N, C·k·k, L)  # fmt: skip
    n, _, positions = cols.shape
    return cols.view(n, layer.in_channels, -1, positions).permute(0, 3, 1, 2)


def _weight(layer: nn.Module) -> torch.Tensor:
    """(out, in, k·k)."""
    return layer.weight.detach().reshape(layer.weight.shape[0], layer.weight.shape[1], -1)


def _sample(patches: torch.Tensor, generator: torch.Generator,
            per_image: int = SAMPLES_PER_IMAGE) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """`per_image` random positions per image: the patches there (S, in, k·k) and their flat indices."""
    n, positions = patches.shape[:2]
    k = min(per_image, positions)
    picks = torch.stack([torch.randperm(positions, generator=generator)[:k] for _ in range(n)])
    flat = (picks + torch.arange(n)[:, None] * positions).flatten()
    return patches.reshape(n * positions, *patches.shape[2:])[flat], flat


class ThinetImportance(tpa.GroupMagnitudeImportance):
    """ThiNet's greedy order as scores: the channel removed last scores highest (see the module docstring)."""

    def __init__(self):
        super().__init__(p=1, group_reduction="sum", normalizer="mean")
        self.gram: dict[nn.Module, torch.Tensor] = {}

    @torch.no_grad()
    def collect(self, model: nn.Module, data: Iterable, seed: int = 0) -> None:
        """Each consumer's Gram matrix of input-channel contributions over positions sampled from the data."""
        generator = torch.Generator().manual_seed(seed)
        gram: dict[nn.Module, torch.Tensor] = {}

        def hook(layer, inputs):
            sampled, _ = _sample(_patches(layer, inputs[0].detach().float().cpu()), generator)
            z = torch.einsum("sck,ock->cso", sampled, _weight(layer).float().cpu()).flatten(1)
            gram[layer] = gram.get(layer, 0) + (z @ z.T).double()

        model.eval()
        hooks = [m.register_forward_pre_hook(hook) for m in _consumers(model).values()]
        n = 0
        try:
            for batch in data:
                model(batch[0])
                n += 1
        finally:
            for handle in hooks:
                handle.remove()
        if n == 0:
            raise ConfigError("the data for the pruning criterion yielded no batches", fix="pass at least one batch")
        self.gram = gram

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        width = len(group[0].root_idxs)
        total = torch.zeros(width, width, dtype=torch.float64)
        used = False
        for i, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            if dep.handler not in tpa.IN_CHANNEL_HANDLERS or layer not in self.gram:
                continue
            roots = group[i].root_idxs
            if any(r is None for r in roots) or len(idxs) != len(roots):
                continue
            position = torch.tensor(roots, dtype=torch.long)
            index = torch.tensor(idxs, dtype=torch.long)
            total.index_put_((position[:, None], position[None, :]), self.gram[layer][index][:, index],
                             accumulate=True)  # fmt: skip
            used = True
        if not used:
            return None
        return tpa.normalized(self, greedy_order_scores(total))


def greedy_order_scores(gram: torch.Tensor) -> torch.Tensor:
    """ThiNet's greedy removal on a Gram matrix of channel contributions: at each step the channel whose removal
    adds least to ‖Σ_removed z‖²; scores 1, 2, … in removal order (the last removed, the most needed, highest)."""
    width = gram.shape[0]
    remaining = list(range(width))
    cross = torch.zeros(width, dtype=torch.float64)  # Σ_removed G[t, c] for every c
    scores = torch.zeros(width, dtype=torch.float32)
    diagonal = gram.diagonal()
    for step in range(width):
        candidates = torch.tensor(remaining)
        added = 2 * cross[candidates] + diagonal[candidates]  # ‖r + z_c‖² − ‖r‖²
        chosen = remaining.pop(int(torch.argmin(added)))
        cross += gram[chosen]
        scores[chosen] = step + 1
    return scores


@dataclass(frozen=True)
class LayerRefit:
    """One consumer refit: its output error on the sampled positions before and after (relative to ‖Y‖)."""

    name: str
    rows: int
    error_before: float
    error_after: float


TAG = 4096  # a tagged weight holds out · TAG + in: exact in float32 below 2^24, so widths up to TAG


def kept_channels(before: LoadedModel, plan: PrunePlan) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Which of its original output and input channels each consumer kept: `plan`'s rewrites replayed on a copy of
    `before` (the model as pruning found it, blocks already removed), its weights set to their own indices, and
    the channel history replayed: torch-pruning moves those values with the channels it keeps."""
    from edgeprune.prune.channels import replay_channels
    from edgeprune.prune.rewrites import replay_rewrites

    tagged = copy.deepcopy(before)
    replay_rewrites(tagged, plan.rewrites)  # first: a layer split in parts numbers its own channels
    with torch.no_grad():
        for name, layer in _consumers(tagged.module).items():
            out, inp = layer.weight.shape[:2]
            if max(out, inp) >= TAG:
                raise ConfigError(f"--reconstruct: layer {name} has {max(out, inp)} channels",
                                  expected=f"at most {TAG - 1} per layer")  # fmt: skip
            codes = torch.arange(out)[:, None] * TAG + torch.arange(inp)[None, :]
            layer.weight.copy_(codes.reshape(out, inp, *([1] * (layer.weight.dim() - 2))).expand_as(layer.weight))
        replay_channels(tagged, plan.channel_history)
    kept = {}
    for name, layer in _consumers(tagged.module).items():
        codes = layer.weight.detach().reshape(layer.weight.shape[0], layer.weight.shape[1], -1)[:, :, 0].round().long()
        kept[name] = (codes[:, 0] // TAG, codes[0, :] % TAG)
    return kept


def refit_after_pruning(before: LoadedModel, pruned: LoadedModel, plan: PrunePlan,
                        data: Iterable) -> list[LayerRefit]:  # fmt: skip
    """`reconstruct` for a model whose channels `plan` pruned: `before` is the model as channel pruning found it
    (any blocks already removed: its layers' names are the pruned model's, which a Darknet model renumbers when
    blocks go), and its layers' outputs are the targets."""
    from edgeprune.prune.rewrites import replay_rewrites

    reference = copy.deepcopy(before)
    replay_rewrites(reference, plan.rewrites)  # the exact rewrites pruning made, so layer names match
    return reconstruct(reference.module, pruned.module, data, kept_channels(before, plan))


@torch.no_grad()
def reconstruct(original: nn.Module, pruned: nn.Module, data: Iterable,
                kept: dict[str, tuple[torch.Tensor, torch.Tensor]], seed: int = 0) -> list[LayerRefit]:  # fmt: skip
    """Refit, in forward order, every consumer of `pruned` that reads fewer channels than in `original` (see the
    module docstring; `original` with the exact rewrites pruning made); `data` are (inputs, …) batches, `kept`
    each layer's kept (output, input) channels (kept_channels). Returns each layer's error before and after."""
    originals = _consumers(original)
    targets = [name for name, layer in _consumers(pruned).items()
               if name in originals and name in kept
               and layer.weight.shape[1] < originals[name].weight.shape[1]]  # fmt: skip
    batches = [batch[0] for batch in data]
    if not batches or not targets:
        return []
    original.eval()
    pruned.eval()
    refits = []
    for name in targets:
        layer, before = _consumers(pruned)[name], originals[name]
        outputs = kept[name][0]
        generator = torch.Generator().manual_seed(seed)
        unknowns = layer.weight[0].numel()
        per_image = max(SAMPLES_PER_IMAGE, math.ceil(ROWS_PER_UNKNOWN * unknowns / sum(len(b) for b in batches)))
        xs, ys = [], []
        for inputs in batches:
            full, flat = _sample(_patches(before, _inputs_of(original, before, inputs)), generator, per_image)
            ys.append(torch.einsum("sck,ock->so", full.float(), _weight(before)[outputs].float()))
            mine = _patches(layer, _inputs_of(pruned, layer, inputs))  # the pruned network's input, same positions
            xs.append(mine.reshape(-1, *mine.shape[2:])[flat])
            if sum(len(x) for x in xs) >= MAX_ROWS:
                break
        x = torch.cat(xs).flatten(1).double()
        y = torch.cat(ys).double()
        weight = _weight(layer).flatten(1).double()
        error_before = float((x @ weight.T - y).norm() / y.norm().clamp_min(1e-30))
        gram = x.T @ x
        gram += RIDGE * gram.diagonal().mean().clamp_min(1e-30) * torch.eye(gram.shape[0], dtype=torch.float64)
        solved = torch.linalg.solve(gram, x.T @ y).T  # (out, in'·k·k)
        error_after = float((x @ solved.T - y).norm() / y.norm().clamp_min(1e-30))
        if error_after < error_before:  # least squares cannot be worse on its own rows; guard rounding anyway
            layer.weight.copy_(solved.reshape(layer.weight.shape).to(layer.weight.dtype))
        refits.append(LayerRefit(name, len(x), error_before, min(error_after, error_before)))
    return refits


@torch.no_grad()
def layer_error(original: nn.Module, pruned: nn.Module, name: str, data: Iterable,
                kept: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> float:  # fmt: skip
    """How far layer `name` of `pruned` computes from what it computed in `original` on these batches, over every
    output position: ‖pruned output − original output on the kept channels‖ / ‖original‖, biases left out."""
    layer, before = _consumers(pruned)[name], _consumers(original)[name]
    outputs, error, total = kept[name][0], 0.0, 0.0
    for batch in data:
        full = _patches(before, _inputs_of(original, before, batch[0]))
        mine = _patches(layer, _inputs_of(pruned, layer, batch[0]))
        y = torch.einsum("npck,ock->npo", full.double(), _weight(before)[outputs].double())
        error += float((torch.einsum("npck,ock->npo", mine.double(), _weight(layer).double()) - y).square().sum())
        total += float(y.square().sum())
    return (error / max(total, 1e-30)) ** 0.5


def _inputs_of(model: nn.Module, layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """What `layer` reads when `model` runs on `inputs` (the forward pass stops there)."""
    captured = []

    class _Stop(Exception):
        pass

    def hook(_, args):
        captured.append(args[0].detach().float())
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        model(inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]
