"""A model family's hooks: what the stages ask of a family, in one object per family module.

A stage never tests a spec's prefix or a module's class to learn the family: it asks `loaded.family`. Hooks
implemented in the packages that import this one (depth pruning, rewrites, fine-tuning) are named as
"package.module" or "package.module:function" and imported when used, so `edgeprune.models` imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edgeprune.errors import UnknownName

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from edgeprune.models.base import LoadedModel

# family name (a model spec's prefix) -> the module that loads it (names(), load(name, options)) and holds FAMILY
FAMILIES = {
    "torchvision": "edgeprune.models.torchvision",
    "cifar": "edgeprune.models.cifar",
    "python": "edgeprune.models.python_callable",
    "darknet": "edgeprune.models.darknet",
    "ultralytics": "edgeprune.models.ultralytics",
}
# a bare file name or path is routed by its suffix
SUFFIX_FAMILIES = {".cfg": "darknet", ".pt": "ultralytics", ".yaml": "ultralytics", ".yml": "ultralytics"}
# what any model may be, structurally: the family of a spec no loader claims (a LoadedModel built by hand)
GENERIC = "python"
# the fine-tuner of every classifier, whatever its family
CLASSIFIER_FINETUNER = "edgeprune.train.stages:finetune_classifier_stage"


def _no_files(loaded: LoadedModel, out_dir: Path) -> list[Path]:
    return []


def _no_layers(module: nn.Module) -> list[nn.Module]:
    return []


@dataclass(frozen=True)
class ModelFamily:
    """One family's hooks. Plain data and callables; the defaults are 'this family has none'."""

    name: str
    # depth pruning: modules with knows(module), candidates(module), remove(loaded, names) and optionally
    # block_layers(module, names); the first that knows the network handles it
    depth: tuple[str, ...] = ()
    # names of the exact rewrites (prune/rewrites.py) that may apply to this family; None: try every one
    rewrites: tuple[str, ...] | None = ()
    # "module:function" fine-tuning a detector of this family: (loaded, data, arrays, recipe, teacher, out_dir,
    # progress) -> None
    detection_finetuner: str | None = None
    # files written next to a saved pruned model for the family's own tools (Darknet cfg + weights, a YOLO .pt)
    extra_files: Callable[[LoadedModel, Path], list[Path]] = _no_files
    # layers whose output channels are never pruned, known from the structure (detection heads' inputs)
    kept_layers: Callable[[nn.Module], list[nn.Module]] = _no_layers
    # a detector's raw output (N, A, 4+…) or (N, 4+C, A) -> boxes and class scores as (N, 4+C, A), the layout
    # that NMS reads; None for a family without detectors
    detection_prediction: Callable[[np.ndarray], np.ndarray] | None = None

    def depth_pruning(self, module: nn.Module) -> ModuleType | None:
        """The depth-pruning module that knows this network's residual blocks, or None."""
        for name in self.depth:
            handler = importlib.import_module(name)
            if handler.knows(module):
                return handler
        return None

    def finetuner(self, task: str) -> Callable[..., None] | None:
        """The routine that fine-tunes a model of this family and task, or None where there is none."""
        if task == "classification":
            return lazy(CLASSIFIER_FINETUNER)
        if task == "detection" and self.detection_finetuner:
            return lazy(self.detection_finetuner)
        return None


def lazy(reference: str) -> Callable[..., Any]:
    """The function named "package.module:function", imported when called."""
    module_name, _, attribute = reference.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module_name), attribute)(*args, **kwargs)

    call.__qualname__ = call.__name__ = attribute
    return call


def family_named(name: str) -> ModelFamily:
    """The family registered under `name` (a spec prefix: torchvision, cifar, python, darknet, ultralytics)."""
    if name not in FAMILIES:
        raise UnknownName("model family", name, FAMILIES)
    return importlib.import_module(FAMILIES[name]).FAMILY


def family_of_spec(spec: str) -> ModelFamily:
    """The family a model spec names: its prefix, or a bare file's suffix; any other spec is a generic model.
    The one place a family is inferred rather than set by its loader (a LoadedModel built by hand)."""
    prefix, sep, _ = spec.partition(":")
    if sep and prefix in FAMILIES:
        return family_named(prefix)
    return family_named(SUFFIX_FAMILIES.get(Path(spec).suffix, GENERIC) if not sep else GENERIC)
