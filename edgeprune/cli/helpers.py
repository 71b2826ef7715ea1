"""What every command does around its stage: load the model and target from the flags, make the result folder,
keep stdout for the result, print it."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgeprune.errors import ConfigError

if TYPE_CHECKING:
    from edgeprune.types import Record


def load_from_flags(spec: str, weights: str | None, trust_pickle: bool, input_shape: str | None):
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


def load_target(name: str | None, farm: Path | None = None):
    """The target profile with the connection flags of `connection_options` (and EDGEPRUNE_*) applied; with a farm
    file (`farm_options`), the farm's target through its first device (what a farm does not spread runs there)."""
    from click.core import ParameterSource

    from edgeprune.devices.profiles import load_profile
    from edgeprune.devices.transport import with_connection

    context = click.get_current_context()
    flags = context.meta.get("edgeprune.connection")
    if farm is None:
        return with_connection(load_profile(name), flags)
    from edgeprune.farm.spec import load_farm

    spec = load_farm(farm)
    given = context.get_parameter_source("target") not in (ParameterSource.DEFAULT, None)
    if given and name not in (spec.target.name, spec.target.source_file):
        raise ConfigError(f"--target {name} is not farm {spec.name}'s target ({spec.target.name})",
                          fix="leave --target out with --farm: the farm file names the target")  # fmt: skip
    if any(value is not None for value in (flags or {}).values()):
        raise ConfigError("--host, --user, --port and --serial do not apply with --farm",
                          fix=f"set each device's connection in {farm}")  # fmt: skip
    return spec.first_target()


def check_farm_flags(farm: Path | None, ray_address: str | None) -> None:
    """--ray without --farm, or --farm without Ray installed: one line before anything is loaded or measured."""
    if farm is None and ray_address:
        raise ConfigError("--ray applies to a farm", fix="pass --farm FILE too, or drop --ray")
    if farm is not None:
        from edgeprune.farm.cluster import import_ray

        import_ray()


@contextlib.contextmanager
def farm_for(farm: Path | None, ray_address: str | None, target, progress) -> Iterator:
    """The farm of `--farm` started for the block, its devices running `target` (the command's target after
    --runtime/--precision); None without --farm."""
    check_farm_flags(farm, ray_address)
    if farm is None:
        yield None
        return
    from edgeprune.farm import farm_session

    with farm_session(farm, ray_address, progress, target) as started:
        yield started


def make_out_dir(out: Path | None, command: str) -> Path:
    out_dir = out or Path("edgeprune-runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file", expected="a directory (created if missing)")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


@contextlib.contextmanager
def stdout_kept_for_results() -> Iterator[None]:
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


def emit(result: Record, as_json: bool, summary: str) -> None:
    click.echo(result.to_json() if as_json else summary)
