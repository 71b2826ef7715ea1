"""Lottery-ticket rewinding: `train --rewind-to` keeps the early checkpoint, `prune --rewind` puts its values back
into the weights that survive pruning (real ResNet-20, real images)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from edgeprune.models import LoadOptions, load_model
from edgeprune.models.saved import load_pruned, save_state_dict
from edgeprune.prune.depth import replay_blocks
from edgeprune.prune.reconstruct import kept_channels
from edgeprune.types import PrunePlan
from tests.conftest import asset, run_cli


def test_train_keeps_the_weights_of_the_rewind_epoch(resnet20_weights, small_cifar, tmp_path):
    out = tmp_path / "t"
    result = run_cli("train", "--model", "cifar:resnet20", "--weights", resnet20_weights, "--data", small_cifar,
                     "--epochs", "2", "--batch-size", "16", "--rewind-to", "0", "--out", out, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    rewind = load_file(summary["rewind_weights"]["0"])
    start = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights))).module.state_dict()
    final = load_file(summary["weights"])
    assert all(torch.equal(rewind[k], start[k]) for k in start)  # epoch 0: the weights training started from
    assert not all(torch.equal(final[k], start[k]) for k in start)
    late = run_cli("train", "--model", "cifar:resnet20", "--data", small_cifar, "--epochs", "2", "--rewind-to", "2",
                   "--out", tmp_path / "u")  # fmt: skip
    assert late.code == 2 and "--rewind-to 2 is not before the end of 2 epochs" in late.stderr


def test_rewinding_puts_the_checkpoint_values_into_the_surviving_weights(resnet20_weights, tmp_path):
    early = load_model("cifar:resnet20")  # an early checkpoint: the network as it was before training
    torch.manual_seed(3)
    for parameter in early.module.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    checkpoint = save_state_dict(early.module, tmp_path / "rewind-epoch0.safetensors")
    out = tmp_path / "p"
    result = run_cli("prune", "--model", "cifar:resnet20", "--weights", resnet20_weights, "--ratio", "0.3",
                     "--blocks", "1", "--rewind", checkpoint, "--out", out, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    plan = PrunePlan.from_dict(json.loads(result.stdout))
    assert plan.rewound_to == str(checkpoint) and plan.removed_blocks
    pruned = load_pruned(out).module
    trained = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights)))
    before = copy.deepcopy(trained)
    replay_blocks(before, plan.removed_blocks)  # as channel pruning found it
    kept = kept_channels(before, plan)
    early_state, trained_state = early.module.state_dict(), trained.module.state_dict()
    for name in ("conv1", "layer1.1.conv1", "layer2.2.conv2", "layer3.0.conv1", "linear"):
        outputs, inputs = kept[name]
        weight = pruned.get_submodule(name).weight
        assert torch.equal(weight, early_state[f"{name}.weight"][outputs][:, inputs]), name  # rewound
        assert not torch.equal(weight, trained_state[f"{name}.weight"][outputs][:, inputs]), name
    bn = pruned.get_submodule("layer1.1.bn1")
    assert torch.equal(bn.weight, early_state["layer1.1.bn1.weight"][kept["layer1.1.conv1"][0]])


@pytest.mark.parametrize("flags", [("--reconstruct", "--data", "{data}"), ()])
def test_a_rewind_that_cannot_apply_is_one_line(resnet20_weights, small_cifar, tmp_path, flags):
    other = asset("weights/cifar10_resnet").glob("resnet32-*.th")
    checkpoint = next(iter(other))
    args = [f.format(data=small_cifar) for f in flags]
    if flags:  # the right network, but refitting and rewinding both rewrite the weights
        checkpoint = resnet20_weights
    result = run_cli("prune", "--model", "cifar:resnet20", "--weights", resnet20_weights, "--trust-pickle", "--ratio",
                     "0.3", "--rewind", checkpoint, *args, "--out", tmp_path / "p")  # fmt: skip
    said = "--rewind replaces the weights --reconstruct would refit" if flags else f"--rewind {checkpoint}: weights"
    assert result.code == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr
