"""`edgeprune build`: model → measured baseline → latency table → plan (measured on the target, tightened until it
meets the budget) → fine-tune → export → verify → report + app bundle, every stage's artifact in the output
directory.

Resuming: `build.json` in the output directory records the build's options and each finished stage. A rerun with
the same options skips what is finished and reloads its artifacts (the latency table's measurements are also in
the per-device cache, so even an unfinished table stage re-measures nothing it already has); a rerun with other
options is refused rather than mixed with the old results. Stages: profile, lut, plan, finetune, export, verify,
report (baselines, when asked, are part of plan/finetune/verify).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.fileio import staged_folder, write_text
from edgeprune.models.base import LoadedModel
from edgeprune.plan.planner import LatencyCost, MacsCost, PlanChoice, solve, uniform_choice
from edgeprune.plan.sensitivity import Sensitivity, measure_sensitivity, priced
from edgeprune.plan.structure import Structure, read_structure, realize
from edgeprune.progress import NoProgress, Progress, check_interrupt
from edgeprune.types import Artifact, LatencyStats, PrunePlan, Record, TargetProfile, Verification

STAGES = ("profile", "lut", "plan", "finetune", "export", "verify", "report")
BASELINES = ("uniform", "flops")
VALUES = ("measured", "criterion")
MAX_ROUNDS = 5  # solve → prune → measure rounds
MARGIN = 0.07  # the plan aims this far under the budget: medians move 1–12 % between runs on shared machines
COMPARISON_S = 2.0  # seconds of timed runs of the unpruned model before a comparison checks its precision
# A comparison adds rounds until every speedup's standard error is under SPEEDUP_SE (relative) or it has run
# COMPARISON_MAX_S seconds / COMPARISON_MAX_ROUNDS rounds. Measured on the 2-core CI VM, ResNet-20 (0.6 ms) against
# a 1.25x faster plan, 2 threads, 8 sessions each: 15 rounds of 30 runs gave speedups 1.18-1.41 (sd 0.079); 80 rounds,
# 1.23-1.27 (sd 0.015). Each round loads the model afresh, and that per-load spread, not the runs per round,
# dominates. With every core timed (2 threads on 2 cores) any other process stalls a thread: another pair's sessions
# spread 1.40-1.60 at 1.5 % standard error each; with 1 thread, 1.663-1.679 at 0.1-0.2 %.
SPEEDUP_SE = 0.015
TRUSTED_CYCLES = 10  # a standard error from fewer cycles is itself too rough to stop on (stopped early, low by chance)
COMPARISON_MAX_S = 20.0
COMPARISON_MAX_ROUNDS = 250
HOLDOUT_SHARE = 0.2  # of each class, kept out of fine-tuning for the held-out accuracy


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
    speedup: float | None = None  # over the unpruned model timed next to it (see Comparison)
    speedup_se: float | None = None  # the speedup's relative standard error (see Comparison)


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
    speedup: float = 1.0  # over the unpruned model timed next to it (see Comparison)
    speedup_se: float | None = None  # the speedup's relative standard error (see Comparison)


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
    lr: float = 0.01
    distill: bool = True
    runs: int = 50
    warmup: int = 10
    threads: int | None = None
    baselines: tuple[str, ...] = ()
    lut_variants: int = 3
    lut_calibration: int = 8
    seed: int = 0


class BuildState:
    """build.json: the options and the finished stages."""

    def __init__(self, out_dir: Path, options: BuildOptions):
        self.path = out_dir / "build.json"
        self.options = options
        self.done: dict[str, float] = {}
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved.get("options") != json.loads(options.to_json()):
                raise ConfigError(f"{out_dir} holds a build with other options",
                                  fix="rerun with the same options to resume, or pass a new --out")  # fmt: skip
            self.done = saved.get("done", {})

    def finished(self, stage: str) -> bool:
        return stage in self.done

    def finish(self, stage: str, seconds: float) -> None:
        self.done[stage] = round(seconds, 2)
        write_text(self.path, json.dumps({"options": json.loads(self.options.to_json()), "done": self.done}, indent=2))


def build(model: LoadedModel, target: TargetProfile, options: BuildOptions, out_dir: Path,
          progress: Progress | None = None) -> BuildReport:  # fmt: skip
    """Run (or resume) the build; writes report.json, report.html and bundle/ under out_dir."""
    from edgeprune.latency.lut import DEFAULT_STEP, LutReport, build_lut
    from edgeprune.pipeline import artifact_for_target, profile_end_to_end
    from edgeprune.types import ProfileReport

    progress = progress or NoProgress()
    _check(model, target, options)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = BuildState(out_dir, options)
    step = options.step or _target_step(target) or DEFAULT_STEP
    splits = _split_data(model, options.data, out_dir / "data") if options.data else None

    def stage(name: str, run, load):
        if state.finished(name):
            return load()
        progress.note(f"build stage {STAGES.index(name) + 1}/{len(STAGES)}: {name}")
        started = time.time()
        result = run()
        check_interrupt()  # a Ctrl-C that a library swallowed still stops the build before the stage counts
        state.finish(name, time.time() - started)
        return result

    base = stage("profile",
                 lambda: profile_end_to_end(model, artifact_for_target(model, target, out_dir / "unpruned", None),
                                            target, out_dir / "unpruned", runs=options.runs, warmup=options.warmup,
                                            threads=options.threads, progress=progress),
                 lambda: ProfileReport.load(out_dir / "unpruned" / "profile.json"))  # fmt: skip
    lut = stage("lut",
                lambda: build_lut(model, target, out_dir, threads=options.threads, step=step,
                                  variants=options.lut_variants, calibration_variants=options.lut_calibration,
                                  runs=options.runs, warmup=options.warmup, seed=options.seed, progress=progress),
                lambda: LutReport.load(out_dir / "lut.json"))  # fmt: skip
    calibration = _calibration(model, options, splits)
    plan = stage("plan",
                 lambda: _plan(model, target, options, base.latency, base.artifact, lut.table(), step, calibration,
                               out_dir, progress),
                 lambda: PlanReport.load(out_dir / "plan" / "plan_report.json"))  # fmt: skip
    if plan.ruled_out:  # nothing was pruned: nothing to fine-tune, export or verify
        results = [_unpruned_result(model, base)]
    else:
        stage("finetune", lambda: _finetune_all(model, plan, options, splits, out_dir, progress), lambda: None)
        artifacts = stage("export", lambda: _export_all(model, target, plan, out_dir),
                          lambda: {name: Artifact.load(out_dir / "export" / name / "artifact.json")
                                   for name in _names(plan)})  # fmt: skip
        results = stage(
            "verify",
            lambda: _verify_all(model, target, options, plan, artifacts, splits, out_dir, progress),
            lambda: [ModelResult.load(out_dir / "verify" / f"{name}.json") for name in _names(plan)],
        )

    def report() -> BuildReport:
        from edgeprune.report import write_bundle, write_html

        plan_result = next((r for r in results if r.name == "plan"), None)  # None: ruled out at the plan stage
        base_result = next(r for r in results if r.name == "unpruned")
        budget_ms = (
            options.budget.latency_ms(base_result.latency) if options.budget.kind == "speedup" else plan.budget_ms
        )
        measured = plan_result or base_result
        report = BuildReport(
            model=model.spec, target=target, budget=options.budget, budget_ms=budget_ms,
            met=plan_result is not None and _met(options.budget, plan_result, budget_ms),
            speedup=measured.speedup, results=tuple(results), plan=plan,
            lut_mape_percent=lut.mape_percent, stage_seconds=dict(state.done), environment=_environment(),
            latency_method=measured.latency.method,
        )  # fmt: skip
        report.save(out_dir / "report.json")
        write_html(report, lut, out_dir / "report.html")
        if plan_result is not None:
            write_bundle(report, model, out_dir / "bundle", splits)
        return report

    return stage("report", report, lambda: BuildReport.load(out_dir / "report.json"))


def _met(budget: Budget, plan: ModelResult, budget_ms: float) -> bool:
    if budget.kind == "speedup":
        return plan.speedup >= budget.value
    if budget.kind == "energy_mj" and plan.latency.energy_mj is not None:
        return plan.latency.energy_mj <= budget.value
    return plan.latency.median_ms <= budget_ms


def _unpruned_result(model: LoadedModel, base) -> ModelResult:
    """The unpruned model as the profile stage measured it (a build ruled out at the plan stage has no other)."""
    from edgeprune.prune.channels import count_macs_params

    macs, params = count_macs_params(model)
    return ModelResult("unpruned", base.artifact, base.latency, None, None, None, macs, params)


def _check(model: LoadedModel, target: TargetProfile, options: BuildOptions) -> None:
    if options.value not in VALUES:
        raise ConfigError(f"unknown value {options.value!r}", expected=", ".join(VALUES))
    if options.value == "measured" and not options.data:
        raise ConfigError("--value measured needs --data (the images the damage is measured on)",
                          fix="pass --data, or --value criterion")  # fmt: skip
    unknown = set(options.baselines) - set(BASELINES)
    if unknown:
        raise ConfigError(f"unknown baseline {sorted(unknown)[0]!r}", expected=", ".join(BASELINES))
    if options.finetune_epochs and not options.data:
        raise ConfigError("fine-tuning needs --data", fix="pass --data, or --finetune-epochs 0")
    if options.runs < 30:
        raise ConfigError(f"--runs {options.runs} is too few to compare medians", expected="at least 30")


def _target_step(target: TargetProfile) -> int | None:
    step = target.channel_step
    return int(step.value) if step is not None and isinstance(step.value, (int, float)) else None


# --- data ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSplits:
    finetune: str  # what fine-tuning and data-driven criteria see
    holdout: str  # what the accuracy is measured on


def _split_data(model: LoadedModel, data: str, where: Path) -> DataSplits:
    """Classification: an ImageFolder is split per class (the first 80 % to fine-tune, the rest held out), as
    symlink trees under `where`. Detection: the YOLO yaml's own train/val splits."""
    if model.task != "classification":
        from edgeprune.verify.yolo_data import YoloDataset

        YoloDataset.from_yaml(data, split="val").checked(model.detection.num_classes)  # refused before building
        return DataSplits(data, data)
    from edgeprune.verify.data import ImageFolder

    folder = ImageFolder.scan(data, model.class_names)
    counts = np.bincount([label for _, label in folder.samples])
    first = int(counts[counts > 0].min() * (1 - HOLDOUT_SHARE))
    if first < 1:
        raise ConfigError(f"{data} has too few images per class to hold some out", expected="at least 2 per class")
    parts = dict(zip(("finetune", "holdout"), folder.split(first)))
    for name, part in parts.items():
        root = where / name
        if root.exists():
            continue
        with staged_folder(root) as staging:
            for path, label in part.samples:
                link = staging / folder.classes[label] / path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(Path(path).resolve())
    return DataSplits(str(where / "finetune"), str(where / "holdout"))


def _calibration(model: LoadedModel, options: BuildOptions, splits: DataSplits | None):
    """Batches from the fine-tuning split for a data-driven criterion and for measured values (None if neither)."""
    from edgeprune.pipeline import _calibration_batches, _classification_arrays
    from edgeprune.prune.importance import criterion as criterion_spec

    if not (criterion_spec(options.criterion).needs_data or options.value == "measured"):
        return None
    if splits is None:
        raise ConfigError(f"criterion {options.criterion} needs --data")
    arrays = _classification_arrays(model, splits.finetune) if model.task == "classification" else None
    return _calibration_batches(model, splits.finetune, arrays)


# --- plan ---------------------------------------------------------------------------------------------------------


def _plan(model, target, options, base: LatencyStats, base_artifact: Artifact, table, step, calibration, out_dir,
          progress) -> PlanReport:  # fmt: skip
    """Solve on the latency table, prune, measure on the target beside the unpruned model; tighten after a miss
    and loosen after a large overshoot, until the measurement is under the budget with headroom (MARGIN/2, or 4
    standard errors when larger; at most MAX_ROUNDS). The met round that lost the least value is kept, one met
    with that headroom first."""
    from edgeprune.pipeline import export_model
    from edgeprune.prune.io import save_pruned

    budget_ms = options.budget.latency_ms(base)
    structure = read_structure(model, options.criterion, step, data=calibration)
    cost = LatencyCost(table)
    base_predicted = cost.total(structure.uses)
    # The solver takes items until none saves time, so its choice at target 0 is the fastest it can reach,
    # whatever the items' values. Beyond the budget by more than the measurement's spread (MARGIN), no round can
    # meet it: say so now rather than measure, fine-tune and verify models that cannot.
    fastest = solve(structure, cost, 0.0)
    if fastest.predicted * base.median_ms / base_predicted > budget_ms * (1 + MARGIN):
        report = PlanReport(
            options.budget,
            budget_ms,
            base,
            base_predicted,
            fastest,
            (),
            False,
            None,
            layer_ms=_layer_ms(structure, cost, fastest),
            value="nothing: the table ruled the budget out (its fastest reachable model, not built)",
        )
        report.save(out_dir / "plan" / "plan_report.json")
        return report
    sensitivity = None
    if options.value == "measured":
        sensitivity = measure_sensitivity(model, structure, options.criterion, calibration, progress=progress,
                                          data=calibration)  # fmt: skip
        structure = priced(structure, sensitivity)
    # the table's prediction and the measurement differ by a few percent; aim in the table's units
    target_predicted = budget_ms * (1 - MARGIN) * base_predicted / base.median_ms
    rounds: list[PlanRound] = []
    kept = None  # (choice, pruned, prune_plan, safe) of the met round that lost the least value, safe ones first
    for k in range(MAX_ROUNDS):
        choice = solve(structure, cost, target_predicted)
        pruned = copy.deepcopy(model)
        prune_plan = realize(pruned, structure, choice.state(), options.criterion, data=calibration)
        round_dir = out_dir / "plan" / f"round{k}"
        artifact = export_model(pruned, _format(target), round_dir, target.precision, target=target)
        # measured beside the unpruned model in one session, so a machine that got slower since the profile
        # stage moves both (a speedup budget is judged against this round's unpruned median)
        compared = compare_latency({"unpruned": base_artifact, "candidate": artifact}, target, options, progress,
                                   comparison_rounds(base.median_ms, options.runs))  # fmt: skip
        measured, unpruned_ms = compared.latency["candidate"], compared.latency["unpruned"].median_ms
        speedup, speedup_se = compared.speedup["candidate"], compared.speedup_se["candidate"]
        if options.budget.kind == "speedup":  # judged on the speedup, timed next to the unpruned model
            round_budget = unpruned_ms / options.budget.value
            fraction = options.budget.value / speedup  # of the budget used
        else:
            round_budget = budget_ms
            fraction = measured.median_ms / round_budget  # of the budget used
        rounds.append(PlanRound(k, target_predicted, choice.predicted, measured, round_budget, unpruned_ms,
                                fraction <= 1.0, speedup, speedup_se))  # fmt: skip
        # The verify stage times the plan again, with its own error: a round that only just met the budget fails
        # there half the time. The two measurements differ by √2 standard errors, and by ~1.35x that between agent
        # sessions (measured, 8 sessions): 4 standard errors of headroom cover ~2 sd of the difference.
        safe = fraction <= 1 - max(MARGIN / 2, 4 * speedup_se)
        if rounds[-1].met and (kept is None or (safe, -choice.value_lost) > (kept[3], -kept[0].value_lost)):
            kept = (choice, pruned, prune_plan, safe)
        slack = fraction < 1 - 3 * MARGIN  # far under: the table overestimated
        if (safe and not slack) or (not rounds[-1].met and not choice.met):
            break  # under the budget with headroom, or the model cannot be pruned further
        # tighten after a miss, loosen after an overshoot: move the target by the measured error
        target_predicted *= (1 - MARGIN) / fraction
    if kept is not None:
        choice, pruned, prune_plan, _ = kept
    from edgeprune.pipeline import _portable_spec

    prune_plan = _finish_plan(prune_plan, model, options, choice, budget_ms, _portable_spec)
    save_pruned(pruned, prune_plan, out_dir / "plan" / "pruned")
    baselines = _baseline_choices(structure, cost, choice, options)
    for name, baseline in baselines.items():
        copy_ = copy.deepcopy(model)
        baseline_plan = realize(copy_, structure, baseline.state(), options.criterion, data=calibration)
        save_pruned(copy_, _finish_plan(baseline_plan, model, options, baseline, budget_ms, _portable_spec),
                    out_dir / "baselines" / name / "pruned")  # fmt: skip
    report = PlanReport(
        options.budget,
        budget_ms,
        base,
        base_predicted,
        choice,
        tuple(rounds),
        kept is not None,
        prune_plan,
        baselines,
        _layer_ms(structure, cost, choice),
        sensitivity.summary() if sensitivity else f"criterion ({options.criterion})",
        sensitivity,
    )
    report.save(out_dir / "plan" / "plan_report.json")
    return report


def _layer_ms(structure: Structure, cost: LatencyCost, choice: PlanChoice) -> dict[str, tuple[float, float]]:
    """Each layer's table latency before and after the choice (0 after: removed with a block)."""
    after = {u.name: cost.layer(u) for u in structure.layers(choice.state())}
    return {u.name: (cost.layer(u), after.get(u.name, 0.0)) for u in structure.uses}


def _finish_plan(plan: PrunePlan, model: LoadedModel, options: BuildOptions, choice: PlanChoice, budget_ms: float,
                 portable) -> PrunePlan:  # fmt: skip
    import dataclasses

    return dataclasses.replace(plan, base_model=portable(model.spec), base_fingerprint=model.fingerprint,
                               budget=f"{options.budget.describe()} ({budget_ms:.3f} ms)",
                               predicted_latency_ms=choice.predicted if choice.unit == "ms" else None)  # fmt: skip


def _baseline_choices(structure: Structure, cost: LatencyCost, plan: PlanChoice, options) -> dict[str, PlanChoice]:
    """Uniform: one ratio for every group, as slow as the plan by the table. FLOPs-driven: the same solver with
    MACs as the cost, to the plan's MACs."""
    found = {}
    if "uniform" in options.baselines:
        found["uniform"] = uniform_choice(structure, cost, plan.predicted)
    if "flops" in options.baselines:
        macs = MacsCost()
        plan_macs = macs.total(structure.layers(plan.state()))
        found["flops"] = solve(structure, macs, plan_macs)
    return found


def _names(plan: PlanReport) -> list[str]:
    return ["unpruned", "plan", *plan.baselines]


def _pruned_dir(out_dir: Path, name: str, finetuned: bool) -> Path:
    base = out_dir / "plan" if name == "plan" else out_dir / "baselines" / name
    return base / ("finetuned" if finetuned else "pruned")


# --- fine-tune, export, verify --------------------------------------------------------------------------------------


def _finetune_all(model, plan: PlanReport, options: BuildOptions, splits, out_dir: Path, progress) -> None:
    """Fine-tune the plan's model and each baseline with the same recipe (a copy when there is nothing to do)."""
    from edgeprune.pipeline import _classification_arrays, _finetuner
    from edgeprune.prune.io import load_pruned, save_pruned
    from edgeprune.train.finetune import FinetuneRecipe

    recipe = FinetuneRecipe(epochs=options.finetune_epochs, lr=options.lr, seed=options.seed,
                            distill_alpha=0.5 if options.distill else 0.0)  # fmt: skip
    arrays = None
    for name in _names(plan)[1:]:
        source, target_dir = _pruned_dir(out_dir, name, False), _pruned_dir(out_dir, name, True)
        if target_dir.exists():
            continue  # finished before an interruption
        with staged_folder(target_dir) as staging:
            if options.finetune_epochs:
                pruned = load_pruned(source, named_base=model.spec)
                if arrays is None and model.task == "classification":
                    arrays = _classification_arrays(model, splits.finetune)
                teacher = copy.deepcopy(model.module).eval() if options.distill else None
                _finetuner(pruned)(pruned, splits.finetune, arrays, recipe, teacher, staging, progress)
                save_pruned(pruned, _saved_plan(source), staging)
            else:
                shutil.copytree(source, staging, dirs_exist_ok=True)


def _saved_plan(directory: Path) -> PrunePlan:
    from edgeprune.prune.io import PLAN_FILE

    return PrunePlan.load(directory / PLAN_FILE)


def _format(target: TargetProfile) -> str:
    from edgeprune.backends._registry import get_backend

    return get_backend(target.runtime).format


def _export_all(model, target: TargetProfile, plan: PlanReport, out_dir: Path) -> dict[str, Artifact]:
    from edgeprune.pipeline import export_model
    from edgeprune.prune.io import load_pruned

    artifacts = {}
    for name in _names(plan):
        loaded = model if name == "unpruned" else load_pruned(_pruned_dir(out_dir, name, True), named_base=model.spec)
        artifacts[name] = export_model(loaded, _format(target), out_dir / "export" / name, target.precision,
                                       target=target)  # fmt: skip
    return artifacts


def _verify_all(model, target, options, plan, artifacts, splits, out_dir: Path, progress) -> list[ModelResult]:
    """Latency of every model interleaved in one agent session (same conditions), then parity and held-out
    accuracy of each on the target's runtime."""
    from edgeprune.pipeline import verify_artifact
    from edgeprune.prune.channels import count_macs_params
    from edgeprune.prune.io import load_pruned

    compared = compare_latency(artifacts, target, options, progress,
                               comparison_rounds(plan.base_latency.median_ms, options.runs))  # fmt: skip
    results = []
    for name, artifact in artifacts.items():
        loaded = model if name == "unpruned" else load_pruned(_pruned_dir(out_dir, name, True), named_base=model.spec)
        verification = metric = value = None
        if splits is not None:
            verification = verify_artifact(
                loaded,
                target,
                splits.holdout,
                out_dir / "verify" / name,
                artifact_path=artifact.path,
                threads=options.threads,
                progress=progress,
            )
            if verification.metrics:
                metric, value = verification.metrics[0].name, verification.metrics[0].runtime
        macs, params = count_macs_params(loaded)
        result = ModelResult(name, artifact, compared.latency[name], verification, metric, value, macs, params,
                             compared.speedup[name], compared.speedup_se[name])  # fmt: skip
        result.save(out_dir / "verify" / f"{name}.json")
        results.append(result)
    return results


def comparison_rounds(unpruned_ms: float, runs: int) -> int:
    """The first interleaved rounds of a comparison: enough that the unpruned model is timed for COMPARISON_S
    seconds in all, 3 to 15. compare_latency adds more until the speedups are precise."""
    return int(min(15, max(3, math.ceil(COMPARISON_S * 1000 / (unpruned_ms * runs)))))


@dataclass(frozen=True)
class Comparison:
    """Models timed interleaved in one session. `speedup`: over the first model, from the ratio of the two medians
    timed next to each other in a round, averaged (geometric mean) over each cycle of orders, median over cycles;
    `speedup_se`: its relative standard error, from the spread of those cycle ratios (median absolute deviation as
    a normal sd; 1.2533 sd/√n for a median)."""

    latency: dict[str, LatencyStats]
    speedup: dict[str, float]
    speedup_se: dict[str, float]
    rounds: int


def compare_latency(artifacts: dict[str, Artifact], target: TargetProfile, options: BuildOptions,
                    progress: Progress, min_rounds: int = 3) -> Comparison:  # fmt: skip
    """Each artifact timed in interleaved rounds in one agent session; `options.runs` timed runs per round after
    `options.warmup` warm-ups. At least `min_rounds` and 3 cycles, then whole cycles until every speedup's standard
    error is at most SPEEDUP_SE (or COMPARISON_MAX_S / COMPARISON_MAX_ROUNDS is reached). A slow spell of the
    machine scales both models of a round, so it does not move the per-round ratio. The order turns every round,
    and a cycle is one turn through every order: a model timed right after another (in memory that one freed) runs
    a few percent faster than in a later slot (measured: 2.5-7 % for ResNet-20 on the CI VM)."""
    from edgeprune.devices.agent_client import AgentSession
    from edgeprune.devices.transport import transport_for

    names, cycle = list(artifacts), len(artifacts)
    min_rounds = cycle * max(3, math.ceil(min_rounds / cycle))
    samples: dict[str, list[float]] = {name: [] for name in names}
    medians: dict[str, list[float]] = {name: [] for name in names}
    meta = {}
    started = time.monotonic()
    with AgentSession(transport_for(target)) as agent, \
            progress.task("latency, interleaved", min_rounds * cycle) as update:  # fmt: skip
        agent.info(target.name, target.runtime)
        rounds = 0
        while rounds < min_rounds or rounds % cycle or (
            rounds < COMPARISON_MAX_ROUNDS and time.monotonic() - started < COMPARISON_MAX_S
            and (rounds < TRUSTED_CYCLES * cycle
                 or max(_speedup_se(medians[names[0]], medians[name], cycle) for name in names) > SPEEDUP_SE)
        ):  # fmt: skip
            for i, name in enumerate(names[rounds % cycle :] + names[: rounds % cycle]):
                timed = agent.bench(Path(artifacts[name].path), target.runtime,
                                    threads=options.threads or target.threads, warmup=options.warmup,
                                    runs=options.runs)  # fmt: skip
                samples[name] += timed["timings_ms"]
                medians[name].append(float(np.median(timed["timings_ms"])))
                meta[name] = timed
                update(min(rounds, min_rounds - 1) * cycle + i + 1)
            rounds += 1
        label = agent.transport.label
    speedup = {name: math.exp(float(np.median(_cycle_log_ratios(medians[names[0]], medians[name], cycle))))
               for name in names}  # fmt: skip
    speedup_se = {name: _speedup_se(medians[names[0]], medians[name], cycle) for name in names}
    latency = {
        name: LatencyStats.from_samples(
            values,
            warmup=options.warmup,
            runtime=meta[name]["runtime"],
            runtime_version=meta[name]["runtime_version"],
            threads=meta[name]["threads"],
            method=(
                f"measured: {label} agent, {rounds} interleaved rounds of {options.runs} runs (after "
                f"{options.warmup} warm-up) per model in one session, order turned every round, pooled; "
                f"speedup = median over {rounds // cycle} cycles of the {names[0]} model's median over this "
                f"model's, timed next to each other (standard error {100 * max(speedup_se.values()):.1f} % "
                f"or less)"
            ),
        )  # fmt: skip
        for name, values in samples.items()
    }
    return Comparison(latency, speedup, speedup_se, rounds)


def format_speedup(value: float, se: float | None) -> str:
    """ "2.31×", with " ± 1.5 %" (the relative standard error) when known."""
    return f"{value:.2f}×" + (f" ± {100 * se:.1f} %" if se else "")


def _cycle_log_ratios(reference_ms: list[float], model_ms: list[float], cycle: int) -> np.ndarray:
    """log(reference / model) per round, averaged over each whole cycle of `cycle` rounds."""
    logs = np.log(np.divide(reference_ms, model_ms))
    whole = len(logs) // cycle * cycle
    return logs[:whole].reshape(-1, cycle).mean(axis=1)


def _speedup_se(reference_ms: list[float], model_ms: list[float], cycle: int = 1) -> float:
    """Relative standard error of the median over cycles of the ratio (MAD as a normal sd; a median's error is
    1.2533 sd/√n); inf below 3 cycles."""
    logs = _cycle_log_ratios(reference_ms, model_ms, cycle)
    if len(logs) < 3:
        return math.inf
    sd = 1.4826 * float(np.median(np.abs(logs - np.median(logs))))
    return 1.2533 * sd / math.sqrt(len(logs))


def _environment() -> dict[str, str]:
    import platform

    import torch

    import edgeprune

    versions = {"edgeprune": getattr(edgeprune, "__version__", "dev"), "python": platform.python_version(),
                "torch": torch.__version__, "platform": platform.platform()}  # fmt: skip
    for name in ("onnxruntime", "torch_pruning", "onnx"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return versions
