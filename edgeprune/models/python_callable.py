"""`python:package.module:callable` — any user model. The callable returns an nn.Module.

The input is declared by `--input-shape`, or by the module attribute `edgeprune_input`, a dict with `shape`
(N, C, H, W) and optionally `mean`, `std`, `resize`, `class_names`, `task`.
"""

from __future__ import annotations

import importlib
import os
import sys

import torch

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models.base import LoadedModel, LoadOptions, image_input
from edgeprune.models.darknet import yolo_head_inputs
from edgeprune.models.family import ModelFamily
from edgeprune.models.weights import load_into, read_state_dict
from edgeprune.types import Preprocessing

# a user's module may be built from any family's layers: each hook tries what it knows, structurally
FAMILY = ModelFamily(
    "python",
    depth=("edgeprune.prune.depth_resnet", "edgeprune.prune.depth_darknet", "edgeprune.prune.depth_ultralytics"),
    rewrites=None,
    kept_layers=yolo_head_inputs,
)


def names() -> list[str]:
    return []


def load(name: str, options: LoadOptions) -> LoadedModel:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ModelError(f"python model spec {name!r} is incomplete", expected="python:package.module:callable")
    factory = getattr(_import(module_name), attr, None)
    if factory is None:
        public = [a for a in dir(sys.modules[module_name]) if not a.startswith("_")]
        raise UnknownName(f"callable in {module_name}", attr, public)
    if not callable(factory):
        raise ModelError(f"{module_name}.{attr} is not callable", expected="a function or class returning an nn.Module")
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{module_name}.{attr}() returned {type(module).__name__}", expected="a torch.nn.Module")
    declared = dict(getattr(sys.modules[module_name], "edgeprune_input", None) or {})
    shape = options.input_shape or declared.get("shape")
    if not shape or len(shape) != 4:
        raise ModelError(
            f"python model {name} does not declare its input",
            expected="an image input (N, C, H, W)",
            fix=f"pass --input-shape 1,3,224,224 or set edgeprune_input = {{'shape': (1, 3, 224, 224)}} in {module_name}",
        )
    if options.weights:
        load_into(module, read_state_dict(options.weights, trust_pickle=options.trust_pickle), options.weights)
    _, channels, height, width = (int(d) for d in shape)
    preprocessing = Preprocessing(
        crop=(height, width),
        resize=declared.get("resize"),
        mean=tuple(declared.get("mean", (0.0,) * channels)),
        std=tuple(declared.get("std", (1.0,) * channels)),
        channel_order="L" if channels == 1 else "RGB",
    )
    names_ = declared.get("class_names")
    return LoadedModel(
        module=module.eval(),
        spec=f"python:{name}",
        task=declared.get("task", "classification"),
        inputs=image_input(height, width, channels),
        preprocessing=preprocessing,
        class_names=tuple(names_) if names_ else None,
        weights=options.weights,
        family=FAMILY,
    )


def _import(module_name: str):
    if os.getcwd() not in sys.path:  # a user's model next to where they run edgeprune
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ModelError(
            f"cannot import {module_name} for the python model ({exc})",
            fix="run edgeprune from the directory that holds the package, or add it to PYTHONPATH",
        ) from None
