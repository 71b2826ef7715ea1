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


def load_target(name: str):
    """The target profile with the connection flags of `connection_options` (and EDGEPRUNE_*) applied."""
    from edgeprune.devices.profiles import load_profile
    from edgeprune.devices.transport import with_connection

    return with_connection(load_profile(name), click.get_current_context().meta.get("edgeprune.connection"))


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
