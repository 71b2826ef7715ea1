"""The build's stages after the plan: fine-tune, export and verify the plan's model and each baseline."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from edgeprune.fileio import staged_folder
from edgeprune.latency.compare import compare_latency, comparison_rounds
from edgeprune.report.records import PlanReport
from edgeprune.types import Artifact, PrunePlan, TargetProfile
from edgeprune.types.build import BuildOptions, ModelResult


def model_names(plan: PlanReport) -> list[str]:
    return ["unpruned", "plan", *plan.baselines]


def pruned_dir(out_dir: Path, name: str, finetuned: bool) -> Path:
    base = out_dir / "plan" if name == "plan" else out_dir / "baselines" / name
    return base / ("finetuned" if finetuned else "pruned")


def finetune_all(model, plan: PlanReport, options: BuildOptions, splits, out_dir: Path, progress) -> None:
    """Fine-tune the plan's model and each baseline with the same recipe (a copy when there is nothing to do). With
    a validation split, the best epoch on it is kept; each epoch is checkpointed, so an interrupted build resumes
    inside the fine-tuning."""
    from edgeprune.commands import finetuner
    from edgeprune.models.saved import load_pruned, save_pruned
    from edgeprune.train.finetune import FinetuneRecipe

    recipe = FinetuneRecipe(epochs=options.finetune_epochs, lr=options.lr, seed=options.seed,
                            distill_alpha=0.5 if options.distill else 0.0)  # fmt: skip
    for name in model_names(plan)[1:]:
        source, target_dir = pruned_dir(out_dir, name, False), pruned_dir(out_dir, name, True)
        if target_dir.exists():
            continue  # finished before an interruption
        checkpoints = out_dir / "checkpoints" / name  # outside the staging folder, so an interruption keeps them
        with staged_folder(target_dir) as staging:
            if options.finetune_epochs:
                pruned = load_pruned(source, named_base=model.spec)
                teacher = copy.deepcopy(model.module).eval() if options.distill else None
                result = finetuner(pruned)(pruned, splits.finetune, recipe, teacher, staging, progress,
                                           validation=splits.validation,
                                           checkpoints=checkpoints)  # fmt: skip
                result.save(staging / "finetune_result.json")
                save_pruned(pruned, _saved_plan(source), staging)
            else:
                shutil.copytree(source, staging, dirs_exist_ok=True)
        shutil.rmtree(checkpoints, ignore_errors=True)  # the weights are saved: nothing left to resume


def _saved_plan(directory: Path) -> PrunePlan:
    from edgeprune.models.saved import PLAN_FILE

    return PrunePlan.load(directory / PLAN_FILE)


def runtime_format(target: TargetProfile) -> str:
    from edgeprune.backends._registry import get_backend

    return get_backend(target.runtime).format


def export_all(model, target: TargetProfile, plan: PlanReport, out_dir: Path) -> dict[str, Artifact]:
    from edgeprune.commands import export_model
    from edgeprune.models.saved import load_pruned

    artifacts = {}
    for name in model_names(plan):
        loaded = model if name == "unpruned" else load_pruned(pruned_dir(out_dir, name, True), named_base=model.spec)
        artifacts[name] = export_model(loaded, runtime_format(target), out_dir / "export" / name, target.precision,
                                       target=target)  # fmt: skip
    return artifacts


def verify_all(model, target, options, plan, artifacts, splits, out_dir: Path, progress) -> list[ModelResult]:
    """Latency of every model interleaved in one agent session (same conditions), then parity and held-out
    accuracy of each on the target's runtime."""
    from edgeprune.commands import verify_artifact
    from edgeprune.models.saved import load_pruned
    from edgeprune.prune.channels import count_macs_params

    compared = compare_latency(artifacts, target, options, progress,
                               comparison_rounds(plan.base_latency.median_ms, options.runs))  # fmt: skip
    results = []
    for name, artifact in artifacts.items():
        loaded = model if name == "unpruned" else load_pruned(pruned_dir(out_dir, name, True), named_base=model.spec)
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
