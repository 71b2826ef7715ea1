"""Measured value: each block's and channel group's damage is the real pruned model's divergence from the unpruned
one; a block that does nothing is worth nothing and goes first; priced groups keep their measured chunk's damage."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from edgeprune.models import LoadOptions, load_model
from edgeprune.plan.planner import MacsCost, solve
from edgeprune.plan.sensitivity import _damage, measure_sensitivity, priced
from edgeprune.plan.structure import read_structure
from edgeprune.prune.depth import remove_blocks
from edgeprune.verify.data import ImageFolder, load_image
from tests.conftest import asset


@pytest.fixture(scope="module")
def resnet20(resnet20_weights):
    return load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights)))


@pytest.fixture(scope="module")
def images(resnet20, cifar_test_dir):
    folder = ImageFolder.scan(cifar_test_dir, resnet20.class_names).split(6)[0]  # 60 images, 6 per class
    array = np.stack([load_image(path, resnet20.preprocessing) for path, _ in folder.samples])
    labels = np.array([label for _, label in folder.samples])
    return [(torch.from_numpy(array[:30]), torch.from_numpy(labels[:30])),
            (torch.from_numpy(array[30:]), torch.from_numpy(labels[30:]))]  # fmt: skip


@pytest.fixture(scope="module")
def measured(resnet20, images):
    structure = read_structure(resnet20, "l1", 4)
    return structure, measure_sensitivity(resnet20, structure, "l1", images)


def _kl(teacher, student, images) -> float:
    with torch.no_grad():
        total = sum(float(torch.nn.functional.kl_div(student(x).log_softmax(1), teacher(x).log_softmax(1),
                                                     log_target=True, reduction="sum")) for x, _ in images)  # fmt: skip
    return total / sum(len(x) for x, _ in images)


def test_every_block_and_group_is_measured_as_the_real_pruned_models_divergence(resnet20, images, measured):
    structure, sensitivity = measured
    assert sensitivity.metric == "kl" and sensitivity.images == 60
    assert set(sensitivity.blocks) == set(structure.blocks) and len(sensitivity.blocks) == 7
    assert set(sensitivity.groups) == {k for k, g in structure.groups.items() if g.width - g.min_width >= g.unit}
    assert all(value >= 0 for value in (*sensitivity.blocks.values(), *sensitivity.groups.values()))
    # recomputed independently: remove the block with the depth pruner, KL with torch's own kl_div
    name = sorted(sensitivity.blocks)[2]
    work = copy.deepcopy(resnet20)
    remove_blocks(work, names=[name])
    assert sensitivity.blocks[name] == pytest.approx(_kl(resnet20.module, work.module.eval(), images), rel=1e-4)
    # removing a quarter of a real layer's channels, untrained, moves a trained network's outputs
    assert max(sensitivity.groups.values()) > 1e-3


def test_a_block_that_adds_nothing_is_worth_nothing_and_goes_first(resnet20, images):
    silenced = copy.deepcopy(resnet20)
    bn = silenced.module.get_submodule("layer2.1.bn2")  # the residual branch's last BN: output 0, so x + f(x) = x
    torch.nn.init.zeros_(bn.weight)
    torch.nn.init.zeros_(bn.bias)
    structure = read_structure(silenced, "l1", 4)
    sensitivity = measure_sensitivity(silenced, structure, "l1", images)
    assert sensitivity.blocks["layer2.1"] < 1e-9
    assert min(v for k, v in sensitivity.blocks.items() if k != "layer2.1") > 1e-4
    choice = solve(priced(structure, sensitivity), MacsCost(), 0.97 * MacsCost().total(structure.uses))
    assert "layer2.1" in choice.removed_blocks


def test_priced_groups_are_worth_their_measured_damage(measured):
    structure, sensitivity = measured
    valued = priced(structure, sensitivity)
    for key, damage in sensitivity.groups.items():
        group, chunk = valued.groups[key], sensitivity.chunk[key]
        assert chunk % group.unit == 0 and group.width - chunk >= group.min_width
        assert group.value_of(group.width, group.width - chunk) == pytest.approx(
            max(damage, 1e-12), rel=1e-6
        ) or damage < 0.01 * np.median(list(sensitivity.groups.values()))  # raised to the noise floor
        # the order of channels inside a group is the criterion's
        assert np.all(np.diff(group.scores) >= 0)
    for name, damage in sensitivity.blocks.items():
        assert valued.blocks[name].value >= damage


def test_detector_outputs_are_compared_relative_to_their_spread():
    rng = np.random.default_rng(0)
    boxes, scores = rng.normal(0, 100, (2, 8, 50)), rng.normal(0, 0.1, (2, 80, 50))
    reference = [[boxes, scores]]
    assert _damage("relative-mse", reference, [[boxes.copy(), scores.copy()]]) == 0.0
    # the same relative error on the large and the small tensor counts the same
    moved = _damage("relative-mse", reference, [[boxes + rng.normal(0, 10, boxes.shape), scores]])
    also = _damage("relative-mse", reference, [[boxes, scores + rng.normal(0, 0.01, scores.shape)]])
    assert moved == pytest.approx(also, rel=0.1) and moved == pytest.approx(0.005, rel=0.1)


def test_a_detector_is_measured_on_its_raw_outputs():
    cfg = asset("darknet/yolo-fastest/yolo-fastest-1.1.cfg")
    model = load_model(f"darknet:{cfg}", LoadOptions(weights=str(cfg.with_suffix(".weights"))))
    full = read_structure(model, "l1", 8)
    # two blocks and two groups are enough to show the plumbing; measuring all of them takes minutes
    prunable = sorted((k, g) for k, g in full.groups.items() if g.width - g.min_width >= g.unit)
    structure = replace(full, blocks=dict(sorted(full.blocks.items())[:2]), groups=dict(prunable[:2]))
    image = load_image(asset("datasets/coco128/images/train2017/000000000009.jpg"), model.preprocessing)
    sensitivity = measure_sensitivity(model, structure, "l1", [(torch.from_numpy(image[None]), None)])
    assert sensitivity.metric == "relative-mse" and sensitivity.images == 1
    assert set(sensitivity.blocks) == set(structure.blocks) and len(sensitivity.groups) == 2
    # a trained detector's raw outputs move when a block or a quarter of a layer's channels goes
    assert all(1e-4 < v < 10 for v in (*sensitivity.blocks.values(), *sensitivity.groups.values()))
