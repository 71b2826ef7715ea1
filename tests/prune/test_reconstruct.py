"""ThiNet's channel choice and the least-squares refit (prune/reconstruct.py) on a real network and real images."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from edgeprune.models import LoadOptions, load_model
from edgeprune.models.saved import load_pruned
from edgeprune.prune.channels import prune_channels_to
from edgeprune.prune.reconstruct import greedy_order_scores, kept_channels, layer_error, reconstruct
from edgeprune.prune.rewrites import replay_rewrites
from edgeprune.verify.data import ImageFolder, load_image
from tests.conftest import run_cli


def _batches(model, folder, every: int, offset: int, n: int = 64) -> list:
    """n real CIFAR-10 test images, every `every`-th from `offset` over the class-sorted list (all classes)."""
    samples = ImageFolder.scan(folder, model.class_names).samples[offset::every][:n]
    images = torch.from_numpy(np.stack([load_image(path, model.preprocessing) for path, _ in samples]))
    return [(images[k : k + 32], None) for k in range(0, len(images), 32)]


def _inner_halved(model) -> dict[str, int]:
    return {f"{name}.conv1": block.conv1.out_channels // 2 for name, block in model.module.named_modules()
            if name.count(".") == 1 and hasattr(block, "conv1")}  # fmt: skip


def test_greedy_order_removes_cancelling_channels_before_a_strong_one():
    # contributions: channel 3 is nearly nothing, 0 and 1 cancel each other, 2 is strong: magnitude alone would
    # keep 0 and 1 over 3, ThiNet's objective (‖Σ removed‖²) removes 3, then 0 and 1 together, and keeps 2
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, 0.1]], dtype=torch.float64)
    assert greedy_order_scores(z @ z.T).tolist() == [2.0, 3.0, 4.0, 1.0]


def test_kept_channels_are_the_ones_pruning_kept(resnet20_weights):
    model = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights)))
    before, original = copy.deepcopy(model), copy.deepcopy(model.module)
    plan = prune_channels_to(model, _inner_halved(model), "l1")
    kept = kept_channels(before, plan)
    for name in ("layer1.0.conv2", "layer2.1.conv1", "layer3.2.conv2", "linear"):
        outputs, inputs = kept[name]
        pruned, full = model.module.get_submodule(name).weight, original.get_submodule(name).weight
        assert torch.equal(pruned, full[outputs][:, inputs]), name
    assert len(kept["layer1.0.conv2"][1]) == 8 and len(set(kept["layer1.0.conv2"][1].tolist())) == 8


@pytest.mark.parametrize("criterion", ["l1", "thinet"])
def test_reconstruction_reduces_the_next_layers_error_on_held_out_images(resnet20_weights, cifar_test_dir, criterion):
    model = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights)))
    calibration = _batches(model, cifar_test_dir, every=97, offset=0)
    held_out = _batches(model, cifar_test_dir, every=97, offset=48)  # other images
    before = copy.deepcopy(model)
    plan = prune_channels_to(model, _inner_halved(model), criterion, data=calibration)
    original = copy.deepcopy(before)
    replay_rewrites(original, plan.rewrites)  # option-A shortcuts: a downsampling block's conv2 in three parts
    kept = kept_channels(before, plan)
    # exactly the layers that read the halved channels, in forward order: each block's conv2 (or its parts)
    consumers = [name for name, m in model.module.named_modules() if isinstance(m, torch.nn.Conv2d)
                 and m.in_channels < original.module.get_submodule(name).in_channels]  # fmt: skip
    assert len(consumers) == 9 + 2 * 2 and all(".conv2" in c or c.endswith(("low.conv", "mid.conv", "high.conv"))
                                               for c in consumers)  # fmt: skip
    unrefit = {name: layer_error(original.module, model.module, name, held_out, kept) for name in consumers}
    refits = reconstruct(original.module, model.module, calibration, kept)
    assert [r.name for r in refits] == consumers
    assert all(r.error_after < r.error_before for r in refits)
    refit = {name: layer_error(original.module, model.module, name, held_out, kept) for name in consumers}
    assert all(refit[name] < unrefit[name] for name in consumers), (unrefit, refit)


def test_prune_reconstruct_saves_the_refit_weights_and_needs_data(resnet20_weights, small_cifar, tmp_path):
    common = ("prune", "--model", "cifar:resnet20", "--weights", resnet20_weights, "--ratio", "0.3", "--criterion",
              "thinet", "--data", small_cifar, "--json")  # fmt: skip
    result = run_cli(*common, "--reconstruct", "--out", tmp_path / "refit")
    assert result.code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["criterion"] == "thinet" and plan["reconstructed"]
    assert all(after < before for _, before, after in plan["reconstructed"])
    plain = run_cli(*common, "--out", tmp_path / "plain")  # the same channels chosen, no refit
    assert plain.code == 0 and not json.loads(plain.stdout)["reconstructed"], plain.stderr
    refit, unrefit = load_pruned(tmp_path / "refit"), load_pruned(tmp_path / "plain")
    for name, _, _ in plan["reconstructed"]:
        a, b = refit.module.get_submodule(name).weight, unrefit.module.get_submodule(name).weight
        assert a.shape == b.shape and not torch.equal(a, b), name  # saved and reloaded with the refit weights
    missing = run_cli("prune", "--model", "cifar:resnet20", "--ratio", "0.3", "--reconstruct", "--out", tmp_path / "q")
    assert missing.code == 2 and "--reconstruct needs --data" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("family", ["cifar", "darknet"])
def test_a_build_round_with_blocks_removed_refits_by_the_pruned_models_names(family, resnet20_weights):
    """realize(..., reconstruct=True), as a build's round does: blocks removed first (a Darknet model renumbers its
    layers then), channels pruned, the readers refit against the model as channel pruning found it."""
    from edgeprune.plan.structure import read_structure, realize
    from tests.conftest import ASSETS

    if family == "cifar":
        model, size = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights))), 32
    else:
        cfg = ASSETS / "darknet" / "yolo-fastest" / "yolo-fastest-1.1.cfg"
        if not cfg.exists():
            pytest.skip(f"{cfg} is not in ../shared/assets")
        model, size = load_model(f"darknet:{cfg}"), 320
    structure = read_structure(model, "l1", 8)
    state = structure.initial()
    state.removed = set(sorted(structure.blocks)[:2])
    for key, group in list(structure.groups.items())[::2]:
        state.kept[key] = max(group.min_width, group.width - 2 * group.unit)
    data = [(torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(0)), None)]
    plan = realize(model, structure, state, "l1", True, data=data)
    assert plan.removed_blocks and plan.reconstructed
    assert all(after < before for _, before, after in plan.reconstructed), plan.reconstructed
    names = dict(model.module.named_modules())
    assert all(name in names for name, _, _ in plan.reconstructed)
