"""The planner's view of a pruned model (Structure.layers) must be the model that pruning then builds."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from edgeprune.latency.microbench import layer_uses
from edgeprune.models import LoadOptions, load_model
from edgeprune.plan.structure import read_structure, realize
from tests.conftest import ASSETS, tiny_vit

CFG = ASSETS / "darknet"
CFGS = {"yolo-fastest-1.1.cfg": CFG / "yolo-fastest", "yolov4-tiny.cfg": CFG / "alexeyab"}


def _random_state(structure, seed: int):
    rng = np.random.default_rng(seed)
    state = structure.initial()
    for key, group in structure.groups.items():
        steps = (group.width - group.min_width) // group.unit
        state.kept[key] = group.width - group.unit * int(rng.integers(0, steps + 1)) if steps > 0 else group.width
    blocks = sorted(structure.blocks)
    state.removed = {b for b in blocks if rng.random() < 0.3}
    return state


def _check(loaded, step: int, seed: int = 0):
    structure = read_structure(loaded, "l1", step)
    state = _random_state(structure, seed)
    predicted = structure.layers(state)
    pruned = copy.deepcopy(loaded)
    plan = realize(pruned, structure, state, "l1")
    actual = layer_uses(pruned)
    assert [(u.signature.key, u.in_channels, u.out_channels) for u in predicted] == [
        (u.signature.key, u.in_channels, u.out_channels) for u in actual
    ]
    assert set(plan.removed_blocks) == state.removed
    return structure, state


def test_resnet56_layers_after_a_plan_are_the_pruned_models():
    structure, state = _check(load_model("cifar:resnet56"), step=4, seed=1)
    assert len(structure.blocks) == 25 and state.removed
    assert any(state.kept[k] < g.width for k, g in structure.groups.items())


@pytest.mark.parametrize("cfg", ["yolo-fastest-1.1.cfg", "yolov4-tiny.cfg"])
def test_darknet_layers_after_a_plan_are_the_pruned_models(cfg):
    path = CFGS[cfg] / cfg
    if not path.exists():
        pytest.skip(f"{path} is not in ../shared/assets")
    _check(load_model(f"darknet:{path}"), step=8, seed=2)


@pytest.mark.parametrize("yaml", ["yolov8n.yaml", "yolov3-tiny.yaml"])
def test_ultralytics_layers_after_a_plan_are_the_pruned_models(yaml):
    structure, _ = _check(load_model(yaml, LoadOptions(input_shape=(1, 3, 160, 160))), step=8, seed=3)
    # C2f bottlenecks fold into the next conv when removed; the planner leaves them to `prune --blocks`
    assert not any(".m." in name for name in structure.blocks)


def test_vit_plans_keep_whole_heads_as_pruning_does():
    structure, state = _check(tiny_vit(), step=4, seed=4)
    embedding = [g for g in structure.groups.values() if g.width == 48 and g.unit % 3 == 0]
    assert embedding and all(g.unit == 12 and g.min_width >= 3 for g in embedding)
    assert any(state.kept[g.key] < 48 for g in embedding)
