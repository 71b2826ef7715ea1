import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from edgeprune.latency.microbench import LayerSignature, layer_uses, single_layer_model, single_layer_onnx, width_grid
from edgeprune.models import LoadOptions, load_model


def test_resnet_layers_with_their_input_sizes_and_fused_activations():
    uses = layer_uses(load_model("cifar:resnet20"))
    assert len(uses) == 1 + 18 + 1  # stem, two convolutions per block, classifier
    stem, first_block_conv1, first_block_conv2, fc = uses[0], uses[1], uses[2], uses[-1]
    assert (stem.in_channels, stem.out_channels, stem.signature.height, stem.signature.activation) == (
        3,
        16,
        32,
        "Relu",
    )
    assert first_block_conv1.signature.activation == "Relu"
    assert first_block_conv2.signature.activation == ""  # its ReLU comes after the residual add: not fusable
    downsampling = [u for u in uses if u.signature.stride == (2, 2)]
    assert [(u.in_channels, u.out_channels, u.signature.height) for u in downsampling] == [(16, 32, 32), (32, 64, 16)]
    assert fc.signature.kind == "linear" and (fc.in_channels, fc.out_channels) == (64, 10)


def test_detector_layers_see_silu_leaky_and_depthwise():
    yolo = layer_uses(load_model("yolov8n.yaml", LoadOptions(input_shape=(1, 3, 160, 160))))
    assert {u.signature.activation for u in yolo} >= {"SiLU", ""}  # Detect's last convolutions have none
    mobile = layer_uses(load_model("torchvision:mobilenet_v3_small"))
    assert any(u.signature.kind == "depthwise" for u in mobile)
    assert {u.signature.activation for u in mobile} >= {"HardSwish", "Relu"}


def test_width_grid_is_on_the_step_and_ends_at_the_width():
    assert width_grid(64, 8) == (16, 24, 40, 48, 64)
    assert width_grid(3, 8) == (3,) and width_grid(8, 8) == (8,)
    assert width_grid(20, 8) == (8, 16, 20)
    assert all(w % 8 == 0 for w in width_grid(1024, 8)[:-1])


SIGNATURES = [
    LayerSignature("conv", (3, 3), (2, 2), (1, 1), height=17, width=15, activation="LeakyRelu", alpha=0.1),
    LayerSignature("depthwise", (5, 5), (1, 1), (2, 2), height=12, width=12, activation="HardSwish"),
    LayerSignature("conv", (1, 1), height=8, width=8, activation="SiLU", groups=2),
    LayerSignature("conv", (3, 3), padding=(1, 1), dilation=(1, 1), height=8, width=8, activation="Clip6"),
    LayerSignature("linear", height=7, activation="Mish"),
    LayerSignature("linear", activation="Relu"),
]


def _onnx_weights(path) -> dict[str, torch.Tensor]:
    return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("signature", SIGNATURES)
def test_single_layer_model_computes_the_layer(signature, tmp_path):
    cin, cout = 8, 12
    path = single_layer_onnx(signature, cin, cout, tmp_path / "layer.onnx")
    weights = _onnx_weights(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = [signature.height, cin] if signature.kind == "linear" else [1, cin, signature.height, signature.width]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = session.run(None, {"x": x})[0]
    xt = torch.from_numpy(x)
    if signature.kind == "linear":
        expected = F.linear(xt, weights["W"], weights["B"])
    else:
        groups = cin if signature.kind == "depthwise" else signature.groups
        expected = F.conv2d(
            xt, weights["W"], weights["B"], signature.stride, signature.padding, signature.dilation, groups
        )
    activation = {"LeakyRelu": lambda t: F.leaky_relu(t, 0.1), "HardSwish": F.hardswish, "SiLU": F.silu,
                  "Clip6": F.relu6, "Mish": F.mish, "Relu": F.relu}[signature.activation]  # fmt: skip
    assert np.allclose(y, activation(expected).numpy(), atol=1e-5)


@pytest.mark.parametrize("copies", [1, 3])
@pytest.mark.parametrize("signature", SIGNATURES)
def test_the_pytorch_cell_is_the_onnx_cell(signature, copies, tmp_path):
    # the cell a PyTorch-exporting backend (OpenVINO, TFLite, int8) times computes what the ONNX cell computes; with
    # copies, both are the sum of that many copies of the layer, each with its own weights (no runtime merges them)
    cin, cout = 8, 12
    path = single_layer_onnx(signature, cin, cout, tmp_path / "layer.onnx", copies)
    weights = _onnx_weights(path)
    assert len({w.numpy().tobytes() for name, w in weights.items() if name.startswith("W")}) == copies
    cell = single_layer_model(signature, cin, cout, copies)
    layers = [cell.module[0]] if copies == 1 else [branch[0] for branch in cell.module.copies]
    with torch.no_grad():
        for c, layer in enumerate(layers):
            layer.weight.copy_(weights[f"W{c or ''}"])
            layer.bias.copy_(weights[f"B{c or ''}"])
    x = cell.example_inputs(1)[0]
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert np.allclose(cell.module(x).detach().numpy(), y, atol=1e-4)
