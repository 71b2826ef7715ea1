"""The commands that change a model: prune, build (prune to a measured budget), train."""

from __future__ import annotations

import json

import click

from edgeprune.cli.helpers import (
    check_farm_flags,
    emit,
    farm_for,
    load_from_flags,
    load_target,
    make_out_dir,
    stdout_kept_for_results,
)
from edgeprune.cli.options import (
    connection_options,
    criterion_choices,
    device_option,
    farm_options,
    lut_calibration_option,
    model_options,
    output_options,
    precision_option,
    runtime_option,
)
from edgeprune.errors import ConfigError, EdgepruneError, GateFailed
from edgeprune.types.build import BASELINES, VALUES


@click.command()
@model_options
@click.option("--ratio", type=float, required=True, help="Fraction of prunable channels to remove, e.g. 0.3.")
@click.option(
    "--criterion",
    type=click.Choice(criterion_choices()),
    default="l1",
    show_default=True,
    help="Channel importance: L1 filter norm, BN γ, first-order Taylor, APoZ, ThiNet (the last three need --data).",
)
@click.option(
    "--blocks",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Residual blocks to remove (lowest BN γ first).",
)
@click.option("--round-to", type=click.IntRange(min=1), help="Keep channel counts multiples of this hardware step.")
@click.option("--global", "global_ranking", is_flag=True, help="Rank channels across layers instead of per layer.")
@click.option(
    "--data",
    "-d",
    help="For data-driven criteria and fine-tuning: an ImageFolder (classifiers) or a YOLO data yaml (detectors).",
)
@click.option(
    "--finetune-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Fine-tune after pruning (classifiers: SGD + cosine; ultralytics YOLOs: ultralytics' trainer).",
)
@click.option("--lr", type=float, default=0.01, show_default=True, help="Fine-tuning learning rate (SGD, cosine).")
@click.option(
    "--distill/--no-distill", default=True, show_default=True, help="Distil from the unpruned model while fine-tuning."
)
@click.option(
    "--reconstruct",
    is_flag=True,
    help="Refit each layer that reads pruned channels by least squares on --data (ThiNet's reconstruction), "
    "before any fine-tuning.",
)
@click.option(
    "--rewind",
    type=click.Path(dir_okay=False, exists=True),
    help="Lottery-ticket rewinding: after pruning, set the surviving weights to this early checkpoint's (the same "
    "network, e.g. `train --rewind-to 1`'s rewind-epoch1.safetensors), then --finetune-epochs retrains them.",
)
@click.option(
    "--sparsity-2of4",
    "sparsity_2of4",
    is_flag=True,
    help="Then magnitude 2:4 sparsity (2 of every 4 consecutive input-channel weights zero) in every conv/linear whose "
    "inputs are a multiple of 4, kept while fine-tuning; TensorRT builds it with sparse weights allowed. Faster only "
    "on sparse tensor cores (Ampere, Orin). With --ratio, pass --round-to 4 to keep pruned layers eligible.",
)
@device_option
@output_options
def prune(
    model,
    weights,
    trust_pickle,
    input_shape,
    ratio,
    criterion,
    blocks,
    round_to,
    global_ranking,
    data,
    finetune_epochs,
    lr,
    distill,
    reconstruct,
    rewind,
    sparsity_2of4,
    device,
    out,
    as_json,
) -> None:
    """Prune channels (and residual blocks), optionally fine-tune, and save a model that reloads without pickles."""
    from edgeprune.commands import prune_model
    from edgeprune.progress import progress_for_stderr
    from edgeprune.train.finetune import FinetuneRecipe

    with stdout_kept_for_results():
        loaded = load_from_flags(model, weights, trust_pickle, input_shape)
        rewound = _rewind_checkpoint(model, rewind, trust_pickle, input_shape) if rewind else None
        out_dir = make_out_dir(out, "prune")
        recipe = FinetuneRecipe(epochs=finetune_epochs, lr=lr, distill_alpha=0.5 if distill else 0.0)
        plan = prune_model(
            loaded,
            out_dir,
            ratio=ratio,
            criterion=criterion,
            blocks=blocks,
            round_to=round_to,
            global_ranking=global_ranking,
            data=data,
            recipe=recipe,
            progress=progress_for_stderr(),
            device=device,
            reconstruct=reconstruct,
            rewind_to=rewound,
            sparsity_2of4=sparsity_2of4,
        )
    emit(
        plan,
        as_json,
        f"pruned {loaded.spec}: params {plan.params_before:,} → {plan.params_after:,}, MACs "
        f"{plan.macs_before:,} → {plan.macs_after:,} ({1 - plan.macs_after / plan.macs_before:.1%} "
        f"removed), {len(plan.removed_blocks)} blocks removed"
        f"{f', fine-tuned {finetune_epochs} epochs' if finetune_epochs else ''}{_sparsity_line(plan)}\n  saved: "
        f"{out_dir} (reload with --model {out_dir})",
    )


def _sparsity_line(plan) -> str:
    """The prune summary's lines on 2:4 sparsity: which layers hold it, which stayed dense, what it buys where."""
    from edgeprune.types.results import TWO_OF_FOUR_SPEED

    if plan.sparsity is None:
        return ""
    dense = plan.dense_layers
    names = ", ".join(dense[:6]) + (", …" if len(dense) > 6 else "")
    where = f" except {len(dense)} left dense (inputs not a multiple of 4, or grouped): {names}" if dense else ""
    return f"\n  {plan.sparsity} sparsity in every conv/linear layer{where}\n  {TWO_OF_FOUR_SPEED}"


@click.command()
@model_options
@click.option("--target", "-t", default="host", show_default=True, help="Target profile name or a profile .yaml.")
@click.option("--threads", type=click.IntRange(min=1), help="Runtime threads (default: the target profile's).")
@connection_options
@click.option("--speedup", type=float, help="Budget: this many times faster than the unpruned model, measured.")
@click.option("--latency-ms", type=float, help="Budget: median latency on the target, in ms.")
@click.option(
    "--energy-mj", type=float, help="Budget: energy per inference, in mJ (measured or the profile's estimate)."
)
@click.option(
    "--data",
    "-d",
    help="ImageFolder (classifiers: per class, 20 % held out for the verdict, 16 % to validate on while "
    "fine-tuning, the rest to fine-tune) or YOLO data yaml (its val split is the held-out one).",
)
@click.option(
    "--max-drop",
    "max_drop",
    help="Accuracy budget: points of the held-out metric (top-1, mAP50-95) the shipped model may lose against the "
    "unpruned one on the target's runtime; 'none' to ship whatever accuracy is left. Default 1.0 with --data.",
)
@click.option(
    "--backoff-steps",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="When the plan misses --max-drop on validation after --finetune-epochs: gentler speedups tried, bisected.",
)
@click.option(
    "--criterion",
    type=click.Choice(criterion_choices()),
    default="l1",
    show_default=True,
    help="Channel importance: which channels of a group go first.",
)
@click.option(
    "--value",
    type=click.Choice(VALUES),
    help="What the planner weighs against latency: each block's and channel group's output damage measured "
    "on --data (the default with --data), or the criterion's scores alone (the default without).",
)
@click.option("--step", type=click.IntRange(min=1), help="Channel step (default: the target's, else 8).")
@click.option(
    "--finetune-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Most epochs fine-tuning the plan (and baselines, back-off candidates); classifiers stop early once "
    "within --max-drop on validation and keep their best epoch.",
)
@click.option("--lr", type=float, default=0.01, show_default=True, help="Fine-tuning learning rate (classifiers).")
@click.option(
    "--distill/--no-distill", default=True, show_default=True, help="Distil from the unpruned model while fine-tuning."
)
@click.option(
    "--qat-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="int8 on a runtime whose toolchain trains with fake quantization (openvino: NNCF): epochs of "
    "quantization-aware training of each pruned model before its export, at a tenth of --lr. 0: post-training "
    "quantization.",
)
@click.option("--baselines", default="", help=f"Comma list of baselines built the same way: {', '.join(BASELINES)}.")
@click.option(
    "--runs", "-n", type=click.IntRange(min=30), default=50, show_default=True, help="Timed runs per measurement."
)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed runs before timing.")
@click.option(
    "--lut-variants",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Held-out random variants the latency table's prediction error is measured on.",
)
@lut_calibration_option
@runtime_option("plan, measure and verify on")
@precision_option("plan (its latency table), measure, export and verify at")
@click.option(
    "--reconstruct",
    is_flag=True,
    help="Refit each layer that reads pruned channels by least squares on --data (ThiNet's reconstruction), in every "
    "plan round, baseline and back-off candidate, before fine-tuning.",
)
@device_option
@farm_options
@output_options
def build(
    model,
    weights,
    trust_pickle,
    input_shape,
    target,
    threads,
    speedup,
    latency_ms,
    energy_mj,
    data,
    criterion,
    value,
    step,
    finetune_epochs,
    lr,
    distill,
    qat_epochs,
    baselines,
    runs,
    warmup,
    lut_variants,
    lut_calibration,
    runtime,
    precision,
    max_drop,
    backoff_steps,
    reconstruct,
    device,
    farm,
    ray_address,
    out,
    as_json,
) -> None:
    """Model → measured baseline → latency table → plan meeting the budget (measured) → fine-tune → export →
    verify → report.html + app bundle. Rerun with the same options to resume. Exit 3 when the latency budget or
    the accuracy budget (--max-drop) is not met, saying which and by how much."""
    from edgeprune.backends._registry import with_precision
    from edgeprune.build import Budget, BuildOptions
    from edgeprune.build import build as run_build
    from edgeprune.devices.profiles import with_runtime
    from edgeprune.progress import progress_for_stderr
    from edgeprune.train.device import resolve_device

    budgets = [
        (k, v) for k, v in (("speedup", speedup), ("latency_ms", latency_ms), ("energy_mj", energy_mj)) if v is not None
    ]
    if len(budgets) != 1:
        raise ConfigError("build needs exactly one budget", fix="pass one of --speedup, --latency-ms, --energy-mj")
    budget = Budget(*budgets[0])  # checked before anything is loaded or written
    allowed_drop = _max_drop(max_drop, data)
    resolve_device(device)  # a device that is not here: one line, exit 2, before anything is loaded
    check_farm_flags(farm, ray_address)
    with stdout_kept_for_results():
        profile = with_precision(with_runtime(load_target(target, farm), runtime), precision)
        loaded = load_from_flags(model, weights, trust_pickle, input_shape)
        out_dir = make_out_dir(out, "build")
        options = BuildOptions(
            model=model, weights=weights, target=profile.name if farm else target, data=data, budget=budget, criterion=criterion,
            value=value or ("measured" if data else "criterion"), step=step, finetune_epochs=finetune_epochs,
            qat_epochs=qat_epochs, lr=lr, distill=distill, runs=runs, warmup=warmup,
            threads=threads, baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
            lut_variants=lut_variants, lut_calibration=lut_calibration, runtime=runtime, precision=precision, max_drop=allowed_drop, backoff_steps=backoff_steps, device=device,
            reconstruct=reconstruct,
        )  # fmt: skip
        progress = progress_for_stderr()
        with farm_for(farm, ray_address, profile, progress) as started:
            report = run_build(loaded, profile, options, out_dir, progress=progress, farm=started)
    bundle = "" if report.plan.ruled_out else f"\n  bundle: {out_dir / 'bundle'}"  # nothing to ship when ruled out
    emit(report, as_json, f"{report.summary()}\n  report: {out_dir / 'report.html'}{bundle}")
    if not report.met:
        raise GateFailed(f"{report.shortfall()}; the report is in {out_dir}")


def _rewind_checkpoint(model: str, rewind: str, trust_pickle: bool, input_shape: str | None):
    """The model at its rewind checkpoint; a checkpoint of another network is one line naming --rewind."""
    from edgeprune.errors import ModelError

    try:
        return load_from_flags(model, rewind, trust_pickle, input_shape)
    except ModelError as exc:
        raise ConfigError(f"--rewind {rewind}: {exc.what}",
                          fix=f"pass an early checkpoint of {model} (`edgeprune train --rewind-to N` saves one)") from None  # fmt: skip


def _max_drop(given: str | None, data: str | None) -> float | None:
    """--max-drop read: a number of points, 'none', or (not given) 1.0 when there is data to judge accuracy on.
    Whether it is a usable budget is the build's check (build.run._check)."""
    if given is None:
        return 1.0 if data else None
    if given.strip().lower() == "none":
        return None
    try:
        return float(given)
    except ValueError:
        raise ConfigError(
            f"--max-drop {given!r} is not a number", expected="points of the metric, e.g. 1.0, or none"
        ) from None


@click.command()
@model_options
@click.option("--data", "-d", required=True, help="ImageFolder directory to train on (read as it is needed).")
@click.option("--epochs", type=click.IntRange(min=1), required=True, help="Training epochs.")
@click.option(
    "--sparsity",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="λ of the L1 penalty on BatchNorm γ (network slimming), so that --criterion bn prunes well.",
)
@click.option("--lr", type=float, default=0.01, show_default=True, help="Learning rate (SGD, cosine).")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Images per step.")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="Image decoding processes (default: up to 4 feeding a GPU, none on the CPU below 8 cores).",
)
@click.option(
    "--rewind-to",
    type=click.IntRange(min=0),
    help="Also save the weights after this many epochs (0: before training) as rewind-epoch<N>.safetensors: the "
    "early checkpoint `prune --rewind` goes back to (lottery-ticket rewinding).",
)
@device_option
@output_options
def train(model, weights, trust_pickle, input_shape, data, epochs, sparsity, lr, batch_size, workers, rewind_to,
          device, out, as_json) -> None:  # fmt: skip
    """Train a classifier (e.g. sparsity training before BN-γ pruning); saves model.safetensors. Each epoch ends
    with a checkpoint under --out, so a rerun with the same --out continues an interrupted run. Under `torchrun`
    every rank trains on its share of each batch (DDP); rank 0 writes the files."""
    if rewind_to is not None and rewind_to >= epochs:
        raise ConfigError(f"--rewind-to {rewind_to} is not before the end of {epochs} epochs",
                          expected=f"an epoch from 0 to {epochs - 1}")  # fmt: skip
    from edgeprune.train.device import resolve_device
    from edgeprune.train.distributed import process_group

    resolved = resolve_device(device)  # a device that is not here: one line, exit 2, before anything is loaded
    with stdout_kept_for_results(), process_group(resolved) as ranks:
        try:
            summary = _train(model, weights, trust_pickle, input_shape, data, epochs, sparsity, lr, batch_size,
                             workers, resolved, out, ranks, rewind_to)  # fmt: skip
        except EdgepruneError as exc:
            if not ranks.main:  # rank 0 says it (the failure is raised on every rank, naming the one that failed)
                raise SystemExit(exc.exit_code) from None
            raise
    if not ranks.main:
        return
    click.echo(
        json.dumps(summary, indent=2)
        if as_json
        else f"trained {summary['model']} for {summary['epochs_run']} epochs (final loss "
        f"{summary['epoch_losses'][-1]:.4f}) → {summary['weights']}"
    )


def _train(model, weights, trust_pickle, input_shape, data, epochs, sparsity, lr, batch_size, workers, device, out,
           ranks, rewind_to=None) -> dict:  # fmt: skip
    import shutil

    from edgeprune.models.saved import save_state_dict
    from edgeprune.progress import progress_for_stderr
    from edgeprune.train.data import ImageSamples
    from edgeprune.train.distributed import same_on_every_rank
    from edgeprune.train.finetune import FinetuneRecipe, finetune_classifier

    loaded = load_from_flags(model, weights, trust_pickle, input_shape)
    if loaded.task != "classification":
        raise ConfigError(f"edgeprune train handles classifiers so far; {loaded.spec} is a {loaded.task} model")
    out_dir = same_on_every_rank(make_out_dir(out, "train") if ranks.main else None, ranks)
    samples = ImageSamples.scan(data, loaded.class_names, loaded.preprocessing)
    recipe = FinetuneRecipe(epochs=epochs, lr=lr, sparsity=sparsity, batch_size=batch_size)
    checkpoints = out_dir / "checkpoints"
    snapshots = {rewind_to: out_dir / f"rewind-epoch{rewind_to}.safetensors"} if rewind_to is not None else {}
    result = finetune_classifier(loaded.module, samples, recipe, mean=loaded.preprocessing.mean,
                                 std=loaded.preprocessing.std, progress=progress_for_stderr(), device=device,
                                 checkpoints=checkpoints, num_workers=workers, snapshots=snapshots)  # fmt: skip
    weights_path = out_dir / "model.safetensors"
    if ranks.main:
        save_state_dict(loaded.module, weights_path)
        recipe.save(out_dir / "recipe.json")
        shutil.rmtree(checkpoints, ignore_errors=True)  # the run is complete: a rerun trains afresh
    return {"model": loaded.spec, "weights": str(weights_path), "epoch_losses": list(result.losses),
            "epochs_run": result.epochs_run, "recipe": recipe.to_dict(), "device": str(device),
            "world_size": ranks.world, "rewind_weights": {str(k): str(v) for k, v in snapshots.items()}}  # fmt: skip
