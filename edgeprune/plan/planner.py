"""Budget → what to prune: a greedy knapsack over channel steps and residual blocks, priced by a cost model.

Items are "remove `unit` more channels from group g" (the lowest-scored ones) and "remove block b". Each item has
a value (the normalised importance it throws away; structure.py) and a saving (the cost model's drop in the
model's cost, computed on the layers the item changes at their current widths, so a layer's cost follows both the
group of its outputs and the group of its inputs). The solver repeatedly takes the item with the largest saving
per unit of value until the predicted cost meets the target; it solves once with blocks and once without and keeps
the choice that throws away less value.

Cost models: `LatencyCost` (the calibrated per-layer latency table of the target) for the plan, `MacsCost` for the
FLOPs-driven baseline — the same solver, so the two differ only in what they believe costs time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from edgeprune.latency.microbench import LayerUse
from edgeprune.latency.table import LatencyTable
from edgeprune.plan.structure import PlanState, Structure, conv_macs
from edgeprune.types import Record


class CostModel(Protocol):
    name: str
    unit: str

    def layer(self, use: LayerUse) -> float: ...

    def total(self, uses: Iterable[LayerUse]) -> float: ...


@dataclass
class LatencyCost:
    """Predicted latency (ms) from the target's calibrated latency table."""

    table: LatencyTable
    name: str = "latency"
    unit: str = "ms"

    def layer(self, use: LayerUse) -> float:
        c = self.table.calibration
        return c.scale * self.table.layer_ms(use.signature, use.in_channels, use.out_channels) + c.layer_overhead_ms(
            use
        )

    def total(self, uses: Iterable[LayerUse]) -> float:
        return self.table.predict_ms(uses)


@dataclass
class MacsCost:
    """Multiply-accumulates of the conv/linear layers (the FLOPs-driven baseline)."""

    name: str = "macs"
    unit: str = "MACs"

    def layer(self, use: LayerUse) -> float:
        return conv_macs(use)

    def total(self, uses: Iterable[LayerUse]) -> float:
        return float(sum(conv_macs(u) for u in uses))


@dataclass(frozen=True)
class PlanChoice(Record):
    """What the solver chose and what the cost model predicts for it."""

    kept: dict[str, int]  # group key -> channels kept
    removed_blocks: tuple[str, ...]
    cost_model: str
    unit: str
    unpruned: float  # cost of the unpruned model
    predicted: float  # cost of the choice
    target: float
    met: bool
    value_lost: float  # normalised importance removed (≈ channels of average importance)
    items: int  # items taken
    widths: dict[str, tuple[int, int]] = field(default_factory=dict)  # layer -> (in, out) after the choice

    def state(self) -> PlanState:
        return PlanState(dict(self.kept), set(self.removed_blocks))

    def summary(self) -> str:
        return (f"{self.cost_model} plan: {self.unpruned:.4g} → {self.predicted:.4g} {self.unit} (target "
                f"{self.target:.4g}, {'met' if self.met else 'NOT met'}), {len(self.removed_blocks)} blocks removed, "
                f"{sum(self.kept.values())} channels kept in the prunable groups")  # fmt: skip


def solve(structure: Structure, cost: CostModel, target: float, *, blocks: bool = True) -> PlanChoice:
    """The cheapest-in-value choice whose predicted cost is at most `target` (or as close as the model allows)."""
    choices = [_Greedy(structure, cost, use_blocks=False).run(target)]
    if blocks and structure.blocks:
        choices.append(_Greedy(structure, cost, use_blocks=True).run(target))
    met = [c for c in choices if c.met]
    return min(met, key=lambda c: c.value_lost) if met else min(choices, key=lambda c: c.predicted)


class _Greedy:
    def __init__(self, structure: Structure, cost: CostModel, *, use_blocks: bool):
        self.s, self.cost, self.use_blocks = structure, cost, use_blocks
        self.state = structure.initial()
        self.base = {u.name: u for u in structure.uses}
        self.delta_in: dict[str, int] = {}
        self.delta_out: dict[str, int] = {}
        self.layer_cost = {u.name: cost.layer(u) for u in structure.uses}
        self.owner_of_block_groups = {
            b.name: {k for k, g in structure.groups.items() if g.output_layers and set(g.output_layers) <= b.layers}
            for b in structure.blocks.values()
        }
        self.frozen: set[str] = set()  # groups whose layers went with a removed block
        self.value_lost = 0.0
        self.items = 0

    def run(self, target: float) -> PlanChoice:
        unpruned = self.cost.total(self.s.uses)
        offset = unpruned - sum(self.layer_cost.values())  # what the layers do not cover (calibration offset)
        total = unpruned
        while total > target:
            best = self._best_item()
            if best is None:
                break
            self._take(best)
            total = sum(self.layer_cost.values()) + offset
        uses = self.s.layers(self.state)
        return PlanChoice(
            kept=dict(self.state.kept), removed_blocks=tuple(sorted(self.state.removed)), cost_model=self.cost.name,
            unit=self.cost.unit, unpruned=unpruned, predicted=total, target=target, met=total <= target,
            value_lost=self.value_lost, items=self.items,
            widths={u.name: (u.in_channels, u.out_channels) for u in uses},
        )  # fmt: skip

    def _best_item(self):
        best, best_ratio = None, 0.0
        for key, group in self.s.groups.items():
            kept = self.state.kept[key]
            if key in self.frozen or kept - group.unit < group.min_width:
                continue
            saving = self._channel_saving(key, kept, kept - group.unit)
            value = group.value_of(kept, kept - group.unit)
            ratio = saving / max(value, 1e-9)
            if saving > 0 and ratio > best_ratio:
                best, best_ratio = ("channels", key, saving, value), ratio
        if self.use_blocks:
            for name, block in self.s.blocks.items():
                if name in self.state.removed:
                    continue
                saving = sum(self.layer_cost[n] for n in block.layers)
                value = self._block_value(name)
                ratio = saving / max(value, 1e-9)
                if saving > 0 and ratio > best_ratio:
                    best, best_ratio = ("block", name, saving, value), ratio
        return best

    def _block_value(self, name: str) -> float:
        """The block's value, less what its inner groups already gave up (counted when they were pruned)."""
        block = self.s.blocks[name]
        inner = self.owner_of_block_groups[name]
        if not inner:
            return block.value
        full = sum(self.s.groups[k].value_of(self.s.groups[k].width, 0) for k in inner)
        left = sum(self.s.groups[k].value_of(self.state.kept[k], 0) for k in inner)
        return block.value * left / max(full, 1e-12)

    def _channel_saving(self, key: str, kept: int, kept_after: int) -> float:
        group = self.s.groups[key]
        before, after = group.width - kept, group.width - kept_after
        saving = 0.0
        for name, side, cum in group.members:
            if name not in self.layer_cost:
                continue  # gone with a removed block
            extra = int(cum[after] - cum[before])
            if not extra:
                continue
            d_in = self.delta_in.get(name, 0) + (extra if side == "in" else 0)
            d_out = self.delta_out.get(name, 0) + (extra if side == "out" else 0)
            saving += self.layer_cost[name] - self.cost.layer(self.s.resized(self.base[name], d_in, d_out))
        return saving

    def _take(self, item) -> None:
        kind, key, _, value = item
        self.value_lost += value
        self.items += 1
        if kind == "block":
            self.state.removed.add(key)
            self.frozen |= self.owner_of_block_groups[key]
            for name in self.s.blocks[key].layers:
                self.layer_cost.pop(name, None)
            return
        group = self.s.groups[key]
        kept = self.state.kept[key]
        before, after = group.width - kept, group.width - (kept - group.unit)
        self.state.kept[key] = kept - group.unit
        for name, side, cum in group.members:
            extra = int(cum[after] - cum[before])
            if not extra or name not in self.layer_cost:
                continue
            target = self.delta_in if side == "in" else self.delta_out
            target[name] = target.get(name, 0) + extra
            resized = self.s.resized(self.base[name], self.delta_in.get(name, 0), self.delta_out.get(name, 0))
            self.layer_cost[name] = self.cost.layer(resized)


def uniform_choice(structure: Structure, cost: CostModel, target: float) -> PlanChoice:
    """The uniform-ratio baseline: every group loses the same share (to its unit), the smallest share whose cost
    meets `target` (bisection); no blocks removed."""
    unpruned = cost.total(structure.uses)

    def state_at(ratio: float) -> PlanState:
        state = structure.initial()
        for key, g in structure.groups.items():
            kept = int(round(g.width * (1 - ratio) / g.unit)) * g.unit
            state.kept[key] = min(g.width, max(g.min_width, kept))
        return state

    lo, hi = 0.0, 0.95
    for _ in range(30):
        mid = (lo + hi) / 2
        if cost.total(structure.layers(state_at(mid))) <= target:
            hi = mid
        else:
            lo = mid
    state = state_at(hi)
    uses = structure.layers(state)
    total = cost.total(uses)
    lost = sum(g.value_of(g.width, state.kept[k]) for k, g in structure.groups.items())
    return PlanChoice(kept=dict(state.kept), removed_blocks=(), cost_model=f"uniform ({cost.name})", unit=cost.unit,
                      unpruned=unpruned, predicted=total, target=target, met=total <= target, value_lost=lost,
                      items=0, widths={u.name: (u.in_channels, u.out_channels) for u in uses})  # fmt: skip
