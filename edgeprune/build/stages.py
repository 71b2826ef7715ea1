"""The build's stages after fine-tuning: export and verify every model it made (plan, baselines, back-off
candidates), and where each is saved."""

from __future__ import annotations

from pathlib import Path

from edgeprune.latency.compare import compare_latency, comparison_rounds
from edgeprune.progress import NoProgress, Progress
from edgeprune.report.records import PlanReport
from edgeprune.types import Artifact, TargetProfile
from edgeprune.types.build import ModelResult, Recovery

BACKOFF = "backoff"  # the back-off candidates are named backoff1, backoff2, … and built under backoff/


def model_names(plan: PlanReport, recovery: Recovery | None = None) -> list[str]:
    """Every model the build measures: the unpruned one, the plan, its baselines, then any back-off candidates."""
    backoff = [c.name for c in recovery.candidates if c.name != "plan"] if recovery is not None else []
    return ["unpruned", "plan", *plan.baselines, *backoff]


def backoff_dir(out_dir: Path, name: str) -> Path:
    """A back-off candidate's build folder of its own (its plan/ holds its rounds, pruned and finetuned models
    like the plan's)."""
    return out_dir / BACKOFF / name


def pruned_dir(out_dir: Path, name: str, finetuned: bool) -> Path:
    """Where a pruned model of the build is saved."""
    if name == "plan":
        base = out_dir / "plan"
    elif name.startswith(BACKOFF):
        base = backoff_dir(out_dir, name) / "plan"
    else:
        base = out_dir / "baselines" / name
    return base / ("finetuned" if finetuned else "pruned")


def qat_dir(out_dir: Path, name: str) -> Path:
    """Where a pruned model's float weights after quantization-aware training are saved (build/quantization_aware)."""
    return pruned_dir(out_dir, name, True).parent / "qat"


def weights_dir(out_dir: Path, name: str) -> Path:
    """The weights a pruned model of the build was exported from: after quantization-aware training when it had
    it, else after fine-tuning."""
    qat = qat_dir(out_dir, name)
    return qat if qat.is_dir() else pruned_dir(out_dir, name, True)


def runtime_format(target: TargetProfile) -> str:
    from edgeprune.backends._registry import get_backend

    return get_backend(target.runtime).format


def export_all(model, target: TargetProfile, names: list[str], out_dir: Path, quantize_on: str | None = None,
               qat=None, progress: Progress | None = None, farm=None) -> dict[str, Artifact]:  # fmt: skip
    """Each model in the target's format and precision; `quantize_on`: the images an int8 export calibrates on.
    `qat(name)`: the artifact of a pruned model after quantization-aware training (--qat-epochs), when asked.
    `farm`: where a format built on the device (TensorRT) is built."""
    from edgeprune.commands import export_model
    from edgeprune.models.saved import load_pruned

    progress = progress or NoProgress()
    artifacts = {}
    calibrated = ", calibrated" if quantize_on and target.precision == "int8" else ""
    with progress.task(f"export to {runtime_format(target)} ({target.precision}{calibrated})", len(names)) as update:
        for done, name in enumerate(names, 1):
            if qat is not None and name != "unpruned":
                artifacts[name] = qat(name)
            else:
                loaded = model if name == "unpruned" else load_pruned(pruned_dir(out_dir, name, True),
                                                                      named_base=model.spec)  # fmt: skip
                artifacts[name] = export_model(loaded, runtime_format(target), out_dir / "export" / name,
                                               target.precision, data=quantize_on, target=target,
                                               farm=farm)  # fmt: skip
            update(done)
    return artifacts


def verify_all(model, target, options, plan, artifacts, splits, out_dir: Path, progress,
               farm=None) -> list[ModelResult]:  # fmt: skip
    """Latency of every model interleaved in one agent session (same conditions; with a `farm`, each model beside
    the unpruned one on a device of its own), then parity and held-out accuracy of each on the target's runtime."""
    from edgeprune.commands import verify_artifact
    from edgeprune.models.saved import load_pruned
    from edgeprune.prune.channels import count_macs_params

    compared = compare_latency(artifacts, target, options, progress,
                               comparison_rounds(plan.base_latency.median_ms, options.runs), farm=farm)  # fmt: skip
    results = []
    for name, artifact in artifacts.items():
        loaded = model if name == "unpruned" else load_pruned(weights_dir(out_dir, name), named_base=model.spec)
        verification = metric = value = None
        if splits is not None:
            progress.note(f"{name}: parity and held-out accuracy on {target.runtime}")
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
