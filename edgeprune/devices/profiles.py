"""Target profiles: one YAML per device in profiles/, validated into TargetProfile.

A profile declares its runtime by name, one of edgeprune.runtimes (the names the backends and the agent use).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from edgeprune._resources import resource_dir
from edgeprune.errors import ConfigError, UnknownName
from edgeprune.runtimes import runtime_names
from edgeprune.types import Connection, Fact, PowerSpec, SetupCommands, TargetProfile, ThrottleCheck

PRECISIONS = ("fp32", "fp16", "int8")  # every precision some backend declares (tests/test_registries.py)
CONNECTION_KINDS = ("local", "ssh", "adb")
# Power sensors a profile may name (DESIGN.md section 4, Energy); their readers live with the energy code.
SENSORS = ("ina3221", "tegrastats", "pmic_read_adc", "odpm", "battery", "rapl", "nvml")

_TOP_KEYS = {
    "name",
    "description",
    "runtime",
    "precision",
    "threads",
    "connection",
    "power",
    "hardware",
    "setup",
    "throttle",
    "channel_step",
    "runtimes",
}
_FACT_KEYS = ("value", "source")


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
        raise ConfigError(
            f"target profile {path} has unknown keys {sorted(unknown)}", expected=", ".join(sorted(_TOP_KEYS))
        )
    for key in ("name", "runtime"):
        if not data.get(key):
            raise ConfigError(f"target profile {path} lacks '{key}'")
    _check_str(data, "name", path)
    _check_str(data, "description", path)
    if data["runtime"] not in runtime_names():
        raise UnknownName(f"runtime in {path.name}", str(data["runtime"]), runtime_names())
    precision = data.get("precision") or "fp32"
    if precision not in PRECISIONS:
        raise UnknownName(f"precision in {path.name}", str(precision), PRECISIONS)
    threads = data.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"{path}: threads must be a positive integer or null, not {threads!r}")
    return TargetProfile(
        name=data["name"],
        description=data.get("description") or "",
        runtime=data["runtime"],
        precision=precision,
        threads=threads,
        connection=parse_connection(data, path),
        power=_power(data, path),
        hardware=_hardware(data, path),
        source_file=str(path),
        setup=_setup(data, path),
        throttle=_throttle(data, path),
        channel_step=_channel_step(data, path),
        runtimes=_runtimes(data, path),
    )


def with_runtime(profile: TargetProfile, runtime: str | None) -> TargetProfile:
    """The profile running `runtime` (`--runtime`), which must be one the profile declares; None: its default."""
    if runtime is None or runtime == profile.runtime:
        return profile
    if runtime not in runtime_names():
        raise UnknownName("runtime", runtime, runtime_names())
    if runtime not in profile.can_run():
        raise ConfigError(
            f"target {profile.name} does not declare runtime {runtime}",
            expected=" | ".join(profile.can_run()),
            fix=f"pick one of those, or add {runtime} to 'runtimes' in {profile.source_file or 'its profile'}",
        )
    return dataclasses.replace(profile, runtime=runtime)


def _runtimes(data: dict, path: Path) -> tuple[str, ...]:
    """Every runtime the device can run; the default `runtime` must be among them (absent: just that one)."""
    runtimes = data.get("runtimes")
    if runtimes is None:
        return ()
    if not isinstance(runtimes, list) or not runtimes or not all(isinstance(r, str) for r in runtimes):
        raise ConfigError(f"{path}: runtimes must be a list of runtime names, not {runtimes!r}")
    for runtime in runtimes:
        if runtime not in runtime_names():
            raise UnknownName(f"runtime in {path.name} runtimes", runtime, runtime_names())
    if data["runtime"] not in runtimes:
        raise ConfigError(f"{path}: runtime {data['runtime']} is not among its runtimes {runtimes}")
    return tuple(runtimes)


def parse_connection(data: dict, path: Path) -> Connection:
    """`data['connection']` (absent: local) as a Connection; also a farm file's devices (edgeprune/farm/spec.py)."""
    # The keys are whatever Connection declares, so a field added there (python, key, ...) is accepted here.
    section = _section(data, "connection", path, tuple(f.name for f in dataclasses.fields(Connection)))
    connection = Connection(**section)
    if connection.kind not in CONNECTION_KINDS:
        raise ConfigError(f"{path}: connection kind {connection.kind!r}", expected=" | ".join(CONNECTION_KINDS))
    return connection


def _power(data: dict, path: Path) -> PowerSpec:
    # Like connection, the keys are whatever PowerSpec declares (sensor, estimate_w, rails, ...).
    power = dict(_section(data, "power", path, tuple(f.name for f in dataclasses.fields(PowerSpec))))
    sensor = power.get("sensor")
    if sensor is not None and sensor not in SENSORS:
        raise UnknownName(f"power sensor in {path.name}", str(sensor), SENSORS)
    estimate = _fact(power.get("estimate_w"), path, "power.estimate_w")
    if estimate is not None and (not _is_number(estimate.value) or estimate.value <= 0):
        raise ConfigError(f"{path}: power.estimate_w must be a positive number of watts, not {estimate.value!r}")
    power["estimate_w"] = estimate
    for key, value in power.items():
        if isinstance(value, list):  # e.g. rails: [VDD_IN]
            if not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{path}: power.{key} must be a list of names, not {value!r}")
            power[key] = tuple(value)
    return PowerSpec(**power)


def _hardware(data: dict, path: Path) -> dict[str, Fact]:
    hardware = data.get("hardware") or {}
    if not isinstance(hardware, dict):
        raise ConfigError(f"{path}: 'hardware' must be a mapping of name -> {{value, source}}")
    return {str(key): _fact(value, path, f"hardware.{key}", required=True) for key, value in hardware.items()}


def _setup(data: dict, path: Path) -> SetupCommands:
    setup = _section(data, "setup", path, ("pin_clocks", "restore", "source"))
    commands = {key: _commands(setup.get(key), path, f"setup.{key}") for key in ("pin_clocks", "restore")}
    if (commands["pin_clocks"] or commands["restore"]) and not setup.get("source"):
        raise ConfigError(
            f"{path}: setup has commands but no source", expected="setup.source: <the document they come from>"
        )
    _check_str(setup, "source", path, "setup.source")
    return SetupCommands(**commands, source=setup.get("source") or "")


def _throttle(data: dict, path: Path) -> ThrottleCheck:
    throttle = _section(data, "throttle", path, ("command", "temperature", "source"))
    for key in throttle:
        _check_str(throttle, key, path, f"throttle.{key}")
    if (throttle.get("command") or throttle.get("temperature")) and not throttle.get("source"):
        raise ConfigError(
            f"{path}: throttle has a check but no source", expected="throttle.source: <the document it comes from>"
        )
    return ThrottleCheck(
        command=throttle.get("command"), temperature=throttle.get("temperature"), source=throttle.get("source") or ""
    )


def _channel_step(data: dict, path: Path) -> Fact | None:
    step = _fact(data.get("channel_step"), path, "channel_step")
    if step is not None and (not isinstance(step.value, int) or isinstance(step.value, bool) or step.value < 1):
        raise ConfigError(f"{path}: channel_step must be a positive integer, not {step.value!r}")
    return step


def _section(data: dict, key: str, path: Path, allowed: tuple[str, ...]) -> dict:
    section = data.get(key) or {}
    if not isinstance(section, dict) or set(section) - set(allowed):
        extra = sorted(set(section) - set(allowed)) if isinstance(section, dict) else section
        raise ConfigError(f"{path}: '{key}' has unexpected content {extra!r}", expected=f"keys among {sorted(allowed)}")
    return section


def _fact(value: Any, path: Path, where: str, *, required: bool = False) -> Fact | None:
    if value is None and not required:
        return None
    if (
        not isinstance(value, dict)
        or "value" not in value
        or not isinstance(value.get("source"), str)
        or not value["source"].strip()
    ):
        raise ConfigError(
            f"{path}: {where} has no source", expected="{value: ..., source: <where the number comes from>}"
        )
    if set(value) - set(_FACT_KEYS):
        raise ConfigError(
            f"{path}: {where} has unexpected keys {sorted(set(value) - set(_FACT_KEYS))}",
            expected="{value: ..., source: ...}",
        )
    if not isinstance(value["value"], (str, int, float)) or isinstance(value["value"], bool):
        raise ConfigError(f"{path}: {where} value must be a string or a number, not {value['value']!r}")
    return Fact(value=value["value"], source=value["source"].strip())


def _commands(value: Any, path: Path, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(c, str) and c.strip() for c in value):
        raise ConfigError(f"{path}: {where} must be a list of shell commands, not {value!r}")
    return tuple(value)


def _check_str(data: dict, key: str, path: Path, where: str | None = None) -> None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path}: {where or key} must be a string, not {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
