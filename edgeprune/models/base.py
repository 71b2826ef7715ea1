"""What every model family returns: the module plus the input and preprocessing facts export and verify need."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgeprune.errors import ModelError
from edgeprune.models.family import ModelFamily, family_of_spec
from edgeprune.types import DetectionHead, Preprocessing, TensorSpec

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LoadOptions:
    weights: str | None = None
    trust_pickle: bool = False
    input_shape: tuple[int, ...] | None = None
    trust_code: bool = False  # run Python code a model file names (a saved plan's python: base, a yaml's eval)


@dataclass
class LoadedModel:
    """A ready-to-run PyTorch module (eval mode, CPU) and how to feed it."""

    module: torch.nn.Module
    spec: str
    task: str
    inputs: tuple[TensorSpec, ...]
    preprocessing: Preprocessing | None
    class_names: tuple[str, ...] | None = None
    weights: str | None = None
    detection: DetectionHead | None = None  # set for task "detection"
    family: ModelFamily | None = None  # the family's hooks; None: the family the spec names (family_of_spec)
    sparsity: str | None = None  # "2:4": its weights hold 2:4 semi-structured sparsity (its prune plan says so)
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.family is None:
            self.family = family_of_spec(self.spec)

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex) over the spec, parameter/buffer names, shapes and values."""
        if self._fingerprint is None:
            import torch

            digest = hashlib.sha256(self.spec.encode())
            for name, tensor in self.module.state_dict().items():
                digest.update(name.encode())
                digest.update(str(tuple(tensor.shape)).encode())
                digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        import torch

        generator = torch.Generator().manual_seed(0)
        return tuple(torch.randn(spec.concrete_shape(batch), generator=generator) for spec in self.inputs)


def untrusted_code(what: str, source: str | Path) -> ModelError:
    """The refusal for a model file that would run Python code the user did not name on the command line."""
    return ModelError(what, fix=f"pass --trust-code only if you trust where {source} came from")


def image_input(height: int, width: int, channels: int = 3) -> tuple[TensorSpec, ...]:
    return (TensorSpec("input", ("batch", channels, height, width)),)


def seeded_init(build: Callable[[], torch.nn.Module], seed: int = 0) -> torch.nn.Module:
    """Random init that is the same on every load, so export and verify of an untrained model agree."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def output_names(count: int) -> list[str]:
    """The names an export gives a model's `count` flattened outputs (what verify and its reports call them)."""
    return ["output"] if count == 1 else [f"output{i}" for i in range(count)]


def tensor_outputs(outputs) -> list:
    """A model's output tensors in the order the exporters name them output0, output1, … (non-tensors dropped)."""
    import torch

    return [t for t in flatten_outputs(outputs) if isinstance(t, torch.Tensor)]


def flatten_outputs(outputs) -> list:
    """A module's output (a tensor, or nested lists/tuples/dicts of them) as a flat list of its leaves, in order."""
    if isinstance(outputs, (list, tuple)):
        return [leaf for item in outputs for leaf in flatten_outputs(item)]
    if isinstance(outputs, dict):
        return [leaf for item in outputs.values() for leaf in flatten_outputs(item)]
    return [outputs]
