"""What int8 export needs besides the runtime's quantizer: calibration images from the user's data, and a ranking of
the layers by how much quantizing each one alone hurts the output (for the report of a failed int8 gate and for
`--keep-float N`).

Sensitivity is measured one layer at a time in PyTorch: the layer's weights are rounded to int8 per output channel
(symmetric) and its input to 8 bits per tensor (range from the calibration images) — close to what nncf's and
ai-edge-quantizer's int8 recipes do, without their refinements (bias correction) — every other layer stays float, and the error is the
relative L2 distance of the model's first output from the float model's on the calibration images. It ranks layers
by their own quantization error only; errors that appear when several layers are quantized together are not seen.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError, ExportError, UnknownName
from edgeprune.models.base import LoadedModel, tensor_outputs
from edgeprune.verify.finite import nonfinite_count, refuse_nonfinite_outputs

CALIBRATION_IMAGES = 256  # nncf's subset_size default is 300; ai-edge-quantizer has none. 256 is plenty for min/max
SENSITIVITY_IMAGES = 64


def calibration_images(model: LoadedModel, data: str | Path, limit: int = CALIBRATION_IMAGES) -> np.ndarray:
    """`limit` preprocessed images (N, C, H, W float32) from the user's data: an ImageFolder for classifiers (spread
    over the classes), the train split of a YOLO data yaml for detectors."""
    from edgeprune.verify.data import ImageFolder, load_image
    from edgeprune.verify.yolo_data import YoloDataset

    if model.preprocessing is None:
        raise ConfigError(f"{model.spec} declares no preprocessing, so calibration images cannot be prepared")
    if not Path(data).exists():
        raise ConfigError(
            f"--data {data} does not exist",
            expected="an ImageFolder directory (classifiers) or a YOLO data yaml (detectors)",
        )
    if model.task == "detection" or str(data).endswith((".yaml", ".yml")):
        paths = YoloDataset.from_yaml(data, split="train").subset(limit).images
    else:
        paths = [path for path, _ in ImageFolder.scan(data, model.class_names).subset(limit).samples]
    return np.stack([load_image(path, model.preprocessing) for path in paths]).astype(np.float32)


@dataclass(frozen=True)
class Layer:
    name: str  # the PyTorch module's qualified name, e.g. layer3.8.conv2
    error: float  # relative L2 error of the model output with only this layer in int8


def quantizable_layers(model: LoadedModel) -> list[str]:
    """The layers int8 quantizers turn into integer kernels: convolutions and fully connected layers."""
    from torch import nn

    return [name for name, m in model.module.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


def check_layer_names(model: LoadedModel, names: tuple[str, ...] | list[str]) -> None:
    known = quantizable_layers(model)
    for name in names:
        if name not in known:
            raise UnknownName(f"quantizable layer of {model.spec}", name, known)


def layer_sensitivity(model: LoadedModel, images: np.ndarray, limit: int = SENSITIVITY_IMAGES) -> list[Layer]:
    """Every quantizable layer with its error when it alone is int8, worst first (see the module docstring)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images[:limit]))
    layers = dict(model.module.named_modules())
    names = quantizable_layers(model)
    if not names:
        return []
    ranges: dict[str, list[float]] = {}

    def observe(name):
        def hook(_module, inputs):
            value = inputs[0].detach()
            low, high = ranges.setdefault(name, [np.inf, -np.inf])
            ranges[name] = [min(low, float(value.min())), max(high, float(value.max()))]

        return hook

    with torch.inference_mode():
        handles = [layers[n].register_forward_pre_hook(observe(n)) for n in names]
        try:
            reference = tensor_outputs(model.module(x))[0].float()
        finally:
            for handle in handles:
                handle.remove()
        if nonfinite_count(reference):  # every error below would be NaN, and NaN sorts anywhere
            refuse_nonfinite_outputs(model, (x,), on=f"{len(x)} calibration images")
        norm = float(reference.norm()) or 1.0
        result = []
        for name in names:
            with _int8_alone(layers[name], *ranges[name]):
                out = tensor_outputs(model.module(x))[0].float()
            # a layer whose int8 rounding alone makes the output NaN/Inf is as sensitive as a layer can be
            error = float((out - reference).norm()) / norm if not nonfinite_count(out) else float("inf")
            result.append(Layer(name, error))
    return sorted(result, key=lambda layer: -layer.error)


@contextlib.contextmanager
def _int8_alone(module, low: float, high: float):
    """The module with int8-rounded weights and 8-bit-rounded input while the block runs; restored afterwards."""
    import torch

    weight = module.weight.data
    saved = weight.clone()
    flat = weight.reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0).reshape(-1, *([1] * (weight.dim() - 1)))
    weight.copy_(torch.clamp(torch.round(weight / scale), -127, 127) * scale)
    low, high = min(low, 0.0), max(high, 0.0)  # zero must be exact, as in both runtimes' affine scheme
    step = (high - low) / 255.0 or 1.0
    zero = round(-low / step)

    def quantize_input(_module, inputs):
        q = torch.clamp(torch.round(inputs[0] / step) + zero, 0, 255)
        return ((q - zero) * step,) + tuple(inputs[1:])

    handle = module.register_forward_pre_hook(quantize_input)
    try:
        yield
    finally:
        handle.remove()
        weight.copy_(saved)


def describe_layers(layers: list[Layer], n: int = 5) -> str:
    return ", ".join(f"{layer.name} ({layer.error:.3g})" for layer in layers[:n])


def onnx_nodes_of_layers(onnx_path: Path, layers: tuple[str, ...], runtime: str) -> dict[str, str]:
    """PyTorch layer name -> the ONNX node that computes it (OpenVINO and TensorRT's ONNX parser keep node names),
    found by its weight initializer's name (`<layer>.weight`, which the dynamo exporter keeps, also after folding
    BatchNorm into the convolution)."""
    import onnx

    if not layers:
        return {}
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    by_weight = {
        node.input[1]: node.name
        for node in graph.node
        if node.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose") and len(node.input) > 1
    }
    found = {layer: by_weight.get(f"{layer}.weight") for layer in layers}
    missing = [layer for layer, node in found.items() if node is None]
    if missing:
        raise ExportError(
            f"cannot find the {runtime} node of layer(s) {', '.join(missing)} to keep in float "
            "(their weights were renamed or folded by the exporter)",
            fix="keep other layers in float, or export fp16/fp32",
        )
    return found
