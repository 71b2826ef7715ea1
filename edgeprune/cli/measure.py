"""The commands that run a model as it is: list targets, export, verify, profile."""

from __future__ import annotations

import json
from pathlib import Path

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
    farm_options,
    format_choices,
    lut_calibration_option,
    model_options,
    output_options,
    precision_choices,
    precision_option,
    runtime_option,
    target_options,
)
from edgeprune.errors import ConfigError, GateFailed


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
def targets(as_json: bool) -> None:
    """List target profiles with their runtime, connection and power sensor."""
    from edgeprune.devices.profiles import list_profiles

    profiles = list_profiles()
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD)
    for column in ("target", "runtime", "prec.", "conn.", "power sensor"):
        table.add_column(column, no_wrap=True)  # names are looked up verbatim: never cut them
    table.add_column("description")
    for p in profiles:
        sensor = p.power.sensor or ("estimate" if p.power.estimate_w else "none")
        table.add_row(p.name, p.runtime, p.precision, p.connection.kind, sensor, p.description)
    console = Console()
    if not console.is_terminal:  # piped or logged: no terminal width to fit, so do not squeeze the descriptions
        console = Console(width=160)
    console.print(table)


@click.command()
@model_options
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(format_choices()),
    default="onnx",
    show_default=True,
    help="Export format.",
)
@click.option(
    "--precision",
    type=click.Choice(precision_choices()),
    help="Numeric precision (default: the format's: fp16 for tensorrt, else fp32).",
)
@click.option(
    "--data",
    "-d",
    help="int8: calibration images, an ImageFolder directory (classifiers) or a YOLO data "
    "yaml (detectors, train split).",
)
@click.option(
    "--keep-float",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="int8: keep this many of the most int8-sensitive layers in float (mixed precision).",
)
@click.option(
    "--target",
    "-t",
    help="tensorrt: the target profile whose device builds the engine (an engine runs only "
    "where it was built; default: this machine's TensorRT).",
)
@connection_options
@farm_options
@output_options
def export(model, weights, trust_pickle, input_shape, fmt, precision, data, keep_float, target, farm, ray_address,
           out, as_json) -> None:  # fmt: skip
    """Export a model to a deployable format (writes the file + artifact.json)."""
    from edgeprune.commands import export_model
    from edgeprune.progress import progress_for_stderr
    from edgeprune.types.results import TWO_OF_FOUR_SPEED

    if farm is not None and fmt != "tensorrt":
        raise ConfigError(f"--farm builds TensorRT engines on its devices; {fmt} is exported on this machine",
                          fix="drop --farm, or pass --format tensorrt")  # fmt: skip
    check_farm_flags(farm, ray_address)
    with stdout_kept_for_results():
        profile = load_target(target, farm) if target or farm else None
        loaded = load_from_flags(model, weights, trust_pickle, input_shape)
        out_dir = make_out_dir(out, "export")
        with farm_for(farm, ray_address, profile, progress_for_stderr()) as started:
            artifact = export_model(loaded, fmt, out_dir, precision, data=data, keep_float=keep_float, target=profile,
                                    farm=started)  # fmt: skip
    opset = f"opset {artifact.opset}, " if artifact.opset else ""
    sparse = f"\n  {TWO_OF_FOUR_SPEED}" if loaded.sparsity is not None else ""
    emit(
        artifact,
        as_json,
        f"exported {loaded.spec} → {artifact.path} ({artifact.format} {artifact.precision}, "
        f"{opset}{artifact.exporter}){sparse}",
    )


@click.command()
@model_options
@click.option(
    "--data",
    "-d",
    required=True,
    help="Classifier: ImageFolder directory DIR/<class>/<image>. Detector: YOLO data yaml.",
)
@target_options
@click.option("--limit", type=click.IntRange(min=1), help="Use this many images, spread over all classes.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Images per runtime call (default: 100 classification, 16 detection).",
)
@runtime_option("verify on", artifact=True)
@output_options
def verify(
    model, weights, trust_pickle, input_shape, data, target, artifact, threads, limit, batch_size, runtime, out, as_json
) -> None:
    """Parity and accuracy of the exported model on the target's runtime vs PyTorch. Exit 3 when over tolerance."""
    from edgeprune.commands import artifact_runtime, verify_artifact
    from edgeprune.devices.profiles import with_runtime
    from edgeprune.progress import progress_for_stderr

    if artifact:
        runtime = artifact_runtime(artifact, runtime)
    with stdout_kept_for_results():
        profile = with_runtime(load_target(target), runtime)
        loaded = load_from_flags(model, weights, trust_pickle, input_shape)
        out_dir = make_out_dir(out, "verify")
        result = verify_artifact(
            loaded,
            profile,
            data,
            out_dir,
            artifact_path=artifact,
            threads=threads,
            limit=limit,
            batch_size=batch_size,
            progress=progress_for_stderr(),
        )
    lines = [
        f"{'PASSED' if result else 'FAILED'}: {loaded.spec} on {result.runtime} {result.runtime_version} "
        f"({result.target}, {result.threads} threads), {result.n_samples} images"
        + (
            f" ({result.unlabelled_images} without a label file, scored as background)"
            if result.unlabelled_images
            else ""
        )
    ]
    if result.device is not None:
        lines.append(f"  device: {result.device.describe()}")
    lines += [
        f"  {m.name}: PyTorch {m.reference:.4f}  {result.runtime} {m.runtime:.4f}  (Δ {m.delta:+.4f}, tol {m.tolerance})"
        for m in result.metrics
    ]
    lines += [
        f"  {p.name}: max-abs {p.max_abs:.3g} ({p.max_abs_rel_range:.2g} of range), cosine min "
        f"{p.cosine_min:.6f} mean {p.cosine_mean if p.cosine_mean is not None else float('nan'):.6f} "
        f"(tol {p.tolerance_cosine} on the {p.cosine_of})"
        + (
            f", NaN/Inf: {p.nonfinite_runtime} from the runtime, {p.nonfinite_reference} from PyTorch"
            if p.nonfinite_runtime or p.nonfinite_reference
            else ""
        )
        for p in result.parity
    ]
    emit(result, as_json, "\n".join(lines) + f"\n  report: {out_dir / 'verification.json'}")
    if not result:
        sensitive = (
            f"; most int8-sensitive layers: {', '.join(f'{s.layer} ({s.error:.3g})' for s in result.sensitive_layers)}"
            " (re-export with --keep-float N to keep them in float)"
            if result.sensitive_layers
            else ""
        )
        raise GateFailed(
            "verification failed: " + "; ".join(result.failures()) + sensitive,
            report_path=str(out_dir / "verification.json"),
        )


@click.command()
@model_options
@target_options
@click.option("--runs", "-n", type=int, default=50, show_default=True, help="Timed runs (at least 30).")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs before timing.")
@click.option(
    "--lut",
    is_flag=True,
    help="Also build the per-layer latency lookup table, calibrate it and report "
    "its prediction error on randomly pruned variants.",
)
@click.option(
    "--lut-variants",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Held-out randomly pruned variants the table's prediction is checked on.",
)
@lut_calibration_option
@click.option("--step", type=click.IntRange(min=1), help="Channel step of the table's width grid (default: 8).")
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Latency-table cache directory (default: $EDGEPRUNE_CACHE/lut or ~/.cache/edgeprune/lut).",
)
@runtime_option("measure on", artifact=True)
@precision_option("measure at", artifact=True)
@click.option("--data", "-d", help="Images an int8 export is calibrated on (ImageFolder directory or YOLO data yaml).")
@farm_options
@output_options
def profile(
    model,
    weights,
    trust_pickle,
    input_shape,
    target,
    artifact,
    threads,
    runs,
    warmup,
    lut,
    lut_variants,
    lut_calibration,
    step,
    cache_dir,
    runtime,
    precision,
    data,
    farm,
    ray_address,
    out,
    as_json,
) -> None:
    """Measure end-to-end latency (and energy where the target can) on the target's runtime; with --lut, the
    per-layer latency table too (with --farm, spread over the farm's devices)."""
    from edgeprune.backends._registry import with_precision
    from edgeprune.commands import artifact_for_target, artifact_runtime, at_artifact_precision, profile_end_to_end
    from edgeprune.devices.profiles import with_runtime
    from edgeprune.progress import progress_for_stderr

    if artifact:
        runtime = artifact_runtime(artifact, runtime)
    if farm is not None and not lut:
        raise ConfigError("--farm spreads the latency table over its devices", fix="add --lut, or drop --farm")
    check_farm_flags(farm, ray_address)
    with stdout_kept_for_results():
        target_profile = with_precision(with_runtime(load_target(target, farm), runtime), precision)
        loaded = load_from_flags(model, weights, trust_pickle, input_shape)
        out_dir = make_out_dir(out, "profile")
        chosen = artifact_for_target(loaded, target_profile, out_dir, artifact, data)
        if artifact:
            target_profile = at_artifact_precision(target_profile, chosen, precision)
        report = profile_end_to_end(
            loaded,
            chosen,
            target_profile,
            out_dir,
            runs=runs,
            warmup=warmup,
            threads=threads,
            progress=progress_for_stderr(),
        )
        text = (
            f"{loaded.spec} on {report.target.name} ({report.device.cpu}): {report.latency.summary()}\n"
            f"  report: {out_dir / 'profile.json'}"
        )
        if lut:
            from edgeprune.latency.lut import build_lut

            progress = progress_for_stderr()
            with farm_for(farm, ray_address, target_profile, progress) as started:
                table = build_lut(
                    loaded,
                    target_profile,
                    out_dir,
                    threads=threads,
                    step=step,
                    variants=lut_variants,
                    calibration_variants=lut_calibration,
                    runs=runs,
                    warmup=warmup,
                    cache_dir=cache_dir,
                    progress=progress,
                    farm=started,
                )
            text += f"\n{table.summary()}\n  table: {out_dir / 'lut.json'}"
    emit(table if lut else report, as_json, text)
