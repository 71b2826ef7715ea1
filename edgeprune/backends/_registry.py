"""The backends edgeprune knows, by name. A new runtime = one module here + one line in edgeprune/runtimes.py."""

from __future__ import annotations

import importlib

from edgeprune.backends.base import Backend
from edgeprune.errors import UnknownName
from edgeprune.runtimes import BACKENDS


def backend_names() -> list[str]:
    return list(BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend for a runtime name (as in a target profile)."""
    if name not in BACKENDS:
        raise UnknownName("runtime", name, BACKENDS)
    module_name, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), cls)()


def formats() -> dict[str, str]:
    """Export format -> backend name."""
    return {get_backend(name).format: name for name in BACKENDS}


def backend_for_format(fmt: str) -> Backend:
    table = formats()
    if fmt not in table:
        raise UnknownName("export format", fmt, table)
    return get_backend(table[fmt])
