"""The solver: budgets met on its own cost model, latency-awareness (a table where every layer carries a fixed
per-layer cost makes removing whole blocks pay; MACs make channels pay), baselines built the same way."""

from __future__ import annotations

import pytest

from edgeprune.latency.table import Calibration, LatencyTable, TableEntry, needed_entries
from edgeprune.models import load_model
from edgeprune.plan.planner import LatencyCost, MacsCost, solve, uniform_choice
from edgeprune.plan.structure import conv_macs, read_structure


@pytest.fixture(scope="module")
def structure():
    return read_structure(load_model("cifar:resnet20"), "l1", 4)


def _table(structure, per_layer_ms: float, per_mmac_ms: float) -> LatencyTable:
    """A table whose layer latency is a fixed cost plus a cost per MAC (the two regimes of real runtimes: tiny
    layers dominated by per-op overhead, big ones by arithmetic)."""
    entries = {}
    for signature, cin, cout in needed_entries(structure.uses, structure.step):
        use = next(u for u in structure.uses if u.signature.key == signature.key)
        macs = conv_macs(type(use)(use.name, signature, cin, cout))
        ms = per_layer_ms + per_mmac_ms * macs / 1e6
        entries[(signature.key, cin, cout)] = TableEntry(signature, cin, cout, ms, ms, 30, "onnxruntime", 2)
    return LatencyTable(entries, Calibration(1.0, 0.05, 4))


def test_the_budget_is_met_on_the_cost_model_and_widths_stay_legal(structure):
    cost = MacsCost()
    full = cost.total(structure.uses)
    choice = solve(structure, cost, 0.5 * full)
    assert choice.met and choice.predicted <= 0.5 * full
    assert choice.predicted == pytest.approx(cost.total(structure.layers(choice.state())))
    for key, group in structure.groups.items():
        kept = choice.kept[key]
        assert group.min_width <= kept <= group.width and (group.width - kept) % group.unit == 0


def test_per_layer_overhead_makes_the_latency_plan_remove_blocks(structure):
    overhead = LatencyCost(_table(structure, per_layer_ms=0.05, per_mmac_ms=0.0005))
    full = overhead.total(structure.uses)
    by_latency = solve(structure, overhead, 0.7 * full)
    assert by_latency.met and by_latency.removed_blocks
    # the FLOPs-driven baseline at the same MACs throws channels away instead, and is slower by the table
    macs = MacsCost()
    by_macs = solve(structure, macs, macs.total(structure.layers(by_latency.state())))
    assert overhead.total(structure.layers(by_macs.state())) > by_latency.predicted


def test_arithmetic_bound_layers_make_the_plan_thin_channels(structure):
    arithmetic = LatencyCost(_table(structure, per_layer_ms=0.0, per_mmac_ms=0.01))
    choice = solve(structure, arithmetic, 0.8 * arithmetic.total(structure.uses))
    assert choice.met and sum(choice.kept.values()) < sum(g.width for g in structure.groups.values())


def test_uniform_baseline_prunes_every_group_alike(structure):
    cost = MacsCost()
    choice = uniform_choice(structure, cost, 0.6 * cost.total(structure.uses))
    assert choice.met and not choice.removed_blocks
    shares = {round(1 - choice.kept[k] / g.width, 1) for k, g in structure.groups.items() if g.width >= 32}
    assert len(shares) == 1


def test_an_unreachable_target_is_reported_not_met(structure):
    choice = solve(structure, MacsCost(), 1.0)
    assert not choice.met and choice.predicted > 1.0
