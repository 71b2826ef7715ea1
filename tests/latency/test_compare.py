"""The interleaved-comparison statistics (edgeprune/latency/compare.py) and its timing loop, on the real agent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.transport import LocalTransport
from edgeprune.latency.compare import (
    comparison_rounds,
    cycle_log_ratios,
    format_speedup,
    relative_latency_ms,
    speedup,
    speedup_se,
    timed_rounds,
)


def test_speedup_standard_error_follows_the_spread_of_per_round_ratios():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.5, 1.0, 400)  # the machine's speed drifts; both models of a round move with it
    noise = np.exp(rng.normal(0, 0.16, 400))  # per-round ratio spread measured for ResNet-20 on the CI VM
    model = reference / 1.25 * noise
    se = speedup_se(list(reference), list(model))
    assert se == pytest.approx(1.2533 * 0.16 / 20, rel=0.15)
    assert speedup_se(list(reference[:100]), list(model[:100])) == pytest.approx(2 * se, rel=0.3)
    assert speedup_se([1.0, 1.0], [0.8, 0.8]) == float("inf")  # too few rounds to tell
    assert speedup_se(list(reference), list(reference)) == 0.0


def test_a_slow_spell_scales_both_models_of_a_round_and_leaves_the_speedup():
    reference = [1.0, 1.0, 3.0, 3.0, 1.0, 1.0]  # rounds 3-4 ran on a machine three times slower
    model = [0.5, 0.5, 1.5, 1.5, 0.5, 0.5]
    assert speedup(reference, model, cycle=2) == pytest.approx(2.0)
    assert cycle_log_ratios(reference, model, 2).tolist() == pytest.approx([math.log(2)] * 3)
    assert len(cycle_log_ratios(reference + [1.0], model + [0.5], 2)) == 3  # only whole cycles count
    assert relative_latency_ms([0.5, 0.6, 0.4], 10.0) == pytest.approx(5.0)


def test_first_rounds_and_the_speedup_label():
    assert comparison_rounds(0.6, 30) == 15 and comparison_rounds(100.0, 50) == 3
    assert format_speedup(2.314, 0.015) == "2.31× ± 1.5 %" and format_speedup(1.0, None) == "1.00×"


def test_timed_rounds_turns_the_order_each_round(tiny_onnx):
    order: list[int] = []
    models = {"a": (tiny_onnx, "onnxruntime"), "b": (tiny_onnx, "onnxruntime"), "c": (tiny_onnx, "onnxruntime")}
    with AgentSession(LocalTransport()) as agent:
        rounds = timed_rounds(agent, models, threads=1, warmup=1, runs=30, turn=True, on_timed=order.append)
        seen = [list(next(rounds)) for _ in range(3)]
        fixed = timed_rounds(agent, models, threads=1, warmup=1, runs=30, turn=False)
        again = [list(next(fixed)) for _ in range(2)]
    assert seen == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]] and order == [0, 1, 2] * 3
    assert again == [["a", "b", "c"]] * 2
