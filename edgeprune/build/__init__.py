"""`edgeprune build`: model → measured baseline → latency table → plan (measured on the target, tightened until it
meets the budget) → fine-tune → export → verify → report + app bundle, every stage's artifact in the output
directory.

Resuming: `build.json` in the output directory records the build's options and each finished stage. A rerun with
the same options skips what is finished and reloads its artifacts (the latency table's measurements are also in
the per-device cache, so even an unfinished table stage re-measures nothing it already has); a rerun with other
options is refused rather than mixed with the old results. Stages: profile, lut, plan, finetune, export, verify,
report (baselines, when asked, are part of plan/finetune/verify).
"""

from edgeprune.build.data import HOLDOUT_SHARE, DataSplits, split_data
from edgeprune.build.planning import MARGIN, MAX_ROUNDS, plan_within_budget
from edgeprune.build.run import BASELINES, STAGES, VALUES, BuildState, build
from edgeprune.latency.compare import (
    COMPARISON_MAX_ROUNDS,
    COMPARISON_MAX_S,
    SPEEDUP_SE,
    Comparison,
    compare_latency,
    comparison_rounds,
    format_speedup,
    speedup_se,
)
from edgeprune.report.records import BuildReport, PlanReport
from edgeprune.types.build import Budget, BuildOptions, ModelResult, PlanRound

__all__ = [
    "BASELINES",
    "COMPARISON_MAX_ROUNDS",
    "COMPARISON_MAX_S",
    "HOLDOUT_SHARE",
    "MARGIN",
    "MAX_ROUNDS",
    "SPEEDUP_SE",
    "STAGES",
    "VALUES",
    "Budget",
    "BuildOptions",
    "BuildReport",
    "BuildState",
    "Comparison",
    "DataSplits",
    "ModelResult",
    "PlanReport",
    "PlanRound",
    "build",
    "compare_latency",
    "comparison_rounds",
    "format_speedup",
    "plan_within_budget",
    "speedup_se",
    "split_data",
]
