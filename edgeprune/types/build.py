"""The build's records that are made of stage records only: its options and budget, a plan round, a model's result.

The build's reports (PlanReport, BuildReport) hold the planner's records too, so they live beside the planner's
consumers in edgeprune/report/records.py; everything is importable from edgeprune.build.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeprune.errors import ConfigError
from edgeprune.types.record import Record
from edgeprune.types.results import Artifact, LatencyStats, Verification

BASELINES = ("uniform", "flops")  # plans a build can also make the same way, to compare with (--baselines)
VALUES = ("measured", "criterion")  # what the planner can weigh against latency (--value, BuildOptions.value)


@dataclass(frozen=True)
class Budget(Record):
    """`kind`: latency_ms (absolute), speedup (over the measured unpruned median) or energy_mj (per inference)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("latency_ms", "speedup", "energy_mj"):
            raise ConfigError(f"unknown budget {self.kind!r}", expected="latency_ms, speedup or energy_mj")
        if not math.isfinite(self.value) or self.value <= 0 or (self.kind == "speedup" and self.value < 1):
            raise ConfigError(f"budget --{self.kind.replace('_', '-')} {self.value} is not reachable",
                              expected="a finite positive number (a speedup ≥ 1)")  # fmt: skip

    def latency_ms(self, base: LatencyStats) -> float:
        """The budget as a median latency on the target, given the measured unpruned model."""
        if self.kind == "latency_ms":
            return self.value
        if self.kind == "speedup":
            return base.median_ms / self.value
        if base.energy_mj is None or base.power_w is None:
            raise ConfigError("an energy budget needs an energy figure for the target",
                              fix="profile the target (edgeprune profile) or give --latency-ms/--speedup")  # fmt: skip
        # energy per inference = mean power × latency; power is taken as the unpruned model's (measured or
        # estimated, as the profile says)
        return self.value / base.power_w

    def describe(self) -> str:
        unit = {"latency_ms": " ms", "speedup": "×", "energy_mj": " mJ"}[self.kind]
        return f"{self.kind.replace('_', ' ')} {self.value:g}{unit}"


@dataclass(frozen=True)
class PlanRound(Record):
    """One solve → prune → measure round."""

    round: int
    target_predicted_ms: float
    predicted_ms: float
    measured: LatencyStats
    budget_ms: float  # for a speedup budget: this round's unpruned median / speedup
    unpruned_ms: float  # the unpruned model's median, measured interleaved with this round's model
    met: bool
    speedup: float | None = None  # over the unpruned model timed next to it (see latency.compare.Comparison)
    speedup_se: float | None = None  # the speedup's relative standard error (see latency.compare.Comparison)
    predicted_speedup: float | None = None  # the table's: its unpruned prediction / its prediction for this choice
    prediction_error: float | None = None  # predicted_speedup / speedup − 1 (+: the table was optimistic)
    headroom: bool = False  # met with the headroom the plan stage asks for (see build/planning.py: safe)
    headroom_needed: float | None = None  # that headroom: the share of the budget a round must stay under by
    value_lost: float | None = None  # the choice's normalised importance removed (PlanChoice.value_lost)


@dataclass(frozen=True)
class ModelResult(Record):
    """One model of the build (unpruned, plan or a baseline) as measured at the end."""

    name: str
    artifact: Artifact
    latency: LatencyStats  # from the interleaved comparison
    verification: Verification | None
    metric: str | None
    metric_value: float | None  # on the target's runtime, held-out data
    macs: int
    params: int
    speedup: float = 1.0  # over the unpruned model timed next to it (see latency.compare.Comparison)
    speedup_se: float | None = None  # the speedup's relative standard error (see latency.compare.Comparison)


@dataclass(frozen=True)
class Candidate(Record):
    """A pruned model the accuracy recovery fine-tuned and validated: the plan, or a back-off re-planned to a
    gentler speedup when the plan missed the allowed drop."""

    name: str  # "plan", or "backoff1", "backoff2", … in the order they were tried
    budget: Budget  # what it was planned for
    speedup: float | None  # measured in its plan stage, interleaved with the unpruned model; None: ruled out
    speedup_se: float | None
    validation: float | None  # the task metric on the validation split after fine-tuning (its best epoch)
    validation_drop: float | None  # points lost against the unpruned model on the same validation images
    validation_drop_se: float | None  # that drop's paired standard error, in points
    epochs_run: int
    best_epoch: int | None
    meets_drop: bool  # validation at or above Recovery.stop_at


@dataclass(frozen=True)
class Recovery(Record):
    """The accuracy budget's recovery: every candidate tried, and the one shipped (recovery.json)."""

    metric: str
    original_validation: float  # the unpruned model on the validation split (PyTorch)
    max_drop: float | None  # allowed drop in points of the metric (0.01 of a metric in [0, 1]); None: no budget
    stop_at: float | None  # validation metric a candidate must reach: the allowed drop less its margin
    candidates: tuple[Candidate, ...]
    chosen: str  # the candidate shipped: the fastest that meets the drop on validation, else the plan


@dataclass(frozen=True)
class BuildOptions(Record):
    """Everything that decides a build's results (a rerun must match them to resume)."""

    model: str
    weights: str | None
    target: str
    data: str | None
    budget: Budget
    criterion: str = "l1"
    value: str = "measured"  # what an item is worth: "measured" output damage on --data, or the criterion's scores
    step: int | None = None
    finetune_epochs: int = 0
    qat_epochs: int = 0  # int8: epochs of quantization-aware training of each pruned model before its export
    lr: float = 0.01
    distill: bool = True
    runs: int = 50
    warmup: int = 10
    threads: int | None = None
    runtime: str | None = None  # --runtime: one the target declares; None: its default
    precision: str | None = None  # --precision: one the runtime supports; None: the target's (see with_precision)
    baselines: tuple[str, ...] = ()
    lut_variants: int = 3
    lut_calibration: int = 8
    seed: int = 0
    max_drop: float | None = None  # points of the task metric the shipped model may lose; None: not a budget
    backoff_steps: int = 3  # gentler budgets bisected when the plan misses max_drop
    device: str = "auto"  # where fine-tuning and sensitivity run
    reconstruct: bool = False  # refit the layers that read pruned channels by least squares (prune/reconstruct.py)
