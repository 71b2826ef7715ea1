import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import ConfigError, UnknownName
from edgeprune.models import LoadOptions, load_model
from edgeprune.prune.depth import removable_blocks, remove_blocks, replay_blocks
from edgeprune.verify.data import ImageFolder
from edgeprune.verify.metrics import topk_accuracy
from tests.conftest import asset
from tests.prune.depth_support import onnxruntime_error, run, silence

CIFAR_X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_cifar_resnet_candidates_are_the_blocks_with_an_identity_shortcut():
    blocks = removable_blocks(load_model("cifar:resnet56"))
    names = [b.name for b in blocks]
    # 27 blocks; the first of layer2 and layer3 downsample (zero-pad shortcut)
    assert len(names) == 25 and "layer2.0" not in names and "layer3.0" not in names and names[0] == "layer1.0"
    assert {b.score for b in blocks} == {1.0}  # a fresh BatchNorm has γ = 1
    assert blocks[0].params == 2 * (16 * 16 * 9 + 2 * 16)


def test_cifar_silenced_blocks_rank_first_and_leave_the_outputs_unchanged():
    model = load_model("cifar:resnet56")
    silenced = ["layer1.3", "layer2.5", "layer3.8"]
    for name in silenced:
        silence(model.module.get_submodule(name).bn2)
    before, fingerprint = run(model, CIFAR_X), model.fingerprint
    assert remove_blocks(model, n=3) == tuple(silenced)
    assert all(isinstance(model.module.get_submodule(name), nn.Identity) for name in silenced)
    assert np.abs(run(model, CIFAR_X) - before).max() <= 1e-6
    assert model.fingerprint != fingerprint and len(removable_blocks(model)) == 22


@pytest.fixture(scope="module")
def cifar_test_batches():
    model = load_model("cifar:resnet56")
    data = ImageFolder.scan(asset("datasets/cifar10_test_jpg/test"), model.class_names).subset(1000)
    return list(data.batches(model.preprocessing, 250))


def _top1(model, batches) -> float:
    with torch.inference_mode():
        logits = np.concatenate([model.module(torch.from_numpy(images)).numpy() for images, _ in batches])
    return topk_accuracy(logits, np.concatenate([labels for _, labels in batches]), 1)


def test_resnet56_checkpoint_still_classifies_without_fine_tuning(cifar_test_batches):
    weights = str(asset("weights/cifar10_resnet/resnet56-4bfd9763.th"))
    model = load_model("cifar:resnet56", LoadOptions(weights=weights))
    ranked = remove_blocks(load_model("cifar:resnet56", LoadOptions(weights=weights)), n=8)
    accuracy, removed = {}, []
    for n in (2, 4, 8):  # the ranking does not change as blocks go, so removing step by step is the same
        removed += remove_blocks(model, n=n - len(removed))
        accuracy[n] = _top1(model, cifar_test_batches)
        print(f"resnet56 without {removed}: top-1 {accuracy[n]:.3f} on 1000 CIFAR-10 test JPEGs")
    assert sorted(removed) == sorted(ranked) and accuracy[2] > 0.5


def test_cifar_resnet_with_blocks_removed_exports_and_matches_onnxruntime(tmp_path):
    model = load_model("cifar:resnet20")
    remove_blocks(model, names=["layer1.1", "layer3.2"])
    assert onnxruntime_error(model, tmp_path, CIFAR_X) <= 1e-4


@pytest.mark.parametrize(("name", "count", "last_bn"), [("resnet18", 5, "bn2"), ("resnet50", 12, "bn3")])
def test_torchvision_resnet_silenced_blocks_are_removed_exactly(name, count, last_bn):
    model = load_model(f"torchvision:{name}")
    blocks = removable_blocks(model)
    assert len(blocks) == count and all(model.module.get_submodule(b.name).downsample is None for b in blocks)
    silenced = [blocks[1].name, blocks[-1].name]
    for block in silenced:
        silence(getattr(model.module.get_submodule(block), last_bn))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    before = run(model, x)
    assert remove_blocks(model, n=2) == tuple(silenced)
    assert np.abs(run(model, x) - before).max() <= 1e-6


def test_torchvision_resnet_with_blocks_removed_exports_and_matches_onnxruntime(tmp_path):
    model = load_model("torchvision:resnet18")
    assert remove_blocks(model, names=["layer1.0", "layer3.1"]) == ("layer1.0", "layer3.1")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    assert onnxruntime_error(model, tmp_path, x) <= 1e-4


def test_replay_on_a_fresh_load_rebuilds_the_same_model():
    pruned = load_model("cifar:resnet32")
    for block in removable_blocks(pruned)[::5]:  # scores that differ, so more than the tie-break decides
        silence(pruned.module.get_submodule(block.name).bn2)
    removed = remove_blocks(pruned, n=4)
    fresh = load_model("cifar:resnet32")
    assert replay_blocks(fresh, removed) == removed
    assert list(fresh.module.state_dict()) == list(pruned.module.state_dict())


def test_more_blocks_than_removable_names_how_many_exist():
    with pytest.raises(ConfigError, match="cannot remove 26 residual blocks: cifar:resnet56 has 25 removable"):
        remove_blocks(load_model("cifar:resnet56"), n=26)


def test_unknown_or_unremovable_name_suggests():
    model = load_model("cifar:resnet20")
    with pytest.raises(UnknownName, match="unknown removable block 'layer1.7': did you mean .*'layer1.1'"):
        remove_blocks(model, names=["layer1.7"])
    with pytest.raises(UnknownName, match="'layer2.0'"):  # downsamples: not removable
        remove_blocks(model, names=["layer2.0"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "either a number of blocks or their names"),
        ({"n": 1, "names": ["layer1.0"]}, "either a number of blocks or their names"),
        ({"n": -1}, "number of blocks to remove is -1"),
        ({"n": 1.5}, "number of blocks to remove is 1.5"),
        ({"names": "layer1.0"}, "must be a list, not the string"),
        ({"names": ["layer1.0", "layer1.0"]}, "given twice: layer1.0"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        remove_blocks(load_model("cifar:resnet20"), **kwargs)


def test_models_without_known_residual_blocks_are_refused_unless_nothing_is_removed():
    model = load_model("torchvision:mobilenet_v3_small")
    with pytest.raises(ConfigError, match="does not know the residual blocks of torchvision:mobilenet_v3_small"):
        removable_blocks(model)
    with pytest.raises(ConfigError, match="does not know"):
        remove_blocks(model, n=1)
    assert remove_blocks(model, n=0) == () and replay_blocks(model, ()) == ()  # a plan without depth pruning
