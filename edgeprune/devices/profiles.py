"""Target profiles: one YAML per device in profiles/, validated into TargetProfile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgeprune._resources import resource_dir
from edgeprune.backends._registry import backend_names
from edgeprune.errors import ConfigError, UnknownName
from edgeprune.types import Connection, Fact, PowerSpec, TargetProfile

_TOP_KEYS = {"name", "description", "runtime", "precision", "threads", "connection", "power", "hardware"}
_CONNECTION_KINDS = ("local", "ssh", "adb")


def profile_paths() -> dict[str, Path]:
    return {path.stem: path for path in sorted(resource_dir("profiles").glob("*.yaml"))}


def list_profiles() -> list[TargetProfile]:
    return [load_profile(name) for name in profile_paths()]


def load_profile(name_or_path: str) -> TargetProfile:
    """A shipped profile by name, or a user's YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"target profile file not found: {path}")
    else:
        paths = profile_paths()
        if name_or_path not in paths:
            raise UnknownName("target", name_or_path, paths, fix="run `edgeprune targets` to list them")
        path = paths[name_or_path]
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"target profile {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return _parse(data, path)


def _parse(data: Any, path: Path) -> TargetProfile:
    if not isinstance(data, dict):
        raise ConfigError(f"target profile {path} is not a mapping", expected="keys " + ", ".join(sorted(_TOP_KEYS)))
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"target profile {path} has unknown keys {sorted(unknown)}", expected=", ".join(sorted(_TOP_KEYS)))
    for key in ("name", "runtime"):
        if not data.get(key):
            raise ConfigError(f"target profile {path} lacks '{key}'")
    if data["runtime"] not in backend_names():
        raise UnknownName(f"runtime in {path.name}", data["runtime"], backend_names())
    connection = Connection(**_section(data, "connection", path, ("kind", "host", "user", "port", "serial")))
    if connection.kind not in _CONNECTION_KINDS:
        raise ConfigError(f"{path}: connection kind {connection.kind!r}", expected=" | ".join(_CONNECTION_KINDS))
    power = _section(data, "power", path, ("sensor", "estimate_w"))
    estimate = power.get("estimate_w")
    threads = data.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"{path}: threads must be a positive integer or null, not {threads!r}")
    return TargetProfile(
        name=data["name"],
        description=data.get("description", ""),
        runtime=data["runtime"],
        precision=data.get("precision", "fp32"),
        threads=threads,
        connection=connection,
        power=PowerSpec(sensor=power.get("sensor"), estimate_w=_fact(estimate, path, "power.estimate_w")),
        hardware={key: _fact(value, path, f"hardware.{key}") for key, value in (data.get("hardware") or {}).items()},
        source_file=str(path),
    )


def _section(data: dict, key: str, path: Path, allowed: tuple[str, ...]) -> dict:
    section = data.get(key) or {}
    if not isinstance(section, dict) or set(section) - set(allowed):
        raise ConfigError(f"{path}: '{key}' has unexpected content {section!r}", expected=f"keys among {allowed}")
    return section


def _fact(value: Any, path: Path, where: str) -> Fact | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value.get("source") or "value" not in value:
        raise ConfigError(f"{path}: {where} has no source", expected="{value: ..., source: <where the number comes from>}")
    return Fact(value=value["value"], source=value["source"])
