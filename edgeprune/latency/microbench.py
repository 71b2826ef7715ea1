"""The layers a latency lookup table covers, and single-layer models that time them on the target's runtime.

Every convolution and linear layer of a model is described by a `LayerSignature` (everything about it except its
channel counts: kernel, stride, padding, input size, the activation the runtime fuses into it, …) plus its input
and output widths. A table entry is one signature at one (in, out) width pair, timed as a one-layer model: the
convolution with a bias (inference runtimes fold batch norm into it) followed by its activation, batch 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from edgeprune.fileio import writing
from edgeprune.models.base import LoadedModel
from edgeprune.types import Record

OPSET = 17
_NORMS = (F.batch_norm,)  # folded into the layer by inference runtimes


def _activation_op(func, args, kwargs) -> tuple[str, float] | None:
    """The ONNX op (and LeakyRelu slope) of a torch activation call, or None if `func` is not one."""
    if func in (F.relu, torch.relu, torch.relu_):
        return "Relu", 0.0
    if func is F.leaky_relu:
        return "LeakyRelu", float(args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01))
    if func is F.hardtanh:
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        return ("Clip6", 0.0) if (low, high) == (0.0, 6.0) else None
    named = {F.silu: "SiLU", F.hardswish: "HardSwish", F.hardsigmoid: "HardSigmoid", F.mish: "Mish",
             torch.sigmoid: "Sigmoid", F.sigmoid: "Sigmoid", torch.tanh: "Tanh", F.tanh: "Tanh"}  # fmt: skip
    return (named[func], 0.0) if func in named else None


@dataclass(frozen=True)
class LayerSignature(Record):
    """A convolution or linear layer without its widths. For `linear`, `height` is the number of rows it is applied
    to (tokens × batch) and `width` is 1."""

    kind: str  # conv | depthwise | linear
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1  # for grouped (not depthwise) convolutions, kept fixed
    height: int = 1
    width: int = 1
    activation: str = ""  # an ONNX op (see _activation_op; "Clip6" is ReLU6) or "" for none
    alpha: float = 0.0  # LeakyRelu's slope

    @property
    def key(self) -> str:
        return self.fingerprint


@dataclass(frozen=True)
class LayerUse:
    """A layer of a concrete model: its module name, signature and widths."""

    name: str
    signature: LayerSignature
    in_channels: int
    out_channels: int


def layer_uses(loaded: LoadedModel) -> list[LayerUse]:
    """The model's convolution and linear layers with the input sizes of one batch-1 inference, in execution
    order. An activation counts as the layer's when it reads the layer's output directly (or through a batch
    norm, which runtimes fold); that is what runtimes fuse. Functional activations (F.relu) count as well: the
    forward is observed at the level of torch functions."""
    module = loaded.module.eval()
    layers = {id(m.weight): (name, m) for name, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    found = _FunctionTrace(layers)
    with torch.inference_mode(), found:
        module(*loaded.example_inputs(1))
    return [_use(name, layer, shape, found.activation.get(name)) for name, layer, shape in found.calls]


class _FunctionTrace(TorchFunctionMode):
    """Records conv/linear calls of known layers, and the activation applied directly to each one's output."""

    def __init__(self, layers: dict[int, tuple[str, nn.Module]]):
        super().__init__()
        self.layers = layers
        self.calls: list[tuple[str, nn.Module, tuple[int, ...]]] = []
        self.activation: dict[str, tuple[str, float]] = {}
        self._producer: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) -> (layer, output kept alive)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        if func in (F.conv2d, torch.conv2d, F.linear) and len(args) > 1 and id(args[1]) in self.layers:
            name, layer = self.layers[id(args[1])]
            self.calls.append((name, layer, tuple(args[0].shape)))
            self._producer[id(output)] = (name, output)
        elif args and isinstance(args[0], torch.Tensor) and self._reads_layer(args[0]):
            name = self._producer[id(args[0])][0]
            if func in _NORMS or func is torch.batch_norm:
                self._producer[id(output)] = (name, output)
            else:
                op = _activation_op(func, args, kwargs)
                if op is not None:
                    self.activation.setdefault(name, op)
        return output

    def _reads_layer(self, tensor: torch.Tensor) -> bool:
        entry = self._producer.get(id(tensor))
        return entry is not None and entry[1] is tensor


def _use(name: str, layer: nn.Module, input_shape: tuple[int, ...], act: tuple[str, float] | None) -> LayerUse:
    op, alpha = act or ("", 0.0)
    if isinstance(layer, nn.Linear):
        rows = math.prod(input_shape[:-1])
        signature = LayerSignature("linear", height=rows, activation=op, alpha=alpha)
        return LayerUse(name, signature, layer.in_features, layer.out_features)
    depthwise = layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels
    if isinstance(layer.padding, str):  # "same"/"valid": the effective padding of this size
        padding = tuple(d * (k - 1) // 2 for d, k in zip(layer.dilation, layer.kernel_size)) if layer.padding == "same" \
            else (0, 0)  # fmt: skip
    else:
        padding = tuple(layer.padding)
    signature = LayerSignature(
        "depthwise" if depthwise else "conv",
        kernel=tuple(layer.kernel_size), stride=tuple(layer.stride), padding=padding, dilation=tuple(layer.dilation),
        groups=1 if depthwise else layer.groups, height=input_shape[-2], width=input_shape[-1],
        activation=op, alpha=alpha,
    )  # fmt: skip
    return LayerUse(name, signature, layer.in_channels, layer.out_channels)


def width_grid(width: int, step: int, points: int = 5) -> tuple[int, ...]:
    """The widths a layer of `width` channels is timed at: `points` evenly spread multiples of the hardware step
    up to it, and the width itself. Layers narrower than one step are timed at their width only. Not every multiple:
    timed at all eight widths of its 64-channel layers, ResNet-56's table led the planner to widths whose timings
    happened to be low (cell noise is ~10-20 % at tens of µs) and its picks came out 10-17 % optimistic, against 2-9 %
    with these five (1 thread, benchmarks/RESULTS.md)."""
    if width <= step:
        return (width,)
    steps = width // step
    picks = {max(1, round(steps * k / points)) * step for k in range(1, points)}
    return tuple(sorted({w for w in picks if w < width} | {width}))


def single_layer_onnx(signature: LayerSignature, in_channels: int, out_channels: int, path: Path,
                      copies: int = 1) -> Path:  # fmt: skip
    """Write a one-layer ONNX model (random weights, seeded) computing the signature at these widths. With `copies`
    > 1, that many copies of the layer (each its own weights, so no runtime merges them) read the same input and
    their outputs are summed: the runtime executes them one after another in one run, as it does a model's layers
    (see lut.CELL_COPIES for why a table times both forms)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    names = ["W", "B"] + [f"{n}{c}" for c in range(1, copies) for n in ("W", "B")]
    for c in range(copies):
        weight_name, bias_name, y = names[2 * c], names[2 * c + 1], f"y{c}" if copies > 1 else "y"
        if signature.kind == "linear":
            in_shape, out_shape = [signature.height, in_channels], [signature.height, out_channels]
            weight = rng.standard_normal((out_channels, in_channels), dtype=np.float32) / math.sqrt(in_channels)
            nodes.append(helper.make_node("Gemm", ["x", weight_name, bias_name], [f"z{c}"], transB=1))
        else:
            groups = in_channels if signature.kind == "depthwise" else signature.groups
            out_channels = in_channels if signature.kind == "depthwise" else out_channels
            kh, kw = signature.kernel
            weight = rng.standard_normal((out_channels, in_channels // groups, kh, kw), dtype=np.float32)
            weight /= math.sqrt(in_channels // groups * kh * kw)
            ph, pw = signature.padding
            nodes.append(helper.make_node(
                "Conv", ["x", weight_name, bias_name], [f"z{c}"], kernel_shape=[kh, kw],
                strides=list(signature.stride), pads=[ph, pw, ph, pw], dilations=list(signature.dilation),
                group=groups,
            ))  # fmt: skip
            in_shape = [1, in_channels, signature.height, signature.width]
            out_hw = [(size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in
                      zip((signature.height, signature.width), signature.padding, signature.dilation,
                          signature.kernel, signature.stride)]  # fmt: skip
            out_shape = [1, out_channels, *out_hw]
        inits += [numpy_helper.from_array(weight, weight_name),
                  numpy_helper.from_array(np.zeros(out_channels, np.float32), bias_name)]  # fmt: skip
        nodes += _activation_nodes(signature, f"z{c}", y, f"_{c}")
        if not signature.activation:
            nodes.append(helper.make_node("Identity", [f"z{c}"], [y]))
    if copies > 1:
        nodes.append(helper.make_node("Sum", [f"y{c}" for c in range(copies)], ["y"]))
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeprune-lut")
    model.ir_version = 8
    onnx.checker.check_model(model)
    with writing(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def single_layer_model(signature: LayerSignature, in_channels: int, out_channels: int,
                       copies: int = 1) -> LoadedModel:  # fmt: skip
    """The same model as single_layer_onnx, in PyTorch (seeded weights), for the backends that export from PyTorch:
    a table for OpenVINO, TFLite or an int8 precision times cells built by the runtime's own tooling."""
    from edgeprune.types import TensorSpec

    torch.manual_seed(0)
    if signature.kind == "linear":
        shape: tuple[int | str, ...] = (
            ("batch", in_channels) if signature.height == 1 else (signature.height, in_channels)
        )
    else:
        shape = ("batch", in_channels, signature.height, signature.width)
    layers = [nn.Sequential(_torch_layer(signature, in_channels, out_channels), _torch_activation(signature))
              for _ in range(copies)]  # fmt: skip
    module = layers[0] if copies == 1 else _SumOfCopies(layers)
    return LoadedModel(module.eval(), "lut-cell", "cell", (TensorSpec("input", shape),), None)


class _SumOfCopies(nn.Module):
    def __init__(self, copies: list[nn.Module]):
        super().__init__()
        self.copies = nn.ModuleList(copies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([copy(x) for copy in self.copies]).sum(0)


def _torch_layer(signature: LayerSignature, in_channels: int, out_channels: int) -> nn.Module:
    if signature.kind == "linear":
        return nn.Linear(in_channels, out_channels)
    groups = in_channels if signature.kind == "depthwise" else signature.groups
    out_channels = in_channels if signature.kind == "depthwise" else out_channels
    return nn.Conv2d(in_channels, out_channels, signature.kernel, signature.stride, signature.padding,
                     signature.dilation, groups)  # fmt: skip


def _torch_activation(signature: LayerSignature) -> nn.Module:
    return {"Relu": nn.ReLU(), "LeakyRelu": nn.LeakyReLU(signature.alpha), "Clip6": nn.ReLU6(), "SiLU": nn.SiLU(),
            "HardSwish": nn.Hardswish(), "HardSigmoid": nn.Hardsigmoid(), "Mish": nn.Mish(), "Sigmoid": nn.Sigmoid(),
            "Tanh": nn.Tanh(), "": nn.Identity()}[signature.activation]  # fmt: skip


def _activation_nodes(signature: LayerSignature, x: str, y: str, tag: str = "") -> list:
    """The activation's nodes from x to y; `tag` keeps their intermediate names apart when a model has several."""
    from onnx import helper

    op = signature.activation
    if not op:
        return []
    if op == "LeakyRelu":
        return [helper.make_node("LeakyRelu", [x], [y], alpha=signature.alpha)]
    if op == "SiLU":
        return [helper.make_node("Sigmoid", [x], ["s" + tag]), helper.make_node("Mul", [x, "s" + tag], [y])]
    if op == "Mish":
        return [helper.make_node("Softplus", [x], ["sp" + tag]), helper.make_node("Tanh", ["sp" + tag], ["t" + tag]),
                helper.make_node("Mul", [x, "t" + tag], [y])]  # fmt: skip
    if op == "Clip6":
        return [helper.make_node("Constant", [], ["lo" + tag], value_float=0.0),
                helper.make_node("Constant", [], ["hi" + tag], value_float=6.0),
                helper.make_node("Clip", [x, "lo" + tag, "hi" + tag], [y])]  # fmt: skip
    return [helper.make_node(op, [x], [y])]
