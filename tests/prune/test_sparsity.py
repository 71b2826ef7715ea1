"""2:4 semi-structured sparsity (prune/sparsity.py) on the real ResNet-20 and real CIFAR-10 images: the masks, the
pattern through fine-tuning and ONNX export, the layers left dense, and the TensorRT builder asked for sparse weights
(through the documented-API stand-in of tests/standins/)."""

from __future__ import annotations

import importlib
import json
import os
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgeprune._resources import resource_dir
from edgeprune.commands import export_model, prune_model
from edgeprune.models import LoadOptions, load_model
from edgeprune.models.saved import load_pruned
from edgeprune.prune.sparsity import (
    apply_masks,
    check_two_of_four,
    dense_layers,
    eligible_layers,
    layer_weights,
    masks_kept,
    two_of_four_masks,
)
from edgeprune.types import PrunePlan
from edgeprune.types.results import TWO_OF_FOUR_SPEED
from edgeprune.verify.data import ImageFolder, load_image
from tests.conftest import REPO, run_cli
from tests.standins.tensorrt_builder import fake_build_trt

sys.path.insert(0, str(resource_dir("targets")))
trt_builder = importlib.import_module("agent_trt_builder")
AgentError = importlib.import_module("agent_runtimes").AgentError

# `python:tests.prune.test_sparsity:stem_only`: no layer whose inputs are a multiple of 4
edgeprune_input = {"shape": (1, 3, 16, 16), "class_names": ["a", "b"]}


def stem_only() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2)).eval()


def _resnet20(weights):
    return load_model("cifar:resnet20", LoadOptions(weights=str(weights)))


@pytest.mark.parametrize("layer", ["layer1.0.conv1", "layer2.0.conv2", "layer3.2.conv2", "linear"])
def test_masks_keep_the_two_largest_of_every_four_input_channels(resnet20_weights, layer):
    model = _resnet20(resnet20_weights)
    weight = model.module.get_submodule(layer).weight.detach().numpy()
    mask = two_of_four_masks(model.module)[layer].numpy()
    assert mask.shape == weight.shape and mask.dtype == bool
    magnitude = np.abs(weight.reshape(*weight.shape[:2], -1))  # (out, in, kernel positions); Linear: 1 position
    kept = mask.reshape(magnitude.shape)
    for out in range(magnitude.shape[0]):
        for position in range(magnitude.shape[2]):
            for start in range(0, magnitude.shape[1], 4):  # 4 consecutive input channels, one output, one position
                group, keep = magnitude[out, start : start + 4, position], kept[out, start : start + 4, position]
                assert keep.sum() == 2, (out, start, position)
                assert group[keep].min() >= group[~keep].max(), (out, start, position)


def test_ties_go_to_the_lower_input_channel_every_time():
    layer = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0, -2.0, 0.5, 2.0, 0.5], [0.0] * 8]))
    masks = [two_of_four_masks(nn.Sequential(layer))["0"] for _ in range(3)]
    expected = torch.tensor([[1, 1, 0, 0, 1, 0, 1, 0], [1, 1, 0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    assert all(torch.equal(m, expected) for m in masks)


def test_check_finds_the_tensors_that_break_the_pattern(resnet20_weights):
    model = _resnet20(resnet20_weights)
    names = eligible_layers(model.module)
    dense = layer_weights(model.module, names)
    assert sorted(check_two_of_four(dense)) == sorted(names)  # trained weights: no zeros to speak of
    apply_masks(model.module, two_of_four_masks(model.module))
    sparse = layer_weights(model.module, names)
    assert check_two_of_four(sparse) == [] and check_two_of_four({k: v.numpy() for k, v in sparse.items()}) == []
    one_more = sparse["layer1.0.conv1"].clone()
    one_more[0, 0:4, 0, 0] = 1.0
    assert check_two_of_four({"one more": one_more, "3 inputs": torch.zeros(4, 3, 3, 3)}) == ["one more", "3 inputs"]


def test_training_inside_masks_kept_sees_only_masked_weights(resnet20_weights, small_cifar):
    model = _resnet20(resnet20_weights)
    masks = two_of_four_masks(model.module)
    samples = ImageFolder.scan(str(small_cifar), model.class_names).samples[::4]
    x = torch.from_numpy(np.stack([load_image(path, model.preprocessing) for path, _ in samples]))
    y = torch.tensor([label for _, label in samples])
    optimizer = torch.optim.SGD(model.module.parameters(), lr=0.1, momentum=0.9)
    with masks_kept(model.module, masks):
        model.module.train()
        for _ in range(2):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model.module(x), y).backward()
            optimizer.step()  # the step moves masked weights too (momentum, weight decay would): the next forward
            assert check_two_of_four(layer_weights(model.module, masks)) != []
            with torch.inference_mode():  # ... zeroes them before it computes anything, also in inference mode
                model.module.eval()(x[:2])
            assert check_two_of_four(layer_weights(model.module, masks)) == []
            model.module.train()
        optimizer.step()  # a last step after the last forward: leaving the block zeroes what it moved
    assert check_two_of_four(layer_weights(model.module, masks)) == []
    assert all(not layer._forward_pre_hooks for layer in model.module.modules())  # nothing left behind
    assert all(torch.equal(model.module.get_submodule(n).weight != 0, m) for n, m in masks.items())


@pytest.mark.parametrize("round_to", [None, 4])
def test_layers_whose_inputs_are_not_a_multiple_of_4_stay_dense_and_are_recorded(resnet20_weights, tmp_path,
                                                                                   round_to):  # fmt: skip
    model = _resnet20(resnet20_weights)
    plan = prune_model(model, tmp_path, ratio=0.3, criterion="l1", round_to=round_to, sparsity_2of4=True)
    convs_and_linears = [(name, m) for name, m in model.module.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    odd = [name for name, m in convs_and_linears if (m.weight.shape[1] % 4)]
    assert plan.sparsity == "2:4" and list(plan.dense_layers) == odd == list(dense_layers(model.module))
    assert "conv1" in odd and (len(odd) > 1) == (round_to is None)  # 16 → 11 channels without a step of 4
    stem = model.module.conv1.weight
    assert bool((stem != 0).all())  # the 3-input stem is left as it was
    sparse = layer_weights(model.module, [name for name, _ in convs_and_linears if name not in odd])
    assert sparse and check_two_of_four(sparse) == []
    assert load_pruned(tmp_path).sparsity == "2:4" and PrunePlan.load(tmp_path / "prune_plan.json") == plan


def test_the_pattern_survives_finetuning_and_onnx_export(resnet20_weights, small_cifar, tmp_path):
    out = tmp_path / "pruned"
    result = run_cli("prune", "--model", "cifar:resnet20", "--weights", resnet20_weights, "--ratio", "0",
                     "--sparsity-2of4", "--finetune-epochs", "1", "--data", small_cifar, "--out", out)  # fmt: skip
    assert result.code == 0, result.stderr
    assert TWO_OF_FOUR_SPEED in result.stdout and "except 1 left dense" in result.stdout and "conv1" in result.stdout
    plan = PrunePlan.load(out / "prune_plan.json")
    assert plan.sparsity == "2:4" and plan.dense_layers == ("conv1",)
    tuned = load_pruned(out)
    assert tuned.sparsity == "2:4"
    names = eligible_layers(tuned.module)
    weights = layer_weights(tuned.module, names)
    assert len(names) == 23 and check_two_of_four(weights) == []
    # fine-tuning moved the kept weights, and the zeros are where the mask chose before fine-tuning
    reference = _resnet20(resnet20_weights)
    prune_model(reference, tmp_path / "reference", ratio=0.0, criterion="l1", sparsity_2of4=True)
    before = layer_weights(reference.module, names)
    assert all(torch.equal(weights[n] != 0, before[n] != 0) for n in names)
    assert sum(not torch.equal(weights[n], before[n]) for n in names) == len(names)

    exported = run_cli("export", "--model", out, "--format", "onnx", "--out", tmp_path / "onnx")
    assert exported.code == 0, exported.stderr
    assert TWO_OF_FOUR_SPEED in exported.stdout
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    layer_weights_in_onnx = {}
    for node in graph.node:
        if node.op_type == "Conv" or (
            node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        ):
            layer_weights_in_onnx[node.input[1]] = initializers[node.input[1]]  # (out, in, kh, kw) / (out, in)
    eligible = {k: v for k, v in layer_weights_in_onnx.items() if v.shape[1] % 4 == 0}
    assert len(eligible) == 23 and check_two_of_four(eligible) == []
    assert [v.shape[1] for k, v in layer_weights_in_onnx.items() if k not in eligible] == [3]  # the stem, dense
    assert all(np.mean(v == 0) == 0.5 for v in eligible.values())


def test_a_model_with_no_layer_that_can_hold_the_pattern_is_refused(tmp_path):
    result = run_cli("prune", "--model", "python:tests.prune.test_sparsity:stem_only", "--ratio", "0",
                     "--sparsity-2of4", "--out", tmp_path / "out", cwd=REPO)  # fmt: skip
    assert result.code == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "whose input channels are a multiple of 4" in result.stderr and "drop --sparsity-2of4" in result.stderr
    assert not (tmp_path / "out" / "prune_plan.json").exists()


@pytest.mark.parametrize("sparse", [True, False])
def test_tensorrt_is_asked_for_sparse_weights_when_the_plan_says_2_of_4(resnet20_weights, tmp_path, monkeypatch,
                                                                        sparse):  # fmt: skip
    log = tmp_path / "trt_calls.json"
    paths = [str(REPO), str(REPO / "tests" / "standins" / "path"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))  # the agent imports the stand-in
    monkeypatch.setenv("EDGEPRUNE_TRT_STANDIN_LOG", str(log))
    prune_model(_resnet20(resnet20_weights), tmp_path / "pruned", ratio=0.0, criterion="l1", sparsity_2of4=sparse)
    export_model(load_pruned(tmp_path / "pruned"), "tensorrt", tmp_path / "engine")
    calls = json.loads(log.read_text())
    assert calls["flags"] == (["FP16", "SPARSE"] if sparse else ["FP16"])
    assert json.loads((tmp_path / "engine" / "engine.json").read_text())["sparse_weights"] is sparse


@pytest.fixture
def with_fake_trt(monkeypatch):
    def install(version):
        calls = {}
        monkeypatch.setattr(trt_builder, "import_runtime", lambda m, how: fake_build_trt(version, calls))
        return calls

    return install


@pytest.mark.parametrize(("version", "flagged"), [("10.3.0", True), ("8.0.1", True), ("7.2.3", False)])
def test_the_agent_sets_the_sparse_flag_where_tensorrt_has_it(with_fake_trt, tmp_path, version, flagged):
    onnx_file = tmp_path / "net.onnx"
    onnx_file.write_bytes(b"onnx")
    calls = with_fake_trt(version)
    result = trt_builder.build_engine({"onnx": str(onnx_file), "precision": "fp16", "sparse_weights": True})
    assert calls["flags"] == (["FP16", "SPARSE"] if flagged else ["FP16"]) and result["sparse_weights"] is flagged
    assert any("no BuilderFlag.SPARSE_WEIGHTS" in note for note in result["notes"]) is not flagged
    calls = with_fake_trt(version)
    assert not trt_builder.build_engine({"onnx": str(onnx_file), "precision": "fp16"})["sparse_weights"]
    assert calls["flags"] == ["FP16"]  # not asked: not set
    with pytest.raises(AgentError, match="sparse_weights must be true or false"):
        trt_builder.check_build_args({"onnx": str(onnx_file), "sparse_weights": "yes"})
