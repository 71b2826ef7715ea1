import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import ConfigError, UnknownName
from edgeprune.models import load_model
from edgeprune.models.base import LoadedModel, image_input
from edgeprune.prune.channels import prune_channels
from edgeprune.prune.importance import CRITERIA, ApozImportance, make_importance, needs_data


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _tiny(edit) -> LoadedModel:
    module = Tiny().eval()
    with torch.no_grad():
        module.conv1.weight[1] *= 10  # channel 1 has by far the largest filter, so l1 never picks it
        edit(module)
    return LoadedModel(module=module, spec="python:tiny", task="classification", inputs=image_input(8, 8),
                       preprocessing=None)  # fmt: skip


def _data(n=3):
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(n)]


def _removed_from_conv1(model, criterion, data=None) -> tuple[int, ...]:
    plan = prune_channels(model, 0.25, criterion, data=data)  # every group of 4 channels loses one
    return {name: idxs for name, _, idxs in plan.channel_history}["conv1"]


def test_l1_removes_the_zeroed_filter():
    model = _tiny(lambda m: m.conv1.weight[2].zero_())
    assert _removed_from_conv1(model, "l1") == (2,)
    assert model.module.conv1.out_channels == 3 and model.module.conv2.in_channels == 3


def test_bn_removes_the_channel_with_the_smallest_gamma():
    model = _tiny(lambda m: m.bn1.weight.copy_(torch.tensor([1.0, 1e-3, 1.0, 1.0])))
    assert _removed_from_conv1(model, "bn") == (1,)


def test_apoz_removes_the_channel_that_is_always_zero_after_relu():
    def dead_channel(m):
        m.bn1.bias[1] = -100.0  # pre-activation always < 0: ReLU output always 0

    model = _tiny(dead_channel)
    importance = make_importance("apoz", model.module, _data())
    assert importance.apoz[model.module.conv2][1] == 1.0
    assert 0.0 < importance.apoz[model.module.conv2][0] < 1.0
    assert _removed_from_conv1(model, "apoz", data=_data()) == (1,)


def test_apoz_counts_values_at_or_below_zero_for_leaky_activations():
    layer = nn.Linear(2, 1)
    importance = ApozImportance()
    importance.collect(nn.Sequential(nn.LeakyReLU(0.1), layer), [(torch.tensor([[-1.0, 2.0], [0.0, -3.0]]), None)])
    assert importance.apoz[layer].tolist() == [1.0, 0.5]


def test_taylor_removes_the_channel_the_next_layer_ignores():
    model = _tiny(lambda m: m.conv2.weight[:, 1].zero_())  # channel 1 feeds nothing: no effect on the loss
    assert _removed_from_conv1(model, "taylor", data=_data()) == (1,)
    assert all(p.grad is None for p in model.module.parameters())  # gradients are not left behind


def test_taylor_uses_the_given_loss_and_checks_it():
    model = _tiny(lambda m: m.conv2.weight[:, 3].zero_())
    detector = dataclasses.replace(model, task="detection")
    with pytest.raises(ConfigError, match="needs the gradients of a loss.*loss_fn"):
        prune_channels(detector, 0.25, "taylor", data=_data())
    with pytest.raises(ConfigError, match="not a differentiable scalar"):
        prune_channels(detector, 0.25, "taylor", data=_data(), loss_fn=lambda m, b: m(b[0]))
    prune_channels(detector, 0.25, "taylor", data=_data(), loss_fn=lambda m, b: m(b[0]).square().mean())
    assert detector.module.conv1.out_channels == 3


def test_registry_and_data_requirements():
    assert set(CRITERIA) == {"l1", "bn", "taylor", "apoz", "thinet", "random"}
    assert [needs_data(c) for c in ("l1", "bn", "taylor", "apoz", "thinet")] == [False, False, True, True, True]
    with pytest.raises(UnknownName, match="did you mean 'apoz'"):
        needs_data("apox")
    with pytest.raises(ConfigError, match="ranks channels from data"):
        prune_channels(_tiny(lambda m: None), 0.25, "apoz")
    with pytest.raises(ConfigError, match="no batches"):
        prune_channels(_tiny(lambda m: None), 0.25, "apoz", data=[])
    for name in ("apoz", "thinet"):
        with pytest.raises(ConfigError, match="a data batch is a Tensor"):
            prune_channels(_tiny(lambda m: None), 0.25, name, data=[torch.rand(1, 3, 8, 8)])
        with pytest.raises(ConfigError, match="no batches"):
            prune_channels(_tiny(lambda m: None), 0.25, name, data=[])


def test_random_criterion_varies_widths_per_layer_and_is_seeded():
    def widths(seed):
        model = load_model("cifar:resnet20")
        prune_channels(model, 0.4, "random", global_ranking=True, seed=seed)
        return [m.out_channels for m in model.module.modules() if isinstance(m, torch.nn.Conv2d)]

    first, again, other = widths(1), widths(1), widths(2)
    assert first == again != other
    unpruned = [m.out_channels for m in load_model("cifar:resnet20").module.modules() if isinstance(m, torch.nn.Conv2d)]
    kept = {round(w / u, 2) for w, u in zip(first, unpruned) if u > 3}
    assert len(kept) > 3  # layers keep different shares, not one uniform ratio
