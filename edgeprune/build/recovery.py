"""The build's accuracy budget before the verdict: fine-tune each pruned model up to the epoch cap, stopping as soon
as it is within the allowed drop on the validation split; when the plan cannot get there, back off to gentler
speedups (bisected on the validation metric) and choose the fastest candidate that does.

The held-out split is never looked at here: it only judges the shipped model at the end (verify stage). Detectors
have no validation split of edgeprune's (their trainers validate on the yaml's val split themselves), so for them
there is no early stop and no back-off: the held-out verdict alone says whether the drop was met.
"""

from __future__ import annotations

import copy
import math
import shutil
from collections.abc import Callable
from pathlib import Path

from edgeprune.build.stages import BACKOFF, backoff_dir, model_names, pruned_dir
from edgeprune.fileio import staged_folder
from edgeprune.report.records import PlanReport
from edgeprune.types import PrunePlan
from edgeprune.types.build import Budget, BuildOptions, Candidate, Recovery

# Early stopping aims this share of the allowed drop under it. Validation and held-out are different images, and the
# drop measured on 1,600 validation images has a paired standard error of ~0.85 points (11–13 % of images change
# their verdict after pruning; measured on ResNet-56, CIFAR-10 JPEGs, 2026-12-04). With a quarter of a 1-point
# drop as margin, candidates 0.75–0.81 points down on validation were 2.3–2.5 points down on held-out (the best of
# up to 10 noisy epochs is optimistic); those 0.06–0.31 down were 0.05–0.30 down. Half is the margin.
DROP_MARGIN = 0.5
RESULT_FILE = "finetune_result.json"
RECOVERY_FILE = "recovery.json"


def recover(model, options: BuildOptions, plan: PlanReport, replan: Callable[[Budget, Path], PlanReport], splits,
            out_dir: Path, progress) -> Recovery | None:  # fmt: skip
    """Fine-tune the plan and each baseline (same recipe, same stopping rule); with a validation split and an
    accuracy budget, back off while the plan misses it. `replan(budget, folder)` plans one gentler budget into
    `folder`. Returns None when there is no validation split (no data, or a detector)."""
    validation = splits.validation if splits is not None else None
    original_correct = _validation_correct(model, validation, options) if validation else None
    original = float(original_correct.mean()) if original_correct is not None else None
    judged = options.max_drop is not None and original is not None
    stop_at = original - options.max_drop * (1 - DROP_MARGIN) / 100 if judged else None
    results = {name: finetune_one(model, out_dir, name, options, splits, stop_at, progress)
               for name in model_names(plan)[1:]}  # fmt: skip
    if original is None:
        return None

    def candidate(name: str, budget: Budget, report: PlanReport, result) -> Candidate:
        # one pass over validation on the saved weights gives both the metric and the paired per-image drop
        correct = _validation_correct(_finetuned(model, out_dir, name), validation, options)
        return _candidate(name, budget, report, result, stop_at, float(correct.mean()),
                          _paired_drop(original_correct, correct))  # fmt: skip

    candidates = [candidate("plan", plan.budget, plan, results["plan"])]
    if judged and not candidates[0].meets_drop:
        gentle, steep = 1.0, _as_speedup(plan)  # the unpruned model meets any drop; the plan's budget did not
        for k in range(1, options.backoff_steps + 1):
            name, budget = f"{BACKOFF}{k}", Budget("speedup", math.sqrt(gentle * steep))
            missed = candidates[-1]
            progress.note(f"{missed.name} is {missed.validation_drop:.2f} ± {missed.validation_drop_se:.2f} points "
                          f"under the original on validation (allowed: {options.max_drop:g}, aiming at "
                          f"{options.max_drop * (1 - DROP_MARGIN):g}): backing off to {budget.describe()}")  # fmt: skip
            folder = backoff_dir(out_dir, name)
            saved = folder / "plan" / "plan_report.json"
            report = PlanReport.load(saved) if saved.is_file() else replan(budget, folder)
            if report.ruled_out:
                break  # the table rules out a speedup gentler than one it allowed only if the table changed
            result = finetune_one(model, out_dir, name, options, splits, stop_at, progress)
            candidates.append(candidate(name, budget, report, result))
            gentle, steep = (budget.value, steep) if candidates[-1].meets_drop else (gentle, budget.value)
    meeting = [c for c in candidates if c.meets_drop and c.speedup is not None]
    chosen = max(meeting, key=lambda c: c.speedup).name if meeting else "plan"
    recovery = Recovery(
        metric="top1", original_validation=original, max_drop=options.max_drop, stop_at=stop_at,
        candidates=tuple(candidates), chosen=chosen,
    )  # fmt: skip
    recovery.save(out_dir / RECOVERY_FILE)
    return recovery


def finetune_one(model, out_dir: Path, name: str, options: BuildOptions, splits, stop_at: float | None,
                 progress):  # fmt: skip
    """Fine-tune one pruned model (a copy when the cap is 0), its FinetuneResult saved beside its weights. Each
    epoch is checkpointed outside the staging folder, so an interrupted build resumes inside the fine-tuning."""
    from edgeprune.commands import finetuner
    from edgeprune.models.saved import PLAN_FILE, load_pruned, save_pruned
    from edgeprune.train.finetune import FinetuneRecipe, FinetuneResult

    source, target_dir = pruned_dir(out_dir, name, False), pruned_dir(out_dir, name, True)
    if (target_dir / RESULT_FILE).is_file():
        return FinetuneResult.load(target_dir / RESULT_FILE)  # finished before an interruption
    validation = splits.validation if splits is not None else None
    checkpoints = out_dir / "checkpoints" / name
    with staged_folder(target_dir) as staging:
        if options.finetune_epochs:
            progress.note(f"fine-tuning {name} (at most {options.finetune_epochs} epochs)")
            recipe = FinetuneRecipe.for_build(options)
            pruned = load_pruned(source, named_base=model.spec)
            teacher = copy.deepcopy(model.module).eval() if options.distill else None
            result = finetuner(pruned)(pruned, splits.finetune, recipe, teacher, staging, progress,
                                       device=options.device, validation=validation, stop_at=stop_at,
                                       checkpoints=checkpoints)  # fmt: skip
            save_pruned(pruned, PrunePlan.load(source / PLAN_FILE), staging)
        else:  # not scored here: recover scores every candidate's saved weights once
            shutil.copytree(source, staging, dirs_exist_ok=True)
            result = FinetuneResult(losses=(), validation=(), epochs_run=0, best_epoch=None, stopped_early=False)
        result.save(staging / RESULT_FILE)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the weights are saved: nothing left to resume
    return result


def _validation_correct(loaded, folder: str, options: BuildOptions):
    """Whether the PyTorch model gets each validation image right (1.0) or not, streamed, on the build's device."""
    import numpy as np

    from edgeprune.train.data import ImageSamples
    from edgeprune.train.finetune import correct_per_sample

    samples = ImageSamples.scan(folder, loaded.class_names, loaded.preprocessing)
    return correct_per_sample(loaded.module, samples, device=options.device).numpy().astype(np.float64)


def _paired_drop(original, candidate) -> tuple[float, float]:
    """Points the candidate lost on the same images, and that drop's standard error (paired: only the images whose
    verdict changed carry it)."""
    differences = original - candidate
    variance = max(float((differences**2).mean() - differences.mean() ** 2), 0.0)
    return float(differences.mean()) * 100, (variance / len(differences)) ** 0.5 * 100


def _finetuned(model, out_dir: Path, name: str):
    from edgeprune.models.saved import load_pruned

    return load_pruned(pruned_dir(out_dir, name, True), named_base=model.spec)


def _candidate(name: str, budget: Budget, report: PlanReport, result, stop_at: float | None, validation: float,
               drop: tuple[float, float]) -> Candidate:  # fmt: skip
    kept = report.kept()
    return Candidate(
        name=name, budget=budget, speedup=kept.speedup if kept else None, speedup_se=kept.speedup_se if kept else None,
        validation=validation, validation_drop=drop[0], validation_drop_se=drop[1], epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        meets_drop=stop_at is not None and math.isfinite(validation) and validation >= stop_at,
    )  # fmt: skip


def _as_speedup(plan: PlanReport) -> float:
    """The plan's budget as a speedup over the unpruned model, whatever its kind."""
    if plan.budget.kind == "speedup":
        return plan.budget.value
    return max(1.0, plan.base_latency.median_ms / plan.budget_ms)
