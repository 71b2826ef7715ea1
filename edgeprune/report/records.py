"""What a build reports: the plan stage's rounds and choice, and the whole build's results.

They hold the planner's records (PlanChoice, Sensitivity), which is why they are here and not in edgeprune.types
(that would make types import plan, which imports types); edgeprune.build re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeprune.latency.compare import format_speedup
from edgeprune.plan.planner import PlanChoice
from edgeprune.plan.sensitivity import Sensitivity
from edgeprune.types import LatencyStats, PrunePlan, Record, TargetProfile
from edgeprune.types.build import Budget, ModelResult, PlanRound


@dataclass(frozen=True)
class PlanReport(Record):
    budget: Budget
    budget_ms: float
    base_latency: LatencyStats
    base_predicted_ms: float
    choice: PlanChoice
    rounds: tuple[PlanRound, ...]  # none: the table ruled the budget out, and `choice` is the fastest reachable
    met: bool
    prune_plan: PrunePlan | None  # None when ruled out: nothing was pruned
    baselines: dict[str, PlanChoice] = field(default_factory=dict)
    layer_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # table's layer latency before/after
    value: str = "criterion"  # how items were valued: "measured (...)" or "criterion"
    sensitivity: Sensitivity | None = None

    @property
    def ruled_out(self) -> bool:
        """The table predicted that no model the solver can reach meets the budget; nothing was measured."""
        return not self.rounds

    def reachable(self) -> str:
        """What the table predicts for the fastest model the solver can reach, on the measured model's scale."""
        ms = self.choice.predicted * self.base_latency.median_ms / self.base_predicted_ms
        return (
            f"the latency table predicts {ms:.3f} ms ({self.base_latency.median_ms / ms:.2f}× speedup over "
            f"the unpruned {self.base_latency.median_ms:.3f} ms) for the fastest model the planner can reach"
        )


@dataclass(frozen=True)
class BuildReport(Record):
    model: str
    target: TargetProfile
    budget: Budget
    budget_ms: float  # a speedup budget: the final comparison's unpruned median / speedup
    met: bool
    speedup: float  # the plan's over the unpruned model, timed next to each other (median of per-round ratios)
    results: tuple[ModelResult, ...]
    plan: PlanReport
    lut_mape_percent: float | None
    stage_seconds: dict[str, float]
    environment: dict[str, str]
    latency_method: str

    def summary(self) -> str:
        base = next(r for r in self.results if r.name == "unpruned")
        if self.plan.ruled_out:
            return (f"{self.model} on {self.target.name}: budget {self.budget.describe()} = {self.budget_ms:.3g} ms "
                    f"NOT met: {self.plan.reachable()}; nothing was pruned")  # fmt: skip
        plan = next(r for r in self.results if r.name == "plan")
        metric = ""
        if plan.metric_value is not None and base.metric_value is not None:
            metric = f"; {plan.metric} {base.metric_value:.4f} → {plan.metric_value:.4f}"
        return (f"{self.model} on {self.target.name}: {base.latency.median_ms:.3f} → {plan.latency.median_ms:.3f} ms "
                f"median (speedup {format_speedup(self.speedup, plan.speedup_se)}, "
                f"budget {self.budget.describe()} = {self.budget_ms:.3f} ms: "
                f"{'met' if self.met else 'NOT met'}){metric}")  # fmt: skip

    def shortfall(self) -> str:
        """Why the budget was not met, in one line."""
        missed = f"the budget ({self.budget.describe()} = {self.budget_ms:.3g} ms) was not met"
        if self.plan.ruled_out:
            return f"{missed}: {self.plan.reachable()}, so the build stopped at the plan stage (relax the budget)"
        return f"{missed}: measured {self.speedup:.2f}× speedup"
