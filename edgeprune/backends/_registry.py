"""The backends edgeprune knows, by name. A new runtime = one module here + one line in edgeprune/runtimes.py."""

from __future__ import annotations

import dataclasses
import importlib

from edgeprune.backends.base import Backend
from edgeprune.errors import UnknownName
from edgeprune.runtimes import RUNTIMES, format_runtimes
from edgeprune.types import TargetProfile


def backend_names() -> list[str]:
    return list(RUNTIMES)


def get_backend(name: str) -> Backend:
    """The backend for a runtime name (as in a target profile)."""
    if name not in RUNTIMES:
        raise UnknownName("runtime", name, RUNTIMES)
    module_name, _, cls = RUNTIMES[name].backend.partition(":")
    return getattr(importlib.import_module(module_name), cls)()


def formats() -> dict[str, str]:
    """Export format -> backend name."""
    return format_runtimes()


def backend_for_format(fmt: str) -> Backend:
    table = formats()
    if fmt not in table:
        raise UnknownName("export format", fmt, table)
    return get_backend(table[fmt])


def with_precision(profile: TargetProfile, precision: str | None) -> TargetProfile:
    """The profile at `precision` (`--precision`), one its runtime's backend supports. None: the profile's own when
    the runtime supports it (a target whose default runtime is TensorRT fp16, run through ONNX Runtime, runs fp32),
    else the backend's default."""
    backend = get_backend(profile.runtime)
    if precision is None:
        precision = profile.precision if profile.precision in backend.precisions else backend.default_precision
    precision = backend.check_precision(precision)
    return profile if precision == profile.precision else dataclasses.replace(profile, precision=precision)
