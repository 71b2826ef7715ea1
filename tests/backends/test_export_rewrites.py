import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgeprune.backends._export_rewrites import ZeroPadByConcat, rewrite_for_export
from edgeprune.backends.onnxruntime import OnnxRuntimeBackend
from edgeprune.models.base import LoadedModel, image_input
from edgeprune.types import Preprocessing


class PadThenPool(nn.Module):
    """ultralytics yolov3-tiny's stride-1 max-pool: zero pad right/bottom, 2×2 pool."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.pad.f = -1  # a routing attribute, as ultralytics sets on every layer
        self.pool = nn.MaxPool2d(2, 1)

    def forward(self, x):
        return self.pool(self.pad(x))


NEGATIVE = -torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(0))


def test_concat_padding_equals_zeropad():
    for padding in [(0, 1, 0, 1), (2, 0, 1, 3), (1, 1, 1, 1)]:
        assert torch.equal(ZeroPadByConcat(padding)(NEGATIVE), nn.ZeroPad2d(padding)(NEGATIVE))


def test_rewrite_works_on_a_copy_and_keeps_routing_attributes():
    model = PadThenPool()
    rewritten, notes = rewrite_for_export(model)
    assert isinstance(model.pad, nn.ZeroPad2d) and isinstance(rewritten.pad, ZeroPadByConcat)
    assert rewritten.pad.f == -1 and notes == ["pad: ZeroPad2d exported as Concat (ORT Pad→MaxPool fusion bug)"]
    plain = nn.Conv2d(3, 3, 1)
    assert rewrite_for_export(plain) == (plain, [])


def test_exported_pad_then_pool_matches_pytorch_on_onnxruntime(tmp_path):
    model = LoadedModel(
        PadThenPool().eval(), "python:test", "classification", image_input(6, 5), Preprocessing(crop=(6, 5))
    )
    artifact = OnnxRuntimeBackend().export(model, tmp_path)
    assert "ZeroPad2d exported as Concat" in artifact.exporter
    out = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"]).run(
        None, {"input": NEGATIVE.numpy()}
    )[0]
    np.testing.assert_array_equal(out, model.module(NEGATIVE).numpy())


def test_the_onnxruntime_bug_the_rewrite_avoids_is_there_before_1_32(tmp_path):
    """ORT's Pad→MaxPool fusion gets this wrong in 1.31.1 and right in 1.32.0 (both measured). The rewrite stays for
    devices on older runtimes; if an older runtime stops showing the bug here, the version bound is wrong."""
    path = tmp_path / "plain.onnx"
    torch.onnx.export(
        PadThenPool().eval(), (NEGATIVE,), str(path), input_names=["x"], dynamo=True, external_data=False, verbose=False
    )
    fused = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": NEGATIVE.numpy()})[0]
    version = tuple(int(part) for part in ort.__version__.split(".")[:2])
    assert np.array_equal(fused, PadThenPool()(NEGATIVE).numpy()) == (version >= (1, 32)), ort.__version__
