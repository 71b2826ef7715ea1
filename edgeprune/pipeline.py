"""The stages: export, verify, profile. Each takes and returns the artifacts of types.py and writes its JSON.

`build` (load → profile → plan → prune → fine-tune → export → verify → report) will compose these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.backends._registry import backend_for_format, get_backend
from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.transport import transport_for
from edgeprune.errors import ConfigError, DataError
from edgeprune.latency.energy import energy_for
from edgeprune.models.base import LoadedModel
from edgeprune.progress import NoProgress, Progress
from edgeprune.types import Artifact, LatencyStats, MetricComparison, ProfileReport, TargetProfile, Verification
from edgeprune.verify.data import ImageFolder
from edgeprune.verify.metrics import classification_metrics
from edgeprune.verify.parity import compare_output

MIN_RUNS = 30


def export_model(model: LoadedModel, fmt: str, out_dir: Path, precision: str | None = None) -> Artifact:
    """Export to `fmt` under out_dir and record the Artifact beside the file as artifact.json."""
    artifact = backend_for_format(fmt).export(model, out_dir, precision)
    artifact.save(out_dir / "artifact.json")
    return artifact


def artifact_for_target(model: LoadedModel, target: TargetProfile, out_dir: Path, artifact_path: str | None) -> Artifact:
    """The user's artifact file when given (checked against the target's runtime), else a fresh export."""
    backend = get_backend(target.runtime)
    if artifact_path:
        return backend.describe(Path(artifact_path), model)
    return export_model(model, backend.format, out_dir, target.precision)


def verify_classification(
    model: LoadedModel,
    artifact: Artifact,
    target: TargetProfile,
    data: str,
    out_dir: Path,
    *,
    threads: int | None = None,
    limit: int | None = None,
    batch_size: int = 100,
    progress: Progress | None = None,
) -> Verification:
    """PyTorch fp32 and the target's runtime on the same preprocessed images: parity per output, top-1/top-5
    on both. Writes verification.json whether or not it passed; the caller decides the exit code."""
    import torch

    if model.task != "classification":
        raise ConfigError(f"{model.spec} is a {model.task} model; verify handles classification models so far")
    if model.preprocessing is None:
        raise ConfigError(f"{model.spec} declares no preprocessing, so its data cannot be prepared")
    if batch_size < 1 or (limit is not None and limit < 1):
        raise ConfigError("--batch-size and --limit must be positive")
    progress = progress or NoProgress()
    backend = get_backend(target.runtime)
    tolerances = backend.tolerances(artifact.precision)
    with torch.inference_mode():
        num_outputs = model.module(*model.example_inputs(1)).shape[-1]
    dataset = ImageFolder.scan(data, model.class_names, num_outputs).subset(limit)
    input_name = artifact.inputs[0].name
    reference, runtime, labels = [], [], []
    with AgentSession(transport_for(target)) as agent, progress.task(f"verify on {target.runtime}", len(dataset.samples)) as update:
        device = agent.info(target.name, target.runtime)
        used_threads = threads or target.threads
        for images, batch_labels in dataset.batches(model.preprocessing, batch_size):
            with torch.inference_mode():
                reference.append(model.module(torch.from_numpy(images)).numpy())
            outputs = agent.run(artifact.path, target.runtime, {input_name: images}, threads=used_threads)
            runtime.append(next(iter(outputs.values())))
            labels.append(batch_labels)
            update(sum(len(b) for b in labels))
    reference_logits, runtime_logits, all_labels = np.concatenate(reference), np.concatenate(runtime), np.concatenate(labels)
    if all_labels.max() >= reference_logits.shape[1]:
        raise DataError(f"labels of {data} go up to {all_labels.max()} but the model has {reference_logits.shape[1]} outputs")
    on_torch = classification_metrics(reference_logits, all_labels)
    on_runtime = classification_metrics(runtime_logits, all_labels)
    metrics = tuple(
        MetricComparison(name, on_torch[name], on_runtime[name], tolerances.metric,
                         abs(on_runtime[name] - on_torch[name]) <= tolerances.metric)
        for name in on_torch
    )
    parity = (compare_output(artifact.outputs[0].name, reference_logits, runtime_logits, tolerances),)
    verification = Verification(
        model=model.spec,
        artifact=artifact,
        runtime=target.runtime,
        runtime_version=device.runtime_version,
        threads=used_threads or device.cpu_count,
        target=target.name,
        data=str(Path(data).resolve()),
        n_samples=len(all_labels),
        parity=parity,
        metrics=metrics,
        passed=all(p.passed for p in parity) and all(m.passed for m in metrics),
    )
    verification.save(out_dir / "verification.json")
    return verification


def profile_end_to_end(
    model: LoadedModel,
    artifact: Artifact,
    target: TargetProfile,
    out_dir: Path,
    *,
    runs: int = 50,
    warmup: int = 10,
    threads: int | None = None,
    progress: Progress | None = None,
) -> ProfileReport:
    """Warm up, then time `runs` single-batch inferences on the target's runtime through its agent."""
    if runs < MIN_RUNS:
        raise ConfigError(f"--runs {runs} is too few for a p90/p99", expected=f"at least {MIN_RUNS}")
    if warmup < 0:
        raise ConfigError(f"--warmup {warmup} is negative")
    progress = progress or NoProgress()
    with AgentSession(transport_for(target)) as agent:
        device = agent.info(target.name, target.runtime)
        with progress.task(f"profile on {target.name} ({target.runtime})", runs) as update:
            result = agent.bench(artifact.path, target.runtime, threads=threads or target.threads, warmup=warmup,
                                 runs=runs, on_progress=lambda done, total: update(done))
    samples = result["timings_ms"]
    energy = energy_for(target, float(np.median(samples)), result["batch"])
    latency = LatencyStats.from_samples(
        samples,
        warmup=result["warmup"],
        runtime=result["runtime"],
        runtime_version=result["runtime_version"],
        threads=result["threads"],
        batch=result["batch"],
        method=f"measured: {agent.transport.label} agent, wall time of each run call",
        energy=energy.energy,
        energy_mj=energy.energy_mj,
        power_w=energy.power_w,
        energy_note=energy.note,
    )
    report = ProfileReport(model=model.spec, target=target, device=device, artifact=artifact, latency=latency)
    report.save(out_dir / "profile.json")
    return report
