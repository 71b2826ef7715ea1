import pytest
import torch

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models import LoadOptions, load_model
from edgeprune.models.cifar import CifarResNet
from edgeprune.verify.data import ImageFolder
from edgeprune.verify.metrics import topk_accuracy

# Parameter counts published in akamaster/pytorch_resnet_cifar10's README.
PUBLISHED_PARAMS = {"resnet20": 0.27e6, "resnet32": 0.46e6, "resnet44": 0.66e6, "resnet56": 0.85e6, "resnet110": 1.7e6}


@pytest.mark.parametrize("name", PUBLISHED_PARAMS)
def test_architecture_has_the_published_parameter_count(name):
    model = load_model(f"cifar:{name}").module
    params = sum(p.numel() for p in model.parameters())
    assert params == pytest.approx(PUBLISHED_PARAMS[name], rel=0.03)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_akamaster_checkpoint_loads_safely_and_classifies(resnet20_weights, cifar_test_dir):
    model = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights)))
    data = ImageFolder.scan(cifar_test_dir, model.class_names).subset(300)
    images, labels = zip(*data.batches(model.preprocessing, 300))
    with torch.inference_mode():
        logits = model.module(torch.from_numpy(images[0])).numpy()
    # akamaster publishes 8.27 % error on the exact CIFAR pixels; the JPEG copy costs a few points.
    assert topk_accuracy(logits, labels[0], 1) > 0.80


def test_random_init_is_the_same_on_every_load():
    assert load_model("cifar:resnet20").fingerprint == load_model("cifar:resnet20").fingerprint


def test_truncated_checkpoint_is_a_model_error(resnet20_weights, tmp_path):
    truncated = tmp_path / "cut.th"
    truncated.write_bytes(resnet20_weights.read_bytes()[:50_000])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_model("cifar:resnet20", LoadOptions(weights=str(truncated)))


class _Payload:
    """Stands for arbitrary code in a pickle."""


def test_pickled_objects_need_trust_pickle(tmp_path):
    path = tmp_path / "evil.pt"
    state = CifarResNet(3).state_dict()
    torch.save({"state_dict": state, "extra": _Payload()}, path)
    with pytest.raises(ModelError, match="--trust-pickle"):
        load_model("cifar:resnet20", LoadOptions(weights=str(path)))
    loaded = load_model("cifar:resnet20", LoadOptions(weights=str(path), trust_pickle=True))
    assert torch.equal(loaded.module.conv1.weight, state["conv1.weight"])


def test_weights_for_another_depth_name_the_mismatch(resnet20_weights):
    with pytest.raises(ModelError, match="do not fit the model: .* missing"):
        load_model("cifar:resnet56", LoadOptions(weights=str(resnet20_weights)))


def test_unknown_depth_suggests():
    with pytest.raises(UnknownName, match="resnet56"):
        load_model("cifar:resnet65")


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelError, match="state dict of tensors"):
        load_model("cifar:resnet20", LoadOptions(weights=str(path)))
