"""The backends edgeprune knows, by name. A new runtime = one module + one line here."""

from __future__ import annotations

import importlib

from edgeprune.backends.base import Backend
from edgeprune.errors import UnknownName

# name -> "module:Class"
_BACKENDS = {
    "onnxruntime": "edgeprune.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgeprune.backends.openvino:OpenVinoBackend",
    "tflite": "edgeprune.backends.tflite:TfliteBackend",
    "tensorrt": "edgeprune.backends.tensorrt:TensorrtBackend",
}


def backend_names() -> list[str]:
    return list(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend for a runtime name (as in a target profile)."""
    if name not in _BACKENDS:
        raise UnknownName("runtime", name, _BACKENDS)
    module_name, _, cls = _BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), cls)()


def formats() -> dict[str, str]:
    """Export format -> backend name."""
    return {get_backend(name).format: name for name in _BACKENDS}


def backend_for_format(fmt: str) -> Backend:
    table = formats()
    if fmt not in table:
        raise UnknownName("export format", fmt, table)
    return get_backend(table[fmt])
