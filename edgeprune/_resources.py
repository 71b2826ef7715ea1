"""Where the shipped data directories are: inside the wheel (`edgeprune/_data/`) or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """`profiles` or `targets`: the installed copy when present, else the repository root's."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"edgeprune's {name}/ directory is missing from the installation ({_PACKAGE})")
