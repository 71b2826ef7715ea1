"""`edgeprune` command line. Choices (formats, precisions) come from the registries, not from copies.

Exit codes: 0 ok; 2 user error (one line, no traceback); 3 a verification/budget gate failed (report written);
130 interrupted (Ctrl-C); anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import click

from edgeprune import __version__
from edgeprune.backends._registry import backend_names, formats, get_backend
from edgeprune.errors import ConfigError, EdgepruneError, GateFailed
from edgeprune.types import Record


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeprune")
def app() -> None:
    """edgeprune: measure, prune, export and verify neural networks on real edge devices."""


# --- options shared by several commands, declared once ------------------------------------------------------------


def _options(*decorators: Callable) -> Callable:
    def apply(func: Callable) -> Callable:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


model_options = _options(
    click.option("--model", "-m", required=True, help="torchvision:<name> | cifar:resnet56 | python:pkg.mod:fn"),
    click.option("--weights", "-w", help="Weights file for the model (.pth/.th/.pt/.safetensors)."),
    click.option(
        "--trust-pickle", is_flag=True, help="Allow unpickling Python objects from --weights (runs code from the file)."
    ),
    click.option("--input-shape", help="N,C,H,W for python: models that do not declare it."),
    # the command gets --trust-code through `_load`, not as a parameter
    click.option(
        "--trust-code",
        is_flag=True,
        expose_value=False,
        callback=lambda ctx, _, value: ctx.meta.update({"edgeprune.trust_code": value}),
        help="Allow running Python code that a model file names: a saved plan's python: base (imports that module), "
        "expressions in an ultralytics model yaml.",
    ),
)


def connection_options(func: Callable) -> Callable:
    """--host/--user/--port/--serial override the target profile's connection (flags > EDGEPRUNE_* > profile).
    The command gets them through `_load_target`, not as parameters."""

    @click.option("--host", help="ssh targets: device address or ~/.ssh/config alias (env EDGEPRUNE_HOST).")
    @click.option("--user", help="ssh targets: login user (env EDGEPRUNE_USER).")
    @click.option("--port", type=click.IntRange(1, 65535), help="ssh targets: port (env EDGEPRUNE_PORT).")
    @click.option("--serial", help="adb targets: device serial (env EDGEPRUNE_SERIAL).")
    @functools.wraps(func)
    def wrapper(*args, host, user, port, serial, **kwargs):
        click.get_current_context().meta["edgeprune.connection"] = {
            "host": host,
            "user": user,
            "port": port,
            "serial": serial,
        }
        return func(*args, **kwargs)

    return wrapper


target_options = _options(
    click.option(
        "--target",
        "-t",
        default="host",
        show_default=True,
        help="Target profile name (see `edgeprune targets`) or a profile .yaml.",
    ),
    click.option("--artifact", "-a", help="An exported model file to use instead of exporting."),
    click.option(
        "--threads", type=click.IntRange(min=1), help="Runtime threads (default: the target profile's, else all cores)."
    ),
    connection_options,
)
output_options = _options(
    click.option(
        "--out",
        "-o",
        type=click.Path(path_type=Path),
        help="Result directory (default: edgeprune-runs/<command>-<time>).",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON instead of a summary."),
)


def _formats() -> list[str]:
    return sorted(formats())


def _precisions() -> list[str]:
    return sorted({p for name in backend_names() for p in get_backend(name).precisions})


# --- commands ---------------------------------------------------------------------------------------------------------


@app.command()
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


@app.command()
@model_options
@click.option(
    "--format", "-f", "fmt", type=click.Choice(_formats()), default="onnx", show_default=True, help="Export format."
)
@click.option(
    "--precision",
    type=click.Choice(_precisions()),
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
@output_options
def export(model, weights, trust_pickle, input_shape, fmt, precision, data, keep_float, target, out, as_json) -> None:
    """Export a model to a deployable format (writes the file + artifact.json)."""
    from edgeprune.pipeline import export_model

    with _stdout_kept_for_results():
        profile = _load_target(target) if target else None
        loaded = _load(model, weights, trust_pickle, input_shape)
        out_dir = _out_dir(out, "export")
        artifact = export_model(loaded, fmt, out_dir, precision, data=data, keep_float=keep_float, target=profile)
    opset = f"opset {artifact.opset}, " if artifact.opset else ""
    _emit(
        artifact,
        as_json,
        f"exported {loaded.spec} → {artifact.path} ({artifact.format} {artifact.precision}, "
        f"{opset}{artifact.exporter})",
    )


@app.command()
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
@click.option(
    "--runtime",
    "-r",
    type=click.Choice(backend_names()),
    help="Runtime to verify on, one the target declares (default: the target profile's).",
)
@output_options
def verify(
    model, weights, trust_pickle, input_shape, data, target, artifact, threads, limit, batch_size, runtime, out, as_json
) -> None:
    """Parity and accuracy of the exported model on the target's runtime vs PyTorch. Exit 3 when over tolerance."""
    from edgeprune.devices.profiles import with_runtime
    from edgeprune.pipeline import verify_artifact
    from edgeprune.progress import RichProgress

    with _stdout_kept_for_results():
        profile = with_runtime(_load_target(target), runtime)
        loaded = _load(model, weights, trust_pickle, input_shape)
        out_dir = _out_dir(out, "verify")
        result = verify_artifact(
            loaded,
            profile,
            data,
            out_dir,
            artifact_path=artifact,
            threads=threads,
            limit=limit,
            batch_size=batch_size,
            progress=RichProgress(),
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
    _emit(result, as_json, "\n".join(lines) + f"\n  report: {out_dir / 'verification.json'}")
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


@app.command()
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
@click.option(
    "--lut-calibration",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Randomly pruned variants (besides the unpruned model) the table's calibration is fitted on.",
)
@click.option("--step", type=click.IntRange(min=1), help="Channel step of the table's width grid (default: 8).")
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Latency-table cache directory (default: $EDGEPRUNE_CACHE/lut or ~/.cache/edgeprune/lut).",
)
@click.option(
    "--runtime",
    "-r",
    type=click.Choice(backend_names()),
    help="Runtime to measure on, one the target declares (default: the target profile's).",
)
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
    out,
    as_json,
) -> None:
    """Measure end-to-end latency (and energy where the target can) on the target's runtime; with --lut, the
    per-layer latency table too."""
    from edgeprune.devices.profiles import with_runtime
    from edgeprune.pipeline import artifact_for_target, profile_end_to_end
    from edgeprune.progress import RichProgress

    with _stdout_kept_for_results():
        target_profile = with_runtime(_load_target(target), runtime)
        loaded = _load(model, weights, trust_pickle, input_shape)
        out_dir = _out_dir(out, "profile")
        chosen = artifact_for_target(loaded, target_profile, out_dir, artifact)
        report = profile_end_to_end(
            loaded, chosen, target_profile, out_dir, runs=runs, warmup=warmup, threads=threads, progress=RichProgress()
        )
        text = (
            f"{loaded.spec} on {report.target.name} ({report.device.cpu}): {report.latency.summary()}\n"
            f"  report: {out_dir / 'profile.json'}"
        )
        if lut:
            from edgeprune.latency.lut import build_lut

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
                progress=RichProgress(),
            )
            text += f"\n{table.summary()}\n  table: {out_dir / 'lut.json'}"
    _emit(table if lut else report, as_json, text)


@app.command()
@model_options
@click.option("--ratio", type=float, required=True, help="Fraction of prunable channels to remove, e.g. 0.3.")
@click.option(
    "--criterion",
    type=click.Choice(["l1", "bn", "taylor", "apoz"]),
    default="l1",
    show_default=True,
    help="Channel importance: L1 filter norm, BN γ, first-order Taylor, APoZ (the last two need --data).",
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
    out,
    as_json,
) -> None:
    """Prune channels (and residual blocks), optionally fine-tune, and save a model that reloads without pickles."""
    from edgeprune.pipeline import prune_model
    from edgeprune.progress import RichProgress
    from edgeprune.train.finetune import FinetuneRecipe

    with _stdout_kept_for_results():
        loaded = _load(model, weights, trust_pickle, input_shape)
        out_dir = _out_dir(out, "prune")
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
            progress=RichProgress(),
        )
    _emit(
        plan,
        as_json,
        f"pruned {loaded.spec}: params {plan.params_before:,} → {plan.params_after:,}, MACs "
        f"{plan.macs_before:,} → {plan.macs_after:,} ({1 - plan.macs_after / plan.macs_before:.1%} "
        f"removed), {len(plan.removed_blocks)} blocks removed"
        f"{f', fine-tuned {finetune_epochs} epochs' if finetune_epochs else ''}\n  saved: {out_dir} "
        f"(reload with --model {out_dir})",
    )


@app.command()
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
    "--data", "-d", help="ImageFolder (classifiers; 20 %% per class held out for accuracy) or YOLO data yaml."
)
@click.option(
    "--criterion",
    type=click.Choice(["l1", "bn", "taylor", "apoz"]),
    default="l1",
    show_default=True,
    help="Channel importance: which channels of a group go first.",
)
@click.option(
    "--value",
    type=click.Choice(["measured", "criterion"]),
    help="What the planner weighs against latency: each block's and channel group's output damage measured "
    "on --data (the default with --data), or the criterion's scores alone (the default without).",
)
@click.option("--step", type=click.IntRange(min=1), help="Channel step (default: the target's, else 8).")
@click.option(
    "--finetune-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Fine-tune the plan (and baselines).",
)
@click.option("--lr", type=float, default=0.01, show_default=True, help="Fine-tuning learning rate (classifiers).")
@click.option(
    "--distill/--no-distill", default=True, show_default=True, help="Distil from the unpruned model while fine-tuning."
)
@click.option("--baselines", default="", help="Comma list of baselines built the same way: uniform, flops.")
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
    baselines,
    runs,
    warmup,
    lut_variants,
    out,
    as_json,
) -> None:
    """Model → measured baseline → latency table → plan meeting the budget (measured) → fine-tune → export →
    verify → report.html + app bundle. Rerun with the same options to resume. Exit 3 when the budget is not met."""
    from edgeprune.build import Budget, BuildOptions
    from edgeprune.build import build as run_build
    from edgeprune.progress import RichProgress

    budgets = [
        (k, v) for k, v in (("speedup", speedup), ("latency_ms", latency_ms), ("energy_mj", energy_mj)) if v is not None
    ]
    if len(budgets) != 1:
        raise ConfigError("build needs exactly one budget", fix="pass one of --speedup, --latency-ms, --energy-mj")
    budget = Budget(*budgets[0])  # checked before anything is loaded or written
    with _stdout_kept_for_results():
        profile = _load_target(target)
        loaded = _load(model, weights, trust_pickle, input_shape)
        out_dir = _out_dir(out, "build")
        options = BuildOptions(
            model=model, weights=weights, target=target, data=data, budget=budget, criterion=criterion,
            value=value or ("measured" if data else "criterion"), step=step, finetune_epochs=finetune_epochs,
            lr=lr, distill=distill, runs=runs, warmup=warmup,
            threads=threads, baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
            lut_variants=lut_variants,
        )  # fmt: skip
        report = run_build(loaded, profile, options, out_dir, progress=RichProgress())
    bundle = "" if report.plan.ruled_out else f"\n  bundle: {out_dir / 'bundle'}"  # nothing to ship when ruled out
    _emit(report, as_json, f"{report.summary()}\n  report: {out_dir / 'report.html'}{bundle}")
    if not report.met:
        raise GateFailed(f"{report.shortfall()}; the report is in {out_dir}")


@app.command()
@model_options
@click.option("--data", "-d", required=True, help="ImageFolder directory to train on.")
@click.option("--epochs", type=click.IntRange(min=1), required=True, help="Training epochs.")
@click.option(
    "--sparsity",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="λ of the L1 penalty on BatchNorm γ (network slimming), so that --criterion bn prunes well.",
)
@click.option("--lr", type=float, default=0.01, show_default=True, help="Learning rate (SGD, cosine).")
@output_options
def train(model, weights, trust_pickle, input_shape, data, epochs, sparsity, lr, out, as_json) -> None:
    """Train a classifier (e.g. sparsity training before BN-γ pruning); saves model.safetensors."""
    from edgeprune.progress import RichProgress
    from edgeprune.prune.io import save_state_dict
    from edgeprune.train.finetune import FinetuneRecipe, finetune_classifier
    from edgeprune.verify.data import ImageFolder

    with _stdout_kept_for_results():
        loaded = _load(model, weights, trust_pickle, input_shape)
        if loaded.task != "classification":
            raise ConfigError(f"edgeprune train handles classifiers so far; {loaded.spec} is a {loaded.task} model")
        out_dir = _out_dir(out, "train")
        images, labels = ImageFolder.scan(data, loaded.class_names).load_all(loaded.preprocessing)
        recipe = FinetuneRecipe(epochs=epochs, lr=lr, sparsity=sparsity)
        losses = finetune_classifier(
            loaded.module,
            images,
            labels,
            recipe,
            mean=loaded.preprocessing.mean,
            std=loaded.preprocessing.std,
            progress=RichProgress(),
        )
        weights_path = save_state_dict(loaded.module, out_dir / "model.safetensors")
        recipe.save(out_dir / "recipe.json")
    summary = {"model": loaded.spec, "weights": str(weights_path), "epoch_losses": losses, "recipe": recipe.to_dict()}
    click.echo(
        json.dumps(summary, indent=2)
        if as_json
        else f"trained {loaded.spec} for {epochs} epochs (final loss {losses[-1]:.4f}) → {weights_path}"
    )


# --- helpers -----------------------------------------------------------------------------------------------------------


def _load(spec: str, weights: str | None, trust_pickle: bool, input_shape: str | None):
    from edgeprune.models import LoadOptions, load_model

    shape = None
    if input_shape:
        try:
            shape = tuple(int(d) for d in input_shape.split(","))
        except ValueError:
            raise ConfigError(
                f"--input-shape {input_shape!r} is not a list of integers", expected="N,C,H,W e.g. 1,3,224,224"
            ) from None
    trust_code = click.get_current_context().meta.get("edgeprune.trust_code", False)  # from model_options
    return load_model(
        spec, LoadOptions(weights=weights, trust_pickle=trust_pickle, input_shape=shape, trust_code=trust_code)
    )


def _load_target(name: str):
    """The target profile with the connection flags of `connection_options` (and EDGEPRUNE_*) applied."""
    from edgeprune.devices.profiles import load_profile
    from edgeprune.devices.transport import with_connection

    return with_connection(load_profile(name), click.get_current_context().meta.get("edgeprune.connection"))


def _out_dir(out: Path | None, command: str) -> Path:
    out_dir = out or Path("edgeprune-runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file", expected="a directory (created if missing)")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


@contextlib.contextmanager
def _stdout_kept_for_results() -> Iterator[None]:
    """Exporters and ultralytics print progress on stdout (from Python and C); while a command works, fd 1
    points at stderr so that stdout carries only the result (`--json` output stays parseable)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _emit(result: Record, as_json: bool, summary: str) -> None:
    click.echo(result.to_json() if as_json else summary)


def main() -> None:
    from edgeprune.progress import interrupt_requested, watch_interrupts

    watch_interrupts()
    try:
        code = app(standalone_mode=False)
    except click.exceptions.ClickException as exc:  # bad flags: click's message, exit 2
        exc.show()
        sys.exit(2)
    except EdgepruneError as exc:
        if interrupt_requested():  # a library caught the Ctrl-C and failed its own way: the user stopped it
            _interrupted()
        click.echo(f"edgeprune: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        _interrupted()
    except Exception as exc:
        import traceback

        from edgeprune.fileio import disk_error

        full = disk_error(exc)  # a full or read-only disk under code that does not write through edgeprune.fileio
        if full is not None:
            click.echo(f"edgeprune: error: {full.message}", err=True)
            sys.exit(full.exit_code)
        if interrupt_requested():
            _interrupted()
        traceback.print_exc()
        click.echo("edgeprune: this is a bug in edgeprune; please report it with the traceback above", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted() -> NoReturn:
    click.echo("edgeprune: interrupted; rerun the command (files already written under --out are kept)", err=True)
    sys.exit(130)  # the shell's code for a SIGINT death (128 + 2); 2 would read as a user error


if __name__ == "__main__":
    main()
