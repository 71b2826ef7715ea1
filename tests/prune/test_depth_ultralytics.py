import pytest
import torch
from torch import nn

from edgeprune.errors import ConfigError, UnknownName
from edgeprune.models import load_model
from edgeprune.models.base import image_input
from edgeprune.prune.depth import removable_blocks, remove_blocks, replay_blocks
from edgeprune.prune.depth_ultralytics import FoldedC2f
from tests.models.test_ultralytics import _recalibrate_bn
from tests.prune.depth_support import onnxruntime_error, relative_error, run, silence

SIZE = 160  # ultralytics models take any multiple of 32; the exactness does not depend on the size


def _calibrated(spec: str):
    model = load_model(spec)
    _recalibrate_bn(model.module, SIZE)
    return model


def _silence(model, names) -> None:
    for name in names:
        silence(model.module.get_submodule(name).cv2.bn)  # cv2 then outputs SiLU(0) = 0: the block is x


def _x(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))


def test_yolov8n_c2f_bottlenecks_are_folded_exactly():
    model = _calibrated("yolov8n.yaml")
    names = [b.name for b in removable_blocks(model)]
    # the neck's C2f bottlenecks have no shortcut
    assert names == ["model.2.m.0", "model.4.m.0", "model.4.m.1", "model.6.m.0", "model.6.m.1", "model.8.m.0"]
    _silence(model, ["model.4.m.0", "model.4.m.1", "model.6.m.1"])
    before = run(model, _x())
    assert remove_blocks(model, names=["model.4.m.1", "model.6.m.1"]) == ("model.4.m.1", "model.6.m.1")
    c2f = model.module.model[4]
    assert isinstance(c2f, FoldedC2f) and c2f.concat == (0, 1, 2) and c2f.cv2.conv.in_channels == 3 * 32
    assert (c2f.i, c2f.f, c2f.type) == (4, -1, "ultralytics.nn.modules.block.C2f")
    assert remove_blocks(model, n=1) == ("model.4.m.0",)  # folds again, into the already folded C2f
    assert model.module.model[4].concat == (0, 1) and model.module.model[4].cv2.conv.in_channels == 2 * 32
    assert relative_error(run(model, _x()), before) <= 1e-5


def test_yolo11n_c3k2_and_c3k_bottlenecks_are_removed_exactly_and_export(tmp_path):
    model = _calibrated("yolo11n.yaml")
    assert len(removable_blocks(model)) == 11
    removed = ("model.2.m.0", "model.8.m.0.m.1", "model.19.m.0")  # in a C3k2, in a C3k (Sequential), in a C3k2
    _silence(model, removed)
    before = run(model, _x())
    assert remove_blocks(model, n=3) == removed
    assert isinstance(model.module.model[8].m[0].m[1], nn.Identity)
    assert relative_error(run(model, _x()), before) <= 1e-5
    model.inputs = image_input(SIZE, SIZE)  # export at the size tested, not 640
    assert onnxruntime_error(model, tmp_path, _x()) <= 1e-4


def test_yolov3_yaml_backbone_bottlenecks_are_removed_exactly():
    model = _calibrated("yolov3.yaml")
    blocks = removable_blocks(model)
    # Darknet-53's backbone: a lone Bottleneck (model.2), then Sequentials of 2, 8, 8 and 4; the head's have no add
    assert len(blocks) == 23 and blocks[0].name == "model.2" and blocks[-1].name == "model.10.3"
    removed = ("model.2", "model.6.3", "model.10.0")
    _silence(model, removed)
    before = run(model, _x(1))
    assert remove_blocks(model, n=3) == removed
    layer = model.module.model[2]
    assert isinstance(layer, nn.Identity) and (layer.i, layer.f, layer.np) == (2, -1, 0)
    assert relative_error(run(model, _x(1)), before) <= 1e-5


def test_yolov3_tiny_has_no_residual_blocks():
    assert removable_blocks(load_model("yolov3-tiny.yaml")) == []


def test_replay_on_a_fresh_load_gives_the_same_model():
    model = load_model("yolov8n.yaml")
    removed = remove_blocks(model, names=["model.2.m.0", "model.6.m.0", "model.6.m.1"])
    fresh = load_model("yolov8n.yaml")
    replay_blocks(fresh, removed)
    assert fresh.fingerprint == model.fingerprint
    with pytest.raises(UnknownName, match="unknown removable block 'model.6.m.0'"):  # it is gone
        remove_blocks(fresh, names=["model.6.m.0"])


def test_a_c2f_whose_channels_changed_is_not_folded_blindly():
    model = load_model("yolov8n.yaml")
    model.module.model[2].cv1.conv = nn.Conv2d(16, 30, 1)  # as if cv1 had been channel-pruned first
    with pytest.raises(ConfigError, match=r"model.2.cv2 takes 48 channels in 1 groups, not 3 x 15"):
        remove_blocks(model, names=["model.2.m.0"])
