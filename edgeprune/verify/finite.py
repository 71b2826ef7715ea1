"""Anything non-finite fails a gate: the one count of NaN/Inf values that parity and the PyTorch pre-export check
share, and that check (which names the first layer that produced them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgeprune.errors import ModelError
from edgeprune.models.base import output_names, tensor_outputs

if TYPE_CHECKING:
    from edgeprune.models.base import LoadedModel


def nonfinite_count(values) -> int:
    """How many values are NaN, +Inf or -Inf, in a numpy array or a torch tensor (integer data has none)."""
    if hasattr(values, "detach"):  # a torch tensor: counted in torch, since bfloat16 has no numpy dtype
        import torch

        return int(values.numel() - torch.isfinite(values.detach()).sum())
    values = np.asarray(values)
    return int(values.size - np.count_nonzero(np.isfinite(values))) if values.dtype.kind in "fc" else 0


class NonFiniteOutputs(ModelError):
    """The model's own PyTorch outputs hold NaN/Inf: there is nothing to export or compare a runtime with."""


def refuse_nonfinite_outputs(model: LoadedModel, inputs=None, *, on: str = "a sample input"):
    """The model's PyTorch output on `inputs` (default: its sample input), or ModelError when any value in it is
    NaN/Inf, naming the first layer (in execution order) whose output held non-finite values."""
    import torch

    inputs = model.example_inputs(1) if inputs is None else inputs
    first: list[tuple[str, torch.nn.Module]] = []

    def watch(name):
        def hook(module, _inputs, output):
            if not first and any(nonfinite_count(t) for t in tensor_outputs(output)):
                first.append((name, module))

        return hook

    handles = [m.register_forward_hook(watch(name)) for name, m in model.module.named_modules()]
    try:
        with torch.inference_mode():
            outputs = model.module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    leaves = tensor_outputs(outputs)
    counts = {name: (nonfinite_count(t), t.numel()) for name, t in zip(output_names(len(leaves)), leaves)}
    if any(bad for bad, _ in counts.values()):
        name, module = first[0] if first else ("", model.module)
        layer = f"{name} ({type(module).__name__})" if name else f"the model's own forward ({type(module).__name__})"
        where = ", ".join(f"{output}: {bad} of {size} values NaN/Inf" for output, (bad, size) in counts.items() if bad)
        raise NonFiniteOutputs(
            f"{model.spec} gives non-finite PyTorch outputs on {on} ({where}); the first layer to produce them is "
            f"{layer}",
            expected="finite outputs, which parity is measured against",
            fix="load finite weights (check the weights file for NaN/Inf, or a fine-tune that diverged)",
        )
    return outputs
