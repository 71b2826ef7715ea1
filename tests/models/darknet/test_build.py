from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import ModelError
from edgeprune.models import LoadOptions
from edgeprune.models.darknet import layers as L
from edgeprune.models.darknet import load, parse_cfg
from edgeprune.models.darknet.build import DarknetModel, MemoryLimit
from edgeprune.types import DetectionHead, Preprocessing
from tests.conftest import asset


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def darknet_maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """src/maxpool_layer.c forward_maxpool_layer, loop for loop."""
    n, c, h, w = x.shape
    out_h, out_w = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.full((n, c, out_h, out_w), -np.inf, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            for a in range(size):
                for b in range(size):
                    r, q = offset + i * stride + a, offset + j * stride + b
                    if 0 <= r < h and 0 <= q < w:
                        out[:, :, i, j] = np.maximum(out[:, :, i, j], x[:, :, r, q])
    return out


def darknet_yolo(x: np.ndarray, anchors, classes: int, scale_x_y: float, net_wh) -> np.ndarray:
    """src/yolo_layer.c forward (logistic, scale_x_y) + get_yolo_box, as rows over (anchor, row, col)."""
    n, _, h, w = x.shape
    x = x.reshape(n, len(anchors), 5 + classes, h, w)
    rows = []
    for a, (anchor_w, anchor_h) in enumerate(anchors):
        for i in range(h):
            for j in range(w):
                t = x[:, a, :, i, j]
                bx = (j + _sigmoid(t[:, 0]) * scale_x_y - 0.5 * (scale_x_y - 1)) / w
                by = (i + _sigmoid(t[:, 1]) * scale_x_y - 0.5 * (scale_x_y - 1)) / h
                bw, bh = np.exp(t[:, 2]) * anchor_w / net_wh[0], np.exp(t[:, 3]) * anchor_h / net_wh[1]
                box = np.stack([bx * net_wh[0], by * net_wh[1], bw * net_wh[0], bh * net_wh[1]], 1)
                rows.append(np.concatenate([box, _sigmoid(t[:, 4:])], 1))
    return np.stack(rows, 1)


@pytest.mark.parametrize("size, stride, padding, hw", [
    (2, 1, None, 7),  # yolov3-tiny's same-size pool: one row/column of padding after, none before
    (2, 2, None, 7),  # odd input: the last window hangs over the edge
    (3, 2, None, 8),
    (5, 1, None, 6),  # SPP
    (9, 1, None, 5),
    (3, 2, 0, 8),
    (3, 1, 3, 5),
])  # fmt: skip
def test_maxpool_matches_darknets_loops(make_cfg, size, stride, padding, hw):
    extra = "" if padding is None else f"padding={padding}\n"
    model = load(str(make_cfg(f"[maxpool]\nsize={size}\nstride={stride}\n{extra}", w=hw, h=hw)), LoadOptions())
    x = torch.randn(2, 3, hw, hw)
    expected = darknet_maxpool(x.numpy(), size, stride, size - 1 if padding is None else padding)
    got = model.module(x).reshape(expected.shape)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_yolo_rows_decode_like_darknet(make_cfg):
    path = make_cfg(
        """
        [convolutional]
        filters=21
        size=1
        activation=linear
        [yolo]
        mask=2,0,1
        anchors=10,14, 23,27, 37,58
        classes=2
        num=3
        scale_x_y=1.1
    """,
        w=64,
        h=32,
    )
    model = load(str(path), LoadOptions())
    x = torch.randn(2, 3, 32, 64)
    with torch.inference_mode():
        head = model.module.blocks[0](x).numpy()
        got = model.module(x).numpy()
    anchors = [(37, 58), (10, 14), (23, 27)]
    np.testing.assert_allclose(got, darknet_yolo(head, anchors, 2, 1.1, (64, 32)), rtol=1e-5, atol=1e-4)
    assert "grid" not in model.module.state_dict() and model.module.blocks[1].grid.shape == (1, 1, 32, 64, 2)


def test_route_groups_shortcut_upsample_and_classification_output(make_cfg):
    path = make_cfg(
        """
        [convolutional]
        filters=8
        size=3
        pad=1
        activation=mish
        [route]
        layers=-1
        groups=2
        group_id=1
        [shortcut]
        from=-1
        activation=swish
        [upsample]
        stride=2
        [maxpool]
        size=2
        stride=2
        [route]
        layers=0, -1
        [dropout]
        probability=.5
        [maxpool]
        size=2
        stride=2
        [connected]
        output=12
        batch_normalize=1
        activation=relu
        [softmax]
        groups=3
    """,
        w=4,
        h=4,
    )
    loaded = load(str(path), LoadOptions())
    model = loaded.module
    x = torch.randn(2, 3, 4, 4)
    with torch.inference_mode():
        conv = model.blocks[0](x)
        half = conv[:, 4:]
        expected_shortcut = nn.functional.silu(half + half)
        out = model(x)
    assert [type(b).__name__ for b in model.blocks] == [
        "Convolutional", "Route", "Shortcut", "Upsample", "MaxPool", "Route", "Dropout", "MaxPool", "Connected",
        "Softmax",
    ]  # fmt: skip
    assert [b.inputs for b in model.blocks][1:6] == [(0,), (1, 1), (2,), (3,), (0, 4)]
    assert model.output_shapes[:6] == [(8, 4, 4), (4, 4, 4), (4, 4, 4), (4, 8, 8), (4, 4, 4), (12, 4, 4)]
    with torch.inference_mode():
        assert torch.allclose(model.blocks[2](model.blocks[1](conv), model.blocks[1](conv)), expected_shortcut)
    assert out.shape == (2, 12) and torch.allclose(out.view(2, 3, 4).sum(-1), torch.ones(2, 3))
    assert loaded.task == "classification" and loaded.detection is None


def test_loaded_model_describes_a_darknet_detector(make_cfg):
    path = make_cfg(
        """
        [convolutional]
        filters=18
        size=1
        batch_normalize=1
        activation=leaky
        [yolo]
        anchors=4,4, 8,8
        num=2
        classes=4
    """,
        w=32,
        h=16,
    )
    loaded = load(str(path), LoadOptions())
    block = loaded.module.blocks[0]
    assert isinstance(block, L.Convolutional) and isinstance(block.bn, nn.BatchNorm2d)
    assert isinstance(block.act, nn.LeakyReLU) and block.act.negative_slope == 0.1 and block.conv.bias is None
    assert loaded.spec == f"darknet:{path}" and loaded.task == "detection" and loaded.class_names is None
    assert loaded.inputs[0].shape == ("batch", 3, 16, 32)
    assert loaded.detection == DetectionHead("darknet", 4, 0.005, 0.45)
    assert loaded.preprocessing == Preprocessing(
        crop=(16, 32),
        resize=None,
        scale=1 / 255,
        channel_order="RGB",
        interpolation="bilinear-align-corners",
        antialias=False,
        letterbox=False,
    )
    assert loaded.module(torch.zeros(1, 3, 16, 32)).shape == (1, 2 * 16 * 32, 9)
    assert not loaded.module.training
    assert load(str(path), LoadOptions()).fingerprint == loaded.fingerprint


def test_letter_box_and_input_shape(make_cfg):
    path = make_cfg("letter_box=1\n[avgpool]\n")
    assert load(str(path), LoadOptions()).preprocessing.letterbox
    assert load(str(path), LoadOptions(input_shape=(4, 3, 8, 8))).inputs[0].shape == ("batch", 3, 8, 8)
    with pytest.raises(ModelError, match="--input-shape 1,3,16,16 does not match .* which takes 3x8x8"):
        load(str(path), LoadOptions(input_shape=(1, 3, 16, 16)))


def test_yolo_layers_must_agree_on_classes(make_cfg):
    path = make_cfg("""
        [convolutional]
        filters=6
        [yolo]
        anchors=4,4
        classes=1
        [route]
        layers=-2
        [convolutional]
        filters=7
        [yolo]
        anchors=4,4
        classes=2
    """)
    with pytest.raises(ModelError, match=r"disagree on classes= \(\[1, 2\]\)"):
        load(str(path), LoadOptions())


def test_real_cfg_layout_follows_darknet_numbering():
    model = load(str(asset("darknet/alexeyab/yolov4-tiny.cfg")), LoadOptions()).module
    assert len(model.blocks) == 38 and model.sections[0].kind == "net"
    route = model.blocks[3]
    assert isinstance(route, L.Route) and (route.layers, route.groups, route.group_id) == ((2,), 2, 1)
    assert [b.index for b in model.yolo_layers] == [30, 37]
    assert isinstance(model.blocks[29], L.Convolutional) and model.blocks[29].conv.out_channels == 255
    assert [s.kind for s in model.sections[1:]] == [type(b).__name__.lower() for b in model.blocks]


def test_layers_that_cannot_fit_in_memory_are_refused_before_allocating_naming_the_line(make_cfg):
    sections = parse_cfg(make_cfg("""
        [convolutional]
        filters=64
        size=3
        pad=1
        [convolutional]
        filters=64
        size=3
        pad=1
        [maxpool]
        size=64
        """))  # fmt: skip
    first, both = (64 * 3 * 9 + 64) * 4, (64 * 3 * 9 + 64 + 64 * 64 * 9 + 64) * 4  # bytes of parameters
    output = 64 * 8 * 8 * 4
    with pytest.raises(
        ModelError,
        match=r"tiny.cfg line 7: \[convolutional\] \(layer 0\) needs .* MiB .*"
        r"\(1,792 parameters up to it and a 64x8x8 output\).*\(a test\)",
    ):
        DarknetModel(sections, MemoryLimit(first + output - 1, "a test"))
    with pytest.raises(ModelError, match=r"line 11: \[convolutional\] \(layer 1\).*38,720 parameters up to it"):
        DarknetModel(sections, MemoryLimit(both + output - 1, "a test"))  # each layer fits alone, not both
    padded = 64 * (8 + 63) ** 2 * 4  # the pool pads its input by size - 1 = 63 before pooling
    with pytest.raises(ModelError, match=r"line 15: \[maxpool\] \(layer 2\).*a 64x71x71 padded input"):
        DarknetModel(sections, MemoryLimit(both + padded - 1, "a test"))
    DarknetModel(sections, MemoryLimit(both + padded, "a test"))
    with pytest.raises(ModelError, match=r"line 2: \[net\] input needs .*\(a 3x8x8 input\)"):
        DarknetModel(sections, MemoryLimit(3 * 8 * 8 * 4 - 1, "a test"))


def test_the_memory_check_leaves_the_seeded_initialisation_as_it_was(make_cfg):
    """The check builds convolutions on the meta device first; that must not draw from the random generator."""
    model = load(str(make_cfg("[convolutional]\nfilters=4\nsize=3\n[convolutional]\nfilters=2\n")), LoadOptions())
    torch.manual_seed(0)  # seeded_init's seed
    expected = [nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1)]
    for block, conv in zip(model.module.blocks, expected):
        torch.testing.assert_close(block.conv.weight, conv.weight, rtol=0, atol=0)


def test_this_machines_memory_is_read():
    limit = MemoryLimit.of_this_machine()
    total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    assert limit is not None and 0 < limit.bytes <= total and limit.source
