"""What a build reports: the plan stage's rounds and choice, and the whole build's results.

They hold the planner's records (PlanChoice, Sensitivity), which is why they are here and not in edgeprune.types
(that would make types import plan, which imports types); edgeprune.build re-exports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgeprune.latency.compare import format_speedup
from edgeprune.plan.planner import PlanChoice
from edgeprune.plan.sensitivity import Sensitivity
from edgeprune.types import LatencyStats, PrunePlan, Record, TargetProfile
from edgeprune.types.build import Budget, BuildOptions, ModelResult, PlanRound, Recovery


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
    base_widths: dict[str, tuple[int, int]] = field(default_factory=dict)  # layer -> (in, out) unpruned
    kept_round: int | None = None  # the round whose model was kept (the last when none met the budget)

    @property
    def ruled_out(self) -> bool:
        """The table predicted that no model the solver can reach meets the budget; nothing was measured."""
        return not self.rounds

    def kept(self) -> PlanRound | None:
        """The round whose model the plan stage kept (older reports: the round that predicted the choice)."""
        if self.kept_round is not None:
            return next(r for r in self.rounds if r.round == self.kept_round)
        matching = [r for r in self.rounds if math.isclose(r.predicted_ms, self.choice.predicted, rel_tol=1e-9)]
        return (matching or list(self.rounds) or [None])[-1]

    @property
    def first_round_error(self) -> float | None:
        """The table's error on the planner's first pick: predicted speedup / measured speedup − 1."""
        return self.rounds[0].prediction_error if self.rounds else None

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
    met: bool  # both budgets: latency, and accuracy when max_drop is set
    speedup: float  # the shipped model's over the unpruned one, timed next to each other (median of per-round ratios)
    results: tuple[ModelResult, ...]
    plan: PlanReport
    lut_mape_percent: float | None
    stage_seconds: dict[str, float]
    environment: dict[str, str]
    latency_method: str
    latency_met: bool = False
    shipped: str = "plan"  # the model in bundle/: the plan, or the back-off candidate recovery chose
    max_drop: float | None = None  # points of the held-out metric the shipped model may lose; None: not a budget
    accuracy_drop: float | None = None  # points lost on held-out data, on the target's runtime (unpruned − shipped)
    accuracy_met: bool | None = None  # None: accuracy was not a budget
    recovery: Recovery | None = None  # every fine-tuned candidate, validated (classification with --data)
    options: BuildOptions | None = None  # what the build was asked for (fine-tuning recipe, timing)

    def result(self, name: str) -> ModelResult:
        return next(r for r in self.results if r.name == name)

    @property
    def emulation(self) -> str | None:
        """The label of the build's timings when the target's CPU was emulated (then no verdict speaks for it)."""
        return self.result("unpruned").latency.emulation if self.results else None

    def summary(self) -> str:
        base = self.result("unpruned")
        if self.plan.ruled_out:
            return (f"{self.model} on {self.target.name}: budget {self.budget.describe()} = {self.budget_ms:.3g} ms "
                    f"NOT met: {self.plan.reachable()}; nothing was pruned")  # fmt: skip
        shipped = self.result(self.shipped)
        metric = ""
        if shipped.metric_value is not None and base.metric_value is not None:
            metric = f"; held-out {shipped.metric} {base.metric_value:.4f} → {shipped.metric_value:.4f}"
            if self.max_drop is not None:
                metric += (f" (drop {self.accuracy_drop:.2f} points, allowed {self.max_drop:g}: "
                           f"{'met' if self.accuracy_met else 'NOT met'})")  # fmt: skip
        elif self.max_drop is not None:
            metric = f"; no held-out metric, so the allowed drop of {self.max_drop:g} points is NOT met"
        backed_off = ""
        if self.shipped != "plan":
            backed_off = (f"; shipped {self.shipped}, re-planned for {self.recovery_candidate().budget.describe()} "
                          f"after the plan missed the allowed drop on validation")  # fmt: skip
        emulated = f" [{self.emulation}: the budget was judged on the emulator]" if self.emulation else ""
        return (f"{self.model} on {self.target.name}: {base.latency.median_ms:.3f} → "
                f"{shipped.latency.median_ms:.3f} ms median (speedup {format_speedup(self.speedup, shipped.speedup_se)}, "
                f"budget {self.budget.describe()} = {self.budget_ms:.3f} ms: "
                f"{'met' if self.latency_met else 'NOT met'}{emulated}){metric}{backed_off}")  # fmt: skip

    def recovery_candidate(self):
        return next(c for c in self.recovery.candidates if c.name == self.shipped)

    def shortfall(self) -> str:
        """Which budget was missed and by how much, in one line."""
        if self.plan.ruled_out:
            return (f"the budget ({self.budget.describe()} = {self.budget_ms:.3g} ms) was not met: "
                    f"{self.plan.reachable()}, so the build stopped at the plan stage (relax the budget)")  # fmt: skip
        missed = []
        if not self.latency_met:
            shipped = self.result(self.shipped)
            if self.budget.kind == "speedup":
                by = f"measured {self.speedup:.2f}× speedup, {self.budget.value - self.speedup:.2f}× short"
            elif self.budget.kind == "energy_mj" and shipped.latency.energy_mj is not None:
                by = f"measured {shipped.latency.energy_mj:.3g} mJ, {shipped.latency.energy_mj - self.budget.value:.3g} over"
            else:
                by = f"measured {shipped.latency.median_ms:.3f} ms, {shipped.latency.median_ms - self.budget_ms:.3f} ms over"
            missed.append(f"the latency budget ({self.budget.describe()} = {self.budget_ms:.3g} ms) was not met by "
                          f"{self.shipped}: {by}")  # fmt: skip
        if self.accuracy_met is False:
            if self.accuracy_drop is None or not math.isfinite(self.accuracy_drop):
                by = "there is no finite held-out metric to judge it by"
            else:
                by = (f"held-out {self.result(self.shipped).metric} dropped {self.accuracy_drop:.2f} points, "
                      f"{self.accuracy_drop - self.max_drop:.2f} more than allowed")  # fmt: skip
            missed.append(f"the accuracy budget (--max-drop {self.max_drop:g}) was not met by {self.shipped}: {by}")
        if self.recovery is not None and len(self.recovery.candidates) > 1:
            missed.append(f"{len(self.recovery.candidates)} candidates were tried (report.json: recovery)")
        return "; ".join(missed)
