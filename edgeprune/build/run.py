"""Running (or resuming) a build: its stages in order, each finished stage recorded in build.json."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from edgeprune.build.data import calibration_for, quantizer_data, split_data
from edgeprune.build.planning import plan_within_budget
from edgeprune.build.quantization_aware import check as check_quantization_aware
from edgeprune.build.quantization_aware import export_quantization_aware
from edgeprune.build.recovery import RECOVERY_FILE, recover
from edgeprune.build.stages import export_all, model_names, pruned_dir, verify_all
from edgeprune.errors import ConfigError
from edgeprune.fileio import write_text
from edgeprune.models.base import LoadedModel
from edgeprune.models.saved import PLAN_FILE
from edgeprune.progress import NoProgress, Progress, check_interrupt
from edgeprune.report.records import BuildReport, PlanReport
from edgeprune.types import Artifact, PrunePlan, TargetProfile
from edgeprune.types.build import BASELINES, VALUES, Budget, BuildOptions, ModelResult, Recovery

STAGES = ("profile", "lut", "plan", "finetune", "export", "verify", "report")


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
          progress: Progress | None = None, farm=None) -> BuildReport:  # fmt: skip
    """Run (or resume) the build; writes report.json, report.html and bundle/ under out_dir. With a `farm`
    (edgeprune.farm.Farm, its first device the `target`), the latency table, the plan rounds and the verify stage's
    comparisons are spread over its devices."""
    from edgeprune.commands import artifact_for_target, profile_end_to_end
    from edgeprune.latency.lut import DEFAULT_STEP, LutReport, build_lut
    from edgeprune.types import ProfileReport

    progress = progress or NoProgress()
    _check(model, target, options)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = BuildState(out_dir, options)
    step = options.step or _target_step(target) or DEFAULT_STEP
    splits = split_data(model, options.data, out_dir / "data") if options.data else None
    quantize_on = quantizer_data(target, splits)

    def stage(name: str, run, load):
        label = f"build stage {STAGES.index(name) + 1}/{len(STAGES)}: {name}"
        if state.finished(name):
            progress.note(f"{label}, finished earlier: read from {out_dir}")
            return load()
        with progress.stage(label):
            started = time.time()
            result = run()
            check_interrupt()  # a Ctrl-C that a library swallowed still stops the build before the stage counts
            state.finish(name, time.time() - started)
        return result

    def profile_unpruned():
        artifact = artifact_for_target(model, target, out_dir / "unpruned", None, quantize_on)
        return profile_end_to_end(model, artifact, target, out_dir / "unpruned", runs=options.runs,
                                  warmup=options.warmup, threads=options.threads, progress=progress)  # fmt: skip

    base = stage("profile", profile_unpruned,
                 lambda: ProfileReport.load(out_dir / "unpruned" / "profile.json"))  # fmt: skip
    lut = stage("lut",
                lambda: build_lut(model, target, out_dir, threads=options.threads, step=step,
                                  variants=options.lut_variants, calibration_variants=options.lut_calibration,
                                  runs=options.runs, warmup=options.warmup, seed=options.seed, progress=progress,
                                  farm=farm),
                lambda: LutReport.load(out_dir / "lut.json"))  # fmt: skip
    calibration = calibration_for(model, options, splits)
    plan = stage("plan",
                 lambda: plan_within_budget(model, target, options, base.latency, base.artifact, lut.table(), step, calibration,
                               out_dir, progress, quantize_on=quantize_on, farm=farm),
                 lambda: PlanReport.load(out_dir / "plan" / "plan_report.json"))  # fmt: skip
    recovery = None
    if plan.ruled_out:  # nothing was pruned: nothing to fine-tune, export or verify
        results = [_unpruned_result(model, base)]
    else:

        def replan(budget: Budget, folder: Path) -> PlanReport:  # a back-off candidate: gentler, no baselines
            return plan_within_budget(model, target, dataclasses.replace(options, budget=budget, baselines=()),
                                      base.latency, base.artifact, lut.table(), step, calibration, folder, progress,
                                      sensitivity=plan.sensitivity, quantize_on=quantize_on, farm=farm)  # fmt: skip

        recovery = stage("finetune", lambda: recover(model, options, plan, replan, splits, out_dir, progress),
                         lambda: _saved_recovery(out_dir))  # fmt: skip
        names = model_names(plan, recovery)
        qat = None
        if options.qat_epochs:

            def qat(name: str) -> Artifact:
                return export_quantization_aware(model, target, options, name, splits, quantize_on, out_dir, progress)

        artifacts = stage("export", lambda: export_all(model, target, names, out_dir, quantize_on, qat, progress, farm),
                          lambda: {name: Artifact.load(out_dir / "export" / name / "artifact.json")
                                   for name in names})  # fmt: skip
        results = stage(
            "verify",
            lambda: verify_all(model, target, options, plan, artifacts, splits, out_dir, progress, farm),
            lambda: [ModelResult.load(out_dir / "verify" / f"{name}.json") for name in names],
        )

    def report() -> BuildReport:
        from edgeprune.report import write_bundle, write_html

        by_name = {r.name: r for r in results}
        base_result = by_name["unpruned"]
        shipped_name = recovery.chosen if recovery is not None else "plan"
        shipped = by_name.get(shipped_name)  # None: ruled out at the plan stage
        budget_ms = (
            options.budget.latency_ms(base_result.latency) if options.budget.kind == "speedup" else plan.budget_ms
        )
        latency_met = shipped is not None and _met(options.budget, shipped, budget_ms)
        drop = _drop(base_result, shipped)
        accuracy_met = None
        if options.max_drop is not None and shipped is not None:
            accuracy_met = drop is not None and math.isfinite(drop) and drop <= options.max_drop + 1e-9
        report = BuildReport(
            model=model.spec, target=target, budget=options.budget, budget_ms=budget_ms,
            met=latency_met and accuracy_met is not False, speedup=(shipped or base_result).speedup,
            results=tuple(results), plan=plan, lut_mape_percent=lut.mape_percent, stage_seconds=dict(state.done),
            environment=_environment(), latency_method=(shipped or base_result).latency.method,
            latency_met=latency_met, shipped=shipped_name, max_drop=options.max_drop, accuracy_drop=drop,
            accuracy_met=accuracy_met, recovery=recovery, options=options,
        )  # fmt: skip
        report.save(out_dir / "report.json")
        write_html(report, lut, out_dir / "report.html")
        if shipped is not None:
            write_bundle(report, model, out_dir / "bundle", splits,
                         PrunePlan.load(pruned_dir(out_dir, shipped_name, True) / PLAN_FILE))  # fmt: skip
        return report

    return stage("report", report, lambda: BuildReport.load(out_dir / "report.json"))


def _drop(base: ModelResult, shipped: ModelResult | None) -> float | None:
    """Points of the held-out metric lost on the target's runtime (a metric in [0, 1]: 0.01 is one point)."""
    if shipped is None or base.metric_value is None or shipped.metric_value is None:
        return None
    return (base.metric_value - shipped.metric_value) * 100


def _saved_recovery(out_dir: Path) -> Recovery | None:
    path = out_dir / RECOVERY_FILE
    return Recovery.load(path) if path.is_file() else None


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
    if options.max_drop is not None and not options.data:
        raise ConfigError("--max-drop needs --data (the held-out images the accuracy is judged on)",
                          fix="pass --data, or --max-drop none")  # fmt: skip
    if options.max_drop is not None and not (math.isfinite(options.max_drop) and options.max_drop >= 0):
        raise ConfigError(f"--max-drop {options.max_drop:g} is not an accuracy budget",
                          expected="a finite number of points ≥ 0, or none")  # fmt: skip
    check_quantization_aware(model, target, options)
    if options.runs < 30:
        raise ConfigError(f"--runs {options.runs} is too few to compare medians", expected="at least 30")


def _target_step(target: TargetProfile) -> int | None:
    step = target.channel_step
    return int(step.value) if step is not None and isinstance(step.value, (int, float)) else None


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
