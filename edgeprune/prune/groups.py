"""torch-pruning's dependency graph of a LoadedModel, and the layers whose channels must stay as they are.

Never pruned: the model's input (no layer produces it, so torch-pruning has nothing to prune), every layer whose
output channels reach a model output unchanged (class logits, Darknet convolutions feeding a [yolo] layer,
ultralytics Detect's last box/class convolutions and its DFL), and attention blocks whose heads are split by a
reshape, which torch-pruning cannot follow (ultralytics `Attention`).
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch import nn

from edgeprune.errors import ModelError
from edgeprune.models.base import LoadedModel
from edgeprune.prune import tp_adapter as tpa

_PARAMETRIC = (nn.modules.conv._ConvNd, nn.Linear)
# what torch-pruning raises when it cannot follow a layout (it also asserts on its own assumptions)
TRACING_ERRORS = (RuntimeError, IndexError, KeyError, ValueError, TypeError, ZeroDivisionError, AssertionError)
# blocks kept whole: (module that defines the class, class name)
_KEPT_WHOLE = (("ultralytics.nn.modules.block", "Attention"),)
# torchvision architectures torch-pruning 1.6 cannot trace (benchmarks/RESULTS.md, coverage sweep): its graph build
# fails ("int + NoneType") or grows to 13-23 GB of memory at 224² until the kernel kills the process
_UNTRACEABLE = {
    ("torchvision.models.swin_transformer", "SwinTransformer"): "shifted-window attention",
    ("torchvision.models.maxvit", "MaxVit"): "block and grid attention",
}


def example_inputs(loaded: LoadedModel) -> tuple[torch.Tensor, ...]:
    """The inputs the graph is traced with: one sample of the model's declared input shape."""
    return loaded.example_inputs(1)


def check_traceable(loaded: LoadedModel) -> None:
    """Refuse, before tracing, an architecture whose trace is known to fail or exhaust memory."""
    for (module_name, class_name), why in _UNTRACEABLE.items():
        if _instances(loaded.module, module_name, class_name):
            raise ModelError(
                f"{loaded.spec}: torch-pruning cannot trace torchvision's {class_name} ({why}): its "
                "dependency graph fails to build or needs 13-23 GB of memory",
                fix="prune another architecture; channel pruning of this one needs an exact rewrite edgeprune lacks",
            )


def _instances(root: nn.Module, module_name: str, class_name: str) -> list[nn.Module]:
    """The submodules of `root` that are instances of that class; none when its library was never imported."""
    cls = getattr(sys.modules.get(module_name), class_name, None)
    return [] if cls is None else [m for m in root.modules() if isinstance(m, cls)]


def dependency_graph(loaded: LoadedModel) -> tpa.DependencyGraph:
    """The model's dependency graph, traced once with `example_inputs`."""
    check_traceable(loaded)
    with warnings.catch_warnings(), torch.enable_grad():  # the graph is traced through autograd
        warnings.simplefilter("ignore")  # torch-pruning warns about every op it treats as element-wise
        try:
            return tpa.build_dependency_graph(loaded.module, example_inputs(loaded))
        except TRACING_ERRORS as exc:
            raise untraceable(loaded, exc) from exc


def untraceable(loaded: LoadedModel, exc: Exception) -> ModelError:
    first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return ModelError(
        f"torch-pruning could not follow the channels of {loaded.spec}: {first_line}",
        fix="this layout needs an exact rewrite in edgeprune/prune/rewrites.py; report the model",
    )


def protected_layers(loaded: LoadedModel, graph: tpa.DependencyGraph) -> list[nn.Module]:
    """Layers whose output channels are never pruned (their input channels still may be)."""
    return kept_layers(loaded) + output_layers(graph)


def kept_layers(loaded: LoadedModel) -> list[nn.Module]:
    """Protected layers known from the model's structure, without a graph: torch-pruning must not even build
    their groups, whose search explodes through the heads' reshapes (Darknet [yolo] inputs, ultralytics Detect,
    the head split of ultralytics Attention)."""
    kept: list[nn.Module] = list(loaded.family.kept_layers(loaded.module))
    for module_name, class_name in _KEPT_WHOLE:
        kept += _instances(loaded.module, module_name, class_name)
    for head in _instances(loaded.module, "ultralytics.nn.modules.head", "Detect"):
        # the walk from the outputs stops at the DFL convolution, before the box branch's last convolutions
        kept += [branch[-1] for branch in (*head.cv2, *head.cv3)] + [head.dfl]
    return kept


def output_layers(graph: tpa.DependencyGraph) -> list[nn.Module]:
    """The layers computing the model's outputs: the graph's sinks (every traced node is an ancestor of one),
    or the nearest convolutions/linear layers upstream of them."""
    return _nearest_layers([n for n in graph.module2node.values() if not n.outputs], include_start=True)


def _nearest_layers(nodes: list, *, include_start: bool) -> list[nn.Module]:
    """The convolutions/linear layers nearest upstream of `nodes` (or the nodes themselves, with include_start),
    walking back through parameter-free ops and normalisations (which keep channels)."""
    found: list[nn.Module] = []
    seen: set[int] = set()
    stack: list = []

    def visit(node) -> None:
        seen.add(id(node))
        if isinstance(node.module, _PARAMETRIC):
            found.append(node.module)
        else:
            stack.append(node)

    for node in nodes:
        visit(node) if include_start else stack.append(node)
    while stack:
        for source in stack.pop().inputs:
            if id(source) not in seen:
                visit(source)
    return found


def check_channel_splits(loaded: LoadedModel, graph: tpa.DependencyGraph, protected: list[nn.Module]) -> None:
    """Refuse a model where a prunable layer's output is split along channels in a way torch-pruning maps wrongly.

    torch-pruning gives the i-th *discovered* reader of a split the i-th part's channels; that is right only when
    every part is read and discovery order is part order. Otherwise it would prune the wrong channels silently.
    """
    kept = {id(m) for layer in protected for m in layer.modules()}
    for node in graph.module2node.values():
        if not tpa.is_split(node) or getattr(node.grad_fn, "_saved_dim", 1) != 1:
            continue
        positions = [
            {nr for fn, nr in getattr(reader.grad_fn, "next_functions", ()) if fn is node.grad_fn}
            for reader in node.outputs
        ]
        if all(p == {i} for i, p in enumerate(positions)):
            continue
        producers = [m for m in _nearest_layers([node], include_start=False) if id(m) not in kept]
        if producers:
            name = tpa.module_names(graph).get(producers[0], type(producers[0]).__name__)
            raise ModelError(
                f"{loaded.spec}: the output of {name} is split along channels (torch.chunk/split) in a way "
                "torch-pruning maps to the wrong channels",
                fix="this layout needs an exact rewrite in edgeprune/prune/rewrites.py; report the model",
            )


def min_channels(width: int, round_to: int | None) -> int:
    """The fewest channels a layer of `width` keeps: one hardware step (or 1), never more than it has."""
    return min(width, round_to or 1)
