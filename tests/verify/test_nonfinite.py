"""Anything non-finite fails a gate: NaN/Inf in either side of a parity comparison, on every runtime, in the int8
sensitivity ranking, and a model whose own PyTorch outputs are non-finite is refused before export."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import ModelError
from edgeprune.models.base import LoadedModel, image_input
from edgeprune.types import TensorSpec, Verification
from edgeprune.verify.finite import nonfinite_count, refuse_nonfinite_outputs
from edgeprune.verify.parity import ParityAccumulator, Tolerances, compare_output

TOL = Tolerances(max_abs=1e-4, max_abs_rel_range=1e-4, cosine=0.9999, metric=0.002, why="test")
LOOSE = Tolerances(max_abs=np.inf, max_abs_rel_range=np.inf, cosine=-1.0, cosine_of="mean", metric=1.0, why="test")


def _reference():
    return np.random.default_rng(0).standard_normal((8, 10)).astype(np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["runtime", "reference"])
def test_one_nonfinite_value_on_either_side_fails_even_under_the_loosest_tolerance(bad, side):
    ref = _reference()
    out = ref.copy()
    (out if side == "runtime" else ref)[5, 3] = bad
    for tolerances in (TOL, LOOSE):
        result = compare_output("y", ref, out, tolerances)
        assert not result.passed
        assert (result.nonfinite_runtime, result.nonfinite_reference) == ((1, 0) if side == "runtime" else (0, 1))
    # the rest is still described: the 79 finite pairs agree exactly
    assert result.max_abs == 0 and result.cosine_min == pytest.approx(1.0) and np.isfinite(result.cosine_mean)


def test_all_nan_outputs_fail_and_the_record_stays_valid_json():
    ref = _reference()
    for out, ref_side in ((np.full_like(ref, np.nan), ref), (np.full_like(ref, np.nan), np.full_like(ref, np.nan))):
        assert not compare_output("y", ref_side, out, LOOSE).passed
        result = compare_output("y", ref_side, out, TOL)
        assert not result.passed and result.nonfinite_runtime == ref.size
        json.dumps(result.to_dict(), allow_nan=False)  # strict JSON: no NaN slipped into the measured numbers


def test_nonfinite_values_in_a_later_batch_are_counted_across_batches():
    ref = np.random.default_rng(1).standard_normal((50, 4))
    out = ref.copy()
    out[40, 0], out[41, 2] = np.nan, np.inf
    accumulator = ParityAccumulator("y")
    for start in range(0, 50, 16):
        accumulator.update(ref[start : start + 16], out[start : start + 16])
    result = accumulator.result(TOL)
    assert not result.passed and result.nonfinite_runtime == 2 and result.max_abs == 0


def test_failures_name_the_output_and_the_count():
    ref = _reference()
    out = ref.copy()
    out[0, 0] = np.nan
    parity = compare_output("logits", ref, out, TOL)
    verification = Verification(
        model="m",
        artifact=None,
        runtime="onnxruntime",
        runtime_version="1",
        threads=1,
        target="host",
        data="d",
        n_samples=8,
        parity=(parity,),
        metrics=(),
        passed=False,
    )
    assert verification.failures() == ["output 'logits': 1 NaN/Inf value(s) from the runtime, 0 from PyTorch"]
    finite = dataclasses.replace(parity, nonfinite_runtime=0)
    assert "max-abs" in finite.failure()


def test_nonfinite_count_on_numpy_and_torch():
    assert nonfinite_count(np.array([1.0, np.nan, np.inf, -np.inf], dtype=np.float32)) == 3
    assert nonfinite_count(np.arange(5)) == 0
    assert nonfinite_count(torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)) == 1
    assert nonfinite_count(torch.tensor([float("inf")], dtype=torch.float16)) == 1


# --- the PyTorch side: refused before export, naming the first layer ------------------------------------------------


class Chain(nn.Module):
    def __init__(self, log_after: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
        self.log_after = log_after

    def forward(self, x):
        y = self.head(self.stem(x))
        return torch.log(y.abs() - 1e9) if self.log_after else y  # a NaN from an op outside any submodule


def _loaded(module: nn.Module) -> LoadedModel:
    return LoadedModel(module.eval(), "python:test:chain", "classification", image_input(8, 8), None)


def test_a_finite_model_passes_and_its_outputs_come_back():
    model = _loaded(Chain())
    assert refuse_nonfinite_outputs(model).shape == (1, 3)


def test_a_nan_weight_is_refused_naming_the_layer_it_first_shows_in():
    module = Chain()
    with torch.no_grad():
        module.head[0].weight[2, 1] = float("nan")  # head.0 is the first layer whose output carries it
    with pytest.raises(
        ModelError,
        match=r"non-finite PyTorch outputs on a sample input \(output: 3 of 3 values NaN/Inf\); "
        r"the first layer to produce them is head\.0 \(Conv2d\)",
    ):
        refuse_nonfinite_outputs(_loaded(module))


def test_a_nonfinite_value_from_the_models_own_forward_says_so():
    with pytest.raises(ModelError, match=r"the model's own forward \(Chain\)"):
        refuse_nonfinite_outputs(_loaded(Chain(log_after=True)))


# --- int8 sensitivity: a non-finite reference is refused, a layer whose int8 breaks to Inf ranks first --------------


class Reciprocal(nn.Module):
    """1 / (x · w): int8 rounding of w's small element to 0 turns the output into +Inf on inputs that only reach it."""

    def __init__(self):
        super().__init__()
        self.small = nn.Linear(2, 1, bias=False)
        self.big = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.small.weight.copy_(torch.tensor([[1.0, 1e-4]]))
            self.big.weight.copy_(torch.tensor([[1.0, 1.0]]))

    def forward(self, x):
        return 1.0 / self.small(x) + self.big(x)


def test_sensitivity_ranks_a_layer_whose_int8_output_is_inf_first_and_refuses_a_nan_reference():
    from edgeprune.backends._quantization import layer_sensitivity

    model = LoadedModel(
        Reciprocal().eval(), "python:test:reciprocal", "classification", (TensorSpec("input", ("batch", 2)),), None
    )
    images = np.array([[0.0, 1.0]] * 4, dtype=np.float32)  # small(x) = 1e-4 in float, 0 once w is int8
    ranked = layer_sensitivity(model, images)
    assert [layer.name for layer in ranked] == ["small", "big"] and ranked[0].error == float("inf")
    assert np.isfinite(ranked[1].error)
    with pytest.raises(ModelError, match=r"on 4 calibration images .* is the model's own forward \(Reciprocal\)"):
        layer_sensitivity(model, np.array([[0.0, 0.0]] * 4, dtype=np.float32))  # 1 / 0 in float already
