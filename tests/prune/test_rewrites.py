import pytest
import torch

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models import load_model
from edgeprune.models.darknet import layers as L
from edgeprune.prune import rewrites
from edgeprune.prune.rewrites import apply_rewrites, replay_rewrites
from tests.conftest import asset
from tests.models.test_ultralytics import _recalibrate_bn as recalibrate_bn


def _outputs_before_and_after(model, size):
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = model.module(x)
        names = apply_rewrites(model)
        after = model.module(x)
    assert (before[0] - before[1]).abs().max() > 1e-3  # the outputs depend on the input
    return names, before, after


@pytest.mark.parametrize(("yaml_name", "expected"), [
    ("yolov8n.yaml", ("ultralytics-c2f-split-cv1",)),
    ("yolo11n.yaml", ("ultralytics-c2f-split-cv1", "ultralytics-c2psa-split-cv1")),
])  # fmt: skip
def test_ultralytics_c2f_c3k2_c2psa_rewrites_are_exact(yaml_name, expected):
    from ultralytics.nn.modules.block import C2PSA, C2f

    model = load_model(yaml_name)
    recalibrate_bn(model.module, 256)
    params = sum(p.numel() for p in model.module.parameters())
    originals = {i: type(m).__name__ for i, m in enumerate(model.module.model)}
    names, before, after = _outputs_before_and_after(model, 256)
    assert names == expected
    assert torch.allclose(after, before, atol=1e-5, rtol=0)
    assert not any(isinstance(m, (C2f, C2PSA)) for m in model.module.modules())
    assert sum(p.numel() for p in model.module.parameters()) == params
    for i, m in enumerate(model.module.model):  # ultralytics routes through these attributes
        assert (m.i, m.type.rsplit(".", 1)[-1]) == (i, originals[i]) and hasattr(m, "f") and hasattr(m, "np")
    assert apply_rewrites(model) == ()  # nothing left to rewrite


def test_darknet_grouped_route_rewrite_is_exact():
    model = load_model(str(asset("darknet/alexeyab/yolov4-tiny.cfg")))
    recalibrate_bn(model.module, 416)
    names, before, after = _outputs_before_and_after(model, 416)
    assert names == ("darknet-grouped-route-parts",)
    assert torch.allclose(after, before, atol=1e-5, rtol=0)
    blocks = model.module.blocks
    assert [b.index for b in blocks if isinstance(b, rewrites.PartsConvolutional)] == [2, 10, 18]
    assert all(isinstance(b, rewrites.PartsRoute) for b in blocks if isinstance(b, L.Route) and b.groups > 1)
    assert [c.out_channels for c in rewrites.tied_parts(model.module)[0]] == [32, 32]


def test_cifar_option_a_shortcut_rewrite_is_exact():
    model = load_model("cifar:resnet20")
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.module(x)
        assert apply_rewrites(model) == ("cifar-option-a-shortcut-parts",)
        after = model.module(x)
    assert torch.allclose(after, before, atol=1e-5, rtol=0)
    assert sum(isinstance(m, rewrites.PartsBasicBlock) for m in model.module.modules()) == 2


def test_shufflenet_rewrite_removes_every_shuffle_and_is_exact():
    from edgeprune.prune.rewrite_shufflenet import ShuffleFreeStages

    model = load_model("torchvision:shufflenet_v2_x1_0")
    recalibrate_bn(model.module, 224)
    names, before, after = _outputs_before_and_after(model, 224)
    assert names == ("shufflenet-v2-shuffle-free",)
    assert (after - before).abs().max() <= 1e-5 * (before.max() - before.min())  # summation order only
    stages = model.module.stage2
    assert isinstance(stages, ShuffleFreeStages) and isinstance(model.module.conv5, torch.nn.Identity)
    # stage3's first (stride-2) block reads the whole of stage2's output from parts of its last 4 blocks' ends
    assert len(stages.reads[4]) == 5 and stages.n_slots > 16
    params = sum(p.numel() for p in model.module.parameters())
    assert params == sum(p.numel() for p in load_model("torchvision:shufflenet_v2_x1_0").module.parameters())


def test_models_without_chunks_are_left_alone():
    model = load_model("torchvision:resnet18")
    fingerprint = model.fingerprint
    assert apply_rewrites(model) == ()
    assert model.fingerprint == fingerprint


def test_replay_applies_the_named_rewrites_and_refuses_others():
    made, fresh = load_model("yolov8n.yaml"), load_model("yolov8n.yaml")
    names = apply_rewrites(made)
    replay_rewrites(fresh, names)
    assert fresh.fingerprint == made.fingerprint
    with pytest.raises(UnknownName, match="did you mean 'ultralytics-c2f-split-cv1'"):
        replay_rewrites(load_model("yolov8n.yaml"), ["ultralytics-c2f-split"])
    with pytest.raises(ModelError, match="finds nothing to rewrite"):
        replay_rewrites(load_model("cifar:resnet20"), names)


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="registered twice"):
        rewrites.register(rewrites.REWRITES["ultralytics-c2f-split-cv1"])


def test_c2f_rewrite_covers_depth_pruned_c2f():
    from edgeprune.prune.depth import remove_blocks
    from edgeprune.prune.depth_ultralytics import FoldedC2f

    model = load_model("yolov8n.yaml")
    recalibrate_bn(model.module, 256)
    removed = remove_blocks(model, n=3)
    assert any(isinstance(m, FoldedC2f) for m in model.module.modules()), removed
    names, before, after = _outputs_before_and_after(model, 256)
    assert names == ("ultralytics-c2f-split-cv1",)
    assert torch.allclose(after, before, atol=1e-5, rtol=0)
    assert not any(isinstance(m, FoldedC2f) for m in model.module.modules())
