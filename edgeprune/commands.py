"""The stage behind each single command (export, verify, profile, prune), shared by the CLI and `build`.

Each takes and returns the records of edgeprune.types and writes its JSON; `build` (edgeprune/build/) composes
them (load → profile → plan → prune → fine-tune → export → verify → report).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path

import numpy as np

from edgeprune.backends._registry import backend_for_format, get_backend
from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.energy import energy_for, power_request
from edgeprune.devices.transport import transport_for
from edgeprune.errors import ConfigError, GateFailed
from edgeprune.models.base import LoadedModel, tensor_outputs
from edgeprune.progress import NoProgress, Progress
from edgeprune.runtimes import artifact_suffixes, format_runtimes, runtime_of_file
from edgeprune.train.finetune import FinetuneRecipe
from edgeprune.types import Artifact, ProfileReport, PrunePlan, TargetProfile, Verification
from edgeprune.verify.finite import NonFiniteOutputs, refuse_nonfinite_outputs
from edgeprune.verify.parity import ParityAccumulator
from edgeprune.verify.scoring import scoring_for

MIN_RUNS = 30


def export_model(
    model: LoadedModel,
    fmt: str,
    out_dir: Path,
    precision: str | None = None,
    *,
    data: str | None = None,
    keep_float: int = 0,
    target: TargetProfile | None = None,
    farm=None,
) -> Artifact:
    """Export to `fmt` under out_dir and record the Artifact beside the file as artifact.json. `data` calibrates the
    precisions that need it (int8); `keep_float` keeps that many of the most int8-sensitive layers in float (ranked
    on the calibration images, backends/_quantization.py), written to sensitivity.json. `target`: the device, for
    formats built there (TensorRT); `farm` (edgeprune.farm.Farm): a format built there is built on the farm's
    first free device, and on the next one if that one is lost."""
    from edgeprune.backends._quantization import calibration_images, layer_sensitivity

    backend = backend_for_format(fmt).for_target(target)
    resolved = backend.check_precision(precision)
    if keep_float < 0:
        raise ConfigError(f"--keep-float {keep_float} is negative")
    if keep_float and resolved not in backend.calibrated:
        raise ConfigError(f"--keep-float applies to int8 exports, not {fmt} {resolved}", fix="drop --keep-float")
    refuse_nonfinite_outputs(model)  # a NaN/Inf reference makes any parity meaningless: refuse before writing
    calibration = calibration_images(model, data) if data and resolved in backend.calibrated else None
    if data and calibration is None:
        raise ConfigError(f"--data calibrates int8 exports; {fmt} {resolved} takes no calibration", fix="drop --data")
    float_layers: tuple[str, ...] = ()
    if keep_float and calibration is not None:
        ranked = layer_sensitivity(model, calibration)
        _save_sensitivity(ranked, out_dir)
        float_layers = tuple(layer.name for layer in ranked[:keep_float])
    if farm is not None and backend.builds_on_device:
        artifact = farm.export(model, fmt, out_dir, resolved, calibration, float_layers)
    else:
        artifact = backend.export(model, out_dir, resolved, calibration=calibration, float_layers=float_layers)
    artifact.save(out_dir / "artifact.json")
    return artifact


def _save_sensitivity(ranked, out_dir: Path) -> list:
    """The ranked layers as LayerSensitivity records, also written to out_dir/sensitivity.json."""
    import json

    from edgeprune.fileio import write_text
    from edgeprune.types import LayerSensitivity

    method = "one layer int8 (weights per channel, input per tensor) in PyTorch, relative L2 error of the output"
    records = [LayerSensitivity(layer.name, layer.error, method) for layer in ranked]
    write_text(out_dir / "sensitivity.json", json.dumps([r.to_dict() for r in records], indent=2) + "\n")
    return records


def runtime_of_artifact(path: Path) -> tuple[str, str]:
    """The runtime that runs the artifact file at `path`, and how that is known: the format its artifact.json records
    when that describes this very file, else the file type."""
    from edgeprune.backends.base import recorded_artifact

    if not path.is_file():
        raise ConfigError(f"artifact file not found: {path}", fix="check the --artifact path")
    recorded = recorded_artifact(path)
    if recorded is not None and recorded.format in format_runtimes():
        return format_runtimes()[recorded.format], f"its artifact.json records format {recorded.format}"
    runtime = runtime_of_file(path)
    if runtime is None:
        raise ConfigError(f"--artifact {path}: no runtime runs {path.suffix or 'suffix-less'} files",
                          expected=f"an exported model: {artifact_suffixes()}")  # fmt: skip
    return runtime, f"its file type is {path.suffix}"


def artifact_runtime(path: str, runtime: str | None) -> str:
    """The runtime to run the user's artifact file on: its own (`runtime_of_artifact`). `runtime` (--runtime) only
    overrides, so one that does not run the file is a ConfigError naming both."""
    own, evidence = runtime_of_artifact(Path(path))
    if runtime is not None and runtime != own:
        raise ConfigError(f"--artifact {path} runs on {own} ({evidence}), not on --runtime {runtime}",
                          fix=f"drop --runtime, or pass --runtime {own}")  # fmt: skip
    return own


def at_artifact_precision(target: TargetProfile, artifact: Artifact, precision: str | None) -> TargetProfile:
    """`target` at the precision of the user's `artifact` (as its artifact.json or the file says). `precision`
    (--precision) only overrides, so another one is a ConfigError naming both."""
    if precision is not None and precision != artifact.precision:
        raise ConfigError(f"--artifact {artifact.path} is {artifact.format} {artifact.precision}, not --precision "
                          f"{precision}", fix=f"drop --precision, or export the model at {precision}")  # fmt: skip
    return dataclasses.replace(target, precision=artifact.precision)


def artifact_for_target(
    model: LoadedModel, target: TargetProfile, out_dir: Path, artifact_path: str | None, data: str | None = None
) -> Artifact:
    """The user's artifact file when given (checked against the target's runtime), else a fresh export (`data`
    calibrates it when the target's precision needs calibration)."""
    backend = get_backend(target.runtime)
    if artifact_path:
        return backend.describe(Path(artifact_path), model)
    calibrate = data if target.precision in backend.calibrated else None
    return export_model(model, backend.format, out_dir, target.precision, data=calibrate, target=target)


def verify_artifact(
    model: LoadedModel,
    target: TargetProfile,
    data: str,
    out_dir: Path,
    *,
    artifact_path: str | None = None,
    threads: int | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> Verification:
    """Export for the target (or take `artifact_path`), then run PyTorch fp32 and the target's runtime on the
    same preprocessed real inputs: parity per output and the task metric (top-1/top-5, or mAP) on both. Writes verification.json whether or not it passed; the caller
    decides the exit code."""
    import torch

    if model.preprocessing is None:
        raise ConfigError(f"{model.spec} declares no preprocessing, so its data cannot be prepared")
    if (batch_size is not None and batch_size < 1) or (limit is not None and limit < 1):
        raise ConfigError("--batch-size and --limit must be positive")
    progress = progress or NoProgress()
    scoring = scoring_for(model, data, limit)  # checks the data before any export work
    try:  # before any export work: with NaN/Inf in the reference there is nothing to compare a runtime with
        if artifact_path:  # a fresh export runs this check itself, first
            refuse_nonfinite_outputs(model)
        artifact = artifact_for_target(model, target, out_dir, artifact_path, data)
    except NonFiniteOutputs as exc:  # verify is the gate, so the model fails it (exit 3); export and build refuse it
        raise GateFailed(f"verification failed before anything was exported: {exc.message}") from None
    tolerances = get_backend(target.runtime).tolerances(artifact.precision)
    parities_by_output = [ParityAccumulator(spec.name) for spec in artifact.outputs]
    input_name = artifact.inputs[0].name
    used_threads = threads or target.threads
    done = 0
    with (
        AgentSession(transport_for(target)) as agent,
        progress.task(f"verify on {target.runtime}", scoring.size) as update,
    ):
        device = agent.info(target.name, target.runtime)
        for batch in scoring.batches(batch_size or scoring.default_batch_size):
            with torch.inference_mode():
                references = [t.numpy() for t in tensor_outputs(model.module(torch.from_numpy(batch.images)))]
            runtimes = list(
                agent.run(artifact.path, target.runtime, {input_name: batch.images}, threads=used_threads).values()
            )
            if len(runtimes) != len(references):
                raise ConfigError(
                    f"the artifact {artifact.path} gives {len(runtimes)} outputs where {model.spec} "
                    f"gives {len(references)}",
                    expected="an export of this model",
                    fix="drop --artifact to export it, or pass the file exported from this model",
                )
            # every output is compared, so a NaN in any of them fails; the task metric reads the first
            for parity, reference, runtime in zip(parities_by_output, references, runtimes):
                parity.update(reference, runtime)
            scoring.add(references[0], runtimes[0], batch)
            done += len(batch.images)
            update(done)
    parities = tuple(parity.result(tolerances) for parity in parities_by_output)
    metrics = scoring.comparisons(tolerances.metric)
    verification = Verification(
        model=model.spec,
        artifact=artifact,
        runtime=target.runtime,
        runtime_version=device.runtime_version,
        threads=used_threads or device.cpu_count,
        target=target.name,
        data=str(Path(data).resolve()),
        n_samples=done,
        parity=parities,
        metrics=metrics,
        passed=all(p.passed for p in parities) and all(m.passed for m in metrics),
        sensitive_layers=_sensitive_layers(model, artifact, data, out_dir, parities, metrics),
        unlabelled_images=scoring.unlabelled_images,
        device=device,
    )
    verification.save(out_dir / "verification.json")
    return verification


def _sensitive_layers(model, artifact, data, out_dir, parities, metrics) -> tuple:
    """For an int8 artifact that failed: its layers ranked by their own int8 error on images of `data` (all of
    them in out_dir/sensitivity.json, the worst first); nothing for anything else."""
    from edgeprune.backends._quantization import SENSITIVITY_IMAGES, calibration_images, layer_sensitivity

    failed = not all(p.passed for p in parities) or not all(m.passed for m in metrics)
    if not failed or artifact.precision != "int8":
        return ()
    ranked = layer_sensitivity(model, calibration_images(model, data, SENSITIVITY_IMAGES))
    return tuple(_save_sensitivity(ranked, out_dir)[:SENSITIVE_LAYERS_SHOWN])


SENSITIVE_LAYERS_SHOWN = 5


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
    """Warm up, then time `runs` single-batch inferences on the target's runtime through its agent (on Android,
    which has no agent: TFLite's benchmark_model over adb, devices/android.py)."""
    if runs < MIN_RUNS:
        raise ConfigError(f"--runs {runs} is too few for a p90/p99", expected=f"at least {MIN_RUNS}")
    if warmup < 0:
        raise ConfigError(f"--warmup {warmup} is negative")
    progress = progress or NoProgress()
    if target.connection.kind == "adb":
        from edgeprune.devices.android import profile_android

        with progress.task(f"profile on {target.name} (benchmark_model)", runs) as update:
            device, latency, _ = profile_android(
                artifact.path, target, runs=runs, warmup=warmup, threads=threads or target.threads
            )
            update(runs)
        report = ProfileReport(model=model.spec, target=target, device=device, artifact=artifact, latency=latency)
        report.save(out_dir / "profile.json")
        return report
    with AgentSession(transport_for(target)) as agent:
        device = agent.info(target.name, target.runtime)
        with progress.task(f"profile on {target.name} ({target.runtime})", runs) as update:
            result = agent.bench(
                artifact.path,
                target.runtime,
                threads=threads or target.threads,
                warmup=warmup,
                runs=runs,
                on_progress=lambda done, total: update(done),
                power=power_request(target),
            )
    samples = result.timings_ms
    energy = energy_for(target, float(np.median(samples)), result.batch, power=result.power, runs=len(samples))
    latency = result.latency_stats(
        f"measured: {agent.transport.label} agent, wall time of each run call",
        energy=energy.energy,
        energy_mj=energy.energy_mj,
        power_w=energy.power_w,
        energy_note=energy.note,
        energy_detail=energy.detail,
    )
    report = ProfileReport(model=model.spec, target=target, device=device, artifact=artifact, latency=latency)
    report.save(out_dir / "profile.json")
    return report


def prune_model(
    model: LoadedModel,
    out_dir: Path,
    *,
    ratio: float,
    criterion: str,
    blocks: int = 0,
    round_to: int | None = None,
    global_ranking: bool = False,
    data: str | None = None,
    recipe: FinetuneRecipe | None = None,
    progress: Progress | None = None,
    device: str = "cpu",
    reconstruct: bool = False,
    rewind_to: LoadedModel | None = None,
    sparsity_2of4: bool = False,
) -> PrunePlan:
    """Remove `blocks` residual blocks, then `ratio` of the channels by `criterion`, optionally fine-tune on
    `data`, and save the result under out_dir (plan + safetensors; also cfg + weights for Darknet and a .pt for
    ultralytics). `data` is an ImageFolder for classifiers and a YOLO data yaml for detectors, read as needed.
    Data-driven criteria and fine-tuning run on `device` (auto|cpu|cuda|cuda:N). `reconstruct`: refit every layer
    that reads pruned channels by least squares on `data` (prune/reconstruct.py) before any fine-tuning.
    `rewind_to`: the same network at an early-training checkpoint; the pruned model's surviving weights are set
    to its values before fine-tuning (lottery-ticket rewinding, Frankle et al.; Renda et al. 2020).
    `sparsity_2of4`: then magnitude 2:4 sparsity in every eligible conv/linear (prune/sparsity.py), kept while
    fine-tuning."""
    from edgeprune.models.saved import save_pruned
    from edgeprune.prune.channels import count_macs_params, prune_channels
    from edgeprune.prune.depth import remove_blocks
    from edgeprune.prune.importance import criterion as criterion_spec

    spec = criterion_spec(criterion)
    finetuning = bool(recipe and recipe.epochs)
    if rewind_to is not None:
        _check_rewind(model, rewind_to, reconstruct)
    if (spec.needs_data or finetuning or reconstruct) and not data:
        what = f"criterion {criterion}" if spec.needs_data else "fine-tuning" if finetuning else "--reconstruct"
        raise ConfigError(f"{what} needs --data", fix=f"pass --data ({_DATA_FORMS[model.task]})")
    if spec.needs_loss and model.task != "classification":
        raise ConfigError(f"criterion {criterion} needs a loss, which edgeprune defines for classifiers only",
                          fix="use --criterion l1, bn or apoz for detectors")  # fmt: skip
    if sparsity_2of4:
        _two_of_four_masks(model, check_only=True)  # no layer that can hold the pattern: refused before any work
    finetune = finetuner(model) if finetuning else None
    if finetuning and model.task == "detection":  # the labels it trains on: refused before pruning, not after it
        from edgeprune.verify.yolo_data import YoloDataset

        YoloDataset.from_yaml(data, split="train").checked(model.detection.num_classes)
    teacher = copy.deepcopy(model.module).eval() if finetuning and recipe.distill_alpha > 0 else None
    base_fingerprint = model.fingerprint
    macs_before, params_before = count_macs_params(model)
    removed = remove_blocks(model, n=blocks) if blocks else ()
    before_channels = copy.deepcopy(model) if reconstruct else None
    calibration = calibration_batches(model, data, device=device) if spec.needs_data or reconstruct else None
    plan = prune_channels(model, ratio, criterion, round_to=round_to, global_ranking=global_ranking, data=calibration)
    if before_channels is not None:
        from edgeprune.prune.reconstruct import refit_after_pruning

        refits = refit_after_pruning(before_channels, model, plan, calibration)
        plan = dataclasses.replace(plan, reconstructed=tuple((r.name, r.error_before, r.error_after) for r in refits))
    if rewind_to is not None:
        from edgeprune.models.saved import replay_plan

        replay_plan(rewind_to, dataclasses.replace(plan, removed_blocks=tuple(removed)))
        model.module.load_state_dict(rewind_to.module.state_dict())
        plan = dataclasses.replace(plan, rewound_to=rewind_to.weights)
    plan = dataclasses.replace(
        plan,
        base_model=portable_spec(plan.base_model),
        base_fingerprint=base_fingerprint,
        removed_blocks=tuple(removed),
        macs_before=macs_before,
        params_before=params_before,
    )
    masks = None
    if sparsity_2of4:
        from edgeprune.prune.sparsity import PATTERN, apply_masks, dense_layers

        masks = _two_of_four_masks(model, after_channels=bool(ratio))
        apply_masks(model.module, masks)
        plan = dataclasses.replace(plan, sparsity=PATTERN, dense_layers=dense_layers(model.module))
        model.sparsity, model._fingerprint = PATTERN, None
    if finetune is not None:
        from edgeprune.prune.sparsity import masks_kept

        with masks_kept(model.module, masks) if masks else contextlib.nullcontext():
            finetune(model, data, recipe, teacher, out_dir, progress, device=device)
    save_pruned(model, plan, out_dir)
    if finetune is not None:
        recipe.save(out_dir / "finetune_recipe.json")  # what the saved weights went through after pruning
    return plan


def _check_rewind(model: LoadedModel, rewind_to: LoadedModel, reconstruct: bool) -> None:
    """The rewind checkpoint must be this network (same tensors, same shapes), and rewinding is not refitting."""
    if reconstruct:
        raise ConfigError("--rewind replaces the weights --reconstruct would refit", fix="pass one of the two")
    mine, theirs = model.module.state_dict(), rewind_to.module.state_dict()
    differ = sorted(set(mine) ^ set(theirs)) or [k for k in mine if mine[k].shape != theirs[k].shape]
    if differ:
        raise ConfigError(f"the rewind checkpoint {rewind_to.weights} is not {model.spec}'s network "
                          f"(first difference: {differ[0]})",
                          fix="pass an early checkpoint of the same model, e.g. `edgeprune train --rewind-to 1`'s")  # fmt: skip


def _two_of_four_masks(model: LoadedModel, *, after_channels: bool = False, check_only: bool = False) -> dict:
    """The 2:4 masks of the model's eligible layers (prune/sparsity.py; none computed when `check_only`);
    ConfigError when it has no such layer."""
    from edgeprune.prune.sparsity import eligible_layers, two_of_four_masks

    if not eligible_layers(model.module):
        raise ConfigError(
            f"--sparsity-2of4: {model.spec} has no Conv2d (groups 1) or Linear layer whose input channels are a "
            f"multiple of 4{' after channel pruning' if after_channels else ''}, so none can hold the 2:4 pattern",
            fix="pass --round-to 4 with --ratio" if after_channels else "drop --sparsity-2of4",
        )
    return {} if check_only else two_of_four_masks(model.module)


_DATA_FORMS = {"classification": "an ImageFolder directory", "detection": "a YOLO data yaml"}
CALIBRATION_IMAGES = 256  # images the data-driven criteria (taylor, apoz, thinet) and --reconstruct look at


def finetuner(model: LoadedModel):
    """The fine-tuning routine of the model's family for its task; ConfigError where there is none."""
    finetune = model.family.finetuner(model.task)
    if finetune is None:
        raise ConfigError(f"fine-tuning {model.spec} ({model.task}) is not available",
                          fix="prune without --finetune-epochs, or fine-tune it with its own framework")  # fmt: skip
    return finetune


def calibration_batches(model: LoadedModel, data: str, *, device: str = "cpu") -> list:
    """The first CALIBRATION_IMAGES images of `data` (an ImageFolder; a YOLO yaml's train split) as (images,
    labels) batches on `device`, where the criteria and the sensitivity measurement that read them score the
    model. Only those images are read."""
    import torch

    from edgeprune.train.device import resolve_device
    from edgeprune.verify.data import ImageFolder, load_image

    where = resolve_device(device)
    if model.task == "classification":
        # spread over the sorted list, so every class is in them (the first 256 of a class-sorted folder were one
        # class: CIFAR-10 has 1,000 images a class)
        samples = ImageFolder.scan(data, model.class_names).subset(CALIBRATION_IMAGES).samples
        images = np.stack([load_image(path, model.preprocessing) for path, _ in samples])
        labels = np.array([label for _, label in samples], dtype=np.int64)
        return [(torch.from_numpy(images).to(where), torch.from_numpy(labels).to(where))]
    from edgeprune.verify.yolo_data import YoloDataset

    dataset = YoloDataset.from_yaml(data, split="train").subset(CALIBRATION_IMAGES // 8)
    images = np.stack([load_image(path, model.preprocessing) for path in dataset.images])
    return [(torch.from_numpy(images[k : k + 8]).to(where), None) for k in range(0, len(images), 8)]


def portable_spec(spec: str) -> str:
    """The spec with a relative model file made absolute, so the saved plan replays from any directory."""
    family, sep, name = spec.partition(":")
    return f"{family}:{Path(name).resolve()}" if sep and Path(name).is_file() else spec
