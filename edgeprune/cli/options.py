"""Options several commands share, declared once, and the choices they offer, read from the registries' name lists
(edgeprune/runtimes.py, prune/criterion_names.py, types/build.py), which import no toolchain: `--help` and usage
errors answer without loading torch."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import click

from edgeprune.models import SPEC_FORMS
from edgeprune.prune.criterion_names import RANKING_CRITERIA
from edgeprune.runtimes import format_runtimes, precision_names, runtime_names


def _options(*decorators: Callable) -> Callable:
    def apply(func: Callable) -> Callable:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


model_options = _options(
    click.option("--model", "-m", required=True, help=f"The model: {SPEC_FORMS}."),
    click.option("--weights", "-w", help="Weights file for the model (.pth/.th/.pt/.safetensors)."),
    click.option(
        "--trust-pickle", is_flag=True, help="Allow unpickling Python objects from --weights (runs code from the file)."
    ),
    click.option("--input-shape", help="N,C,H,W for python: models that do not declare it."),
    # the command gets --trust-code through `load_from_flags`, not as a parameter
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
    The command gets them through `load_target`, not as parameters."""

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
    click.option(
        "--artifact",
        "-a",
        help="An exported model file to use instead of exporting; it runs on the runtime (and at the precision) its "
        "artifact.json records, else on the one its file type names.",
    ),
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
farm_options = _options(
    click.option(
        "--farm",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A farm file (YAML): several devices of one target measure in parallel on Ray (pip install "
        "'edgeprune[farm]'); its target stands for --target.",
    ),
    click.option(
        "--ray",
        "ray_address",
        metavar="ADDRESS",
        help="With --farm: join the Ray cluster at ADDRESS ('auto': the one `ray start` runs on this machine) "
        "instead of starting a local one.",
    ),
)
device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="Where training and data-driven scoring run: auto (CUDA when available), cpu, cuda or cuda:N.",
)


def runtime_option(doing: str, *, artifact: bool = False):
    """--runtime: one the target declares; `doing` says what the command does on it ("verify on"); `artifact`: the
    command takes --artifact, whose runtime is the default."""
    default = "--artifact's, else the target profile's" if artifact else "the target profile's"
    return click.option(
        "--runtime",
        "-r",
        type=click.Choice(runtime_choices()),
        help=f"Runtime to {doing}, one the target declares (default: the {default}).",
    )


def precision_option(doing: str, *, artifact: bool = False):
    """--precision: one the runtime's backend supports; `doing` says what the command does at it; `artifact`: the
    command takes --artifact, whose precision is the default."""
    default = "the --artifact's, else " if artifact else ""
    return click.option(
        "--precision",
        type=click.Choice(precision_choices()),
        help=f"Precision to {doing} (default: {default}the target profile's when its runtime supports it, else the "
        "runtime's own); int8 is calibrated by the runtime's quantizer on --data.",
    )


lut_calibration_option = click.option(
    "--lut-calibration",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Randomly pruned variants (besides the unpruned model) the latency table's calibration is fitted on; each "
    "is timed end to end on the target, so fewer save time on a slow device.",
)


# --- choices, read from the registries so that a new backend or criterion needs no edit here ------------------------


def format_choices() -> list[str]:
    return sorted(format_runtimes())


def precision_choices() -> list[str]:
    return list(precision_names())


def runtime_choices() -> list[str]:
    return list(runtime_names())


def criterion_choices() -> list[str]:
    """Every criterion but the seeded ones (random), which make variants and baselines, not rankings."""
    return list(RANKING_CRITERIA)
