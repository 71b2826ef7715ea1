"""The runtimes edgeprune knows, by name, each with its backend class: the one list that the backends registry
(edgeprune.backends) and target profiles (edgeprune.devices) read. It sits outside both packages because the
backends import devices (TensorRT builds its engine on the device), so devices may not import the backends.

The on-device agent keeps its own table (targets/agent.py `RUNTIMES`: it runs without edgeprune installed);
tests/test_registries.py checks that it names the same runtimes.
"""

from __future__ import annotations

# runtime name (a profile's `runtime`, `--runtime`, the agent's) -> "module:Class" of its backend, imported on use
BACKENDS = {
    "onnxruntime": "edgeprune.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgeprune.backends.openvino:OpenVinoBackend",
    "tflite": "edgeprune.backends.tflite:TfliteBackend",
    "tensorrt": "edgeprune.backends.tensorrt:TensorrtBackend",
}


def runtime_names() -> tuple[str, ...]:
    return tuple(BACKENDS)
