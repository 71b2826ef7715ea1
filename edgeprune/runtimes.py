"""The runtimes edgeprune knows, by name, with what is known of each without importing its toolchain: the one list
that the backends registry (edgeprune.backends), target profiles (edgeprune.devices) and the command line's choices
read. It sits outside both packages because the backends import devices (TensorRT builds its engine on the device),
so devices may not import the backends; it imports nothing, so `edgeprune --help` stays fast.

The on-device agent keeps its own table (targets/agent.py `RUNTIMES`: it runs without edgeprune installed);
tests/test_registries.py checks that it names the same runtimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Runtime:
    """A runtime's facts, which its backend class takes (`Backend.__init_subclass__`) rather than restates."""

    backend: str  # "module:Class" of its backend, imported on use
    format: str  # what `export --format` calls its files, and an Artifact's `format`
    suffixes: tuple[str, ...]  # file types of its artifacts; the first is the one export writes
    precisions: tuple[str, ...]


# runtime name (a profile's `runtime`, `--runtime`, the agent's) -> its facts
RUNTIMES = {
    "onnxruntime": Runtime("edgeprune.backends.onnxruntime:OnnxRuntimeBackend", "onnx", (".onnx",), ("fp32",)),
    "openvino": Runtime("edgeprune.backends.openvino:OpenVinoBackend", "openvino", (".xml",), ("fp32", "fp16", "int8")),
    "tflite": Runtime("edgeprune.backends.tflite:TfliteBackend", "tflite", (".tflite",), ("fp32", "fp16", "int8")),
    "tensorrt": Runtime(
        "edgeprune.backends.tensorrt:TensorrtBackend", "tensorrt", (".engine", ".plan"), ("fp32", "fp16", "int8")
    ),
}


def runtime_names() -> tuple[str, ...]:
    return tuple(RUNTIMES)


def format_runtimes() -> dict[str, str]:
    """Export format -> the runtime that runs it."""
    return {runtime.format: name for name, runtime in RUNTIMES.items()}


def precision_names() -> tuple[str, ...]:
    """Every precision some runtime supports, sorted."""
    return tuple(sorted({p for runtime in RUNTIMES.values() for p in runtime.precisions}))


def runtime_of_file(path: Path) -> str | None:
    """The runtime whose artifacts have this file type, or None."""
    return next((name for name, runtime in RUNTIMES.items() if path.suffix in runtime.suffixes), None)


def artifact_suffixes() -> str:
    """Every artifact file type with its runtime, for messages: ".onnx (onnxruntime), .xml (openvino), ..."."""
    return ", ".join(f"{'/'.join(r.suffixes)} ({name})" for name, r in RUNTIMES.items())
