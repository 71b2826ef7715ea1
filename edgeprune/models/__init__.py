"""Model families, one module each. `load_model(spec)` dispatches on the `family:` prefix of a model spec."""

from __future__ import annotations

import importlib
from pathlib import Path

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models.base import LoadedModel, LoadOptions
from edgeprune.models.family import FAMILIES, SUFFIX_FAMILIES, ModelFamily, family_named

# every kind of spec `load_model` accepts (FAMILIES' prefixes, SUFFIX_FAMILIES' file types, saved directories): the
# error messages' list and `--model`'s help; tests/models/test_spec_forms.py checks it names each
SPEC_FORMS = (
    "torchvision:<name>, cifar:resnet20|32|44|56|110, python:package.module:callable, a Darknet <file>.cfg "
    "(darknet:<file>.cfg), an ultralytics <file>.pt or model yaml such as yolov8n.yaml or <file>.yml "
    "(ultralytics:<file>), or a saved pruned model directory (edgeprune:<dir>)"
)

__all__ = ["FAMILIES", "LoadOptions", "LoadedModel", "ModelFamily", "family_named", "load_model", "saved_directory"]


def load_model(spec: str, options: LoadOptions | None = None) -> LoadedModel:
    options = options or LoadOptions()
    family, sep, name = spec.partition(":")
    if sep and family in FAMILIES:
        if not name:
            raise ModelError(f"model spec {spec!r} names no model", expected=f"one of {SPEC_FORMS}")
        return importlib.import_module(FAMILIES[family]).load(name, options)
    directory = saved_directory(spec)
    if directory is not None:
        from edgeprune.models.saved import load_pruned

        return load_pruned(directory, options)
    path = Path(spec)
    if not sep and path.suffix in SUFFIX_FAMILIES:
        return importlib.import_module(FAMILIES[SUFFIX_FAMILIES[path.suffix]]).load(spec, options)
    if path.exists():
        raise ModelError(
            f"model file {spec} is not a format edgeprune loads yet",
            expected=f"a model spec ({SPEC_FORMS})",
        )
    if sep and "/" not in family and "." not in family:
        raise UnknownName("model family", family, FAMILIES, fix=f"use one of {SPEC_FORMS}")
    raise ModelError(f"model file not found: {spec}", fix=f"check the path, or use a model spec ({SPEC_FORMS})")


def saved_directory(spec: str) -> str | None:
    """The folder a spec names as a saved pruned model (`edgeprune:DIR`, or a directory), else None."""
    family, sep, name = spec.partition(":")
    if family == "edgeprune":
        return name
    return spec if not sep and Path(spec).is_dir() else None
