"""The error tree. A user error is an EdgepruneError: one line saying what was wrong, what was expected, how to fix it.

The CLI turns `exit_code` into the process exit status: 2 for user errors, 3 for a failed verification or budget
gate. Anything that is not an EdgepruneError is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgepruneError(Exception):
    """Base of every error edgeprune raises on purpose."""

    exit_code = 2

    def __init__(self, what: str, *, expected: str | None = None, fix: str | None = None):
        self.what = what
        self.expected = expected
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [self.what]
        if self.expected:
            parts.append(f"expected {self.expected}")
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return "; ".join(" ".join(p.split()) for p in parts)


class ConfigError(EdgepruneError):
    """A flag, spec or file the user gave is wrong."""


class ModelError(EdgepruneError):
    """A model spec, checkpoint or weights file cannot be loaded."""


class DataError(EdgepruneError):
    """The data directory or file does not hold what the task needs."""


class DeviceError(EdgepruneError):
    """The target device cannot be reached or its agent failed."""


class ExportError(EdgepruneError):
    """A model could not be converted to the requested format."""


class DiskError(EdgepruneError):
    """A file could not be written: its disk is full, read-only or over quota, or the folder is not writable."""


class MissingDependency(EdgepruneError):
    """An optional package is not installed."""

    def __init__(self, package: str, *, extra: str | None = None, purpose: str | None = None):
        install = f'pip install "edgeprune[{extra}]"' if extra else f"pip install {package}"
        what = f"{package} is not installed" + (f" (needed for {purpose})" if purpose else "")
        super().__init__(what, fix=install)
        self.package = package


class UnknownName(EdgepruneError):
    """A name that is not in a registry; suggests the closest known names."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], *, fix: str | None = None):
        self.kind, self.name = kind, name
        self.choices = sorted(choices)
        self.suggestions = difflib.get_close_matches(name, self.choices, n=3, cutoff=0.5)
        if self.suggestions:
            hint = "did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        elif len(self.choices) <= 12:
            hint = "known: " + ", ".join(self.choices)
        else:
            hint = f"{len(self.choices)} known, e.g. " + ", ".join(self.choices[:6])
        super().__init__(f"unknown {kind} {name!r}: {hint}", fix=fix)


class GateFailed(EdgepruneError):
    """A verification or budget gate failed; the report is written before this is raised."""

    exit_code = 3

    def __init__(self, what: str, *, report_path: str | None = None):
        self.report_path = report_path
        super().__init__(what + (f" (report: {report_path})" if report_path else ""))
