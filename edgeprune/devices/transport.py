"""Transports start the agent on a device and move files to and from it: local (a subprocess), ssh (ssh.py, the
user's OpenSSH client) and adb (adb.py). Where a device is comes from its profile's connection, overridden by
EDGEPRUNE_* environment variables, overridden by command-line flags: `resolve_connection` is the one place that
decides it."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeprune._resources import resource_dir
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.types import Connection, TargetProfile


class Transport(ABC):
    label: str

    @abstractmethod
    def start_agent(self, stderr_log: Path) -> subprocess.Popen:
        """Start targets/agent.py on the device with binary stdin/stdout pipes."""

    @abstractmethod
    def put(self, local: Path) -> str:
        """Make a host file available on the device; returns its device path."""

    @abstractmethod
    def fetch(self, remote: str, local_dir: Path) -> Path:
        """Bring a device file to the host; returns its host path."""

    def close(self) -> None:  # noqa: B027  (optional hook: a transport without connections has nothing to release)
        """Release connections and device-side scratch files. Safe to call twice."""

    def agent_died(self, code: int, last_words: str) -> DeviceError:
        """The error for an agent that exited mid-session; transports that can tell a lost link from a crash say so."""
        suffix = f": {last_words}" if last_words else ""
        return DeviceError(f"the agent on {self.label} exited (code {code}){suffix}")


AGENT_ENTRY = "agent.py"  # the agent's entry point in targets/; it imports its other files from its own directory


def agent_files() -> tuple[str, ...]:
    """The agent's files in targets/ (every agent*.py), agent.py last: what a transport ships to a device. Found, not
    listed, so a new agent module cannot be left behind."""
    names = sorted(p.name for p in resource_dir("targets").glob("agent*.py") if p.name != AGENT_ENTRY)
    return (*names, AGENT_ENTRY)


class LocalTransport(Transport):
    """The device is this machine: the agent is a subprocess of the current Python."""

    label = "local"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def start_agent(self, stderr_log: Path) -> subprocess.Popen:
        command = [self.python, "-u", str(resource_dir("targets") / AGENT_ENTRY)]
        try:
            return subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(stderr_log, "wb")
            )
        except OSError as exc:
            raise DeviceError(f"cannot start the local agent with {self.python}: {exc.strerror}") from None

    def put(self, local: Path) -> str:
        return str(Path(local).resolve())

    def fetch(self, remote: str, local_dir: Path) -> Path:
        return Path(remote)


def transport_for(profile: TargetProfile) -> Transport:
    """The transport for the profile's connection as it stands (resolve overrides first: `with_connection`)."""
    connection = profile.connection
    _check(connection, profile.name)
    if connection.kind == "local":
        return LocalTransport()
    if connection.kind == "ssh":
        from edgeprune.devices.ssh import SshTransport

        return SshTransport(connection)
    from edgeprune.devices.adb import AdbTransport

    return AdbTransport(connection.serial)


# --- where the device is: flags > environment > profile ---------------------------------------------------------

# Connection field -> environment variable. The flags (edgeprune/cli/options.py) use the same field names.
ENVIRONMENT = {
    "host": "EDGEPRUNE_HOST",
    "user": "EDGEPRUNE_USER",
    "port": "EDGEPRUNE_PORT",
    "serial": "EDGEPRUNE_SERIAL",
    "python": "EDGEPRUNE_REMOTE_PYTHON",
    "key": "EDGEPRUNE_SSH_KEY",
    "ssh_config": "EDGEPRUNE_SSH_CONFIG",
    "benchmark_model": "EDGEPRUNE_BENCHMARK_MODEL",
}
_FIELDS_OF_KIND = {
    "local": (),
    "ssh": ("host", "user", "port", "python", "key", "ssh_config"),
    "adb": ("serial", "benchmark_model"),
}


def resolve_connection(
    profile: TargetProfile, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Connection:
    """The profile's connection with EDGEPRUNE_* variables and then `overrides` (command-line flags; None values
    are "not given") applied. A flag that does not apply to the connection kind is an error; a variable that
    does not apply is ignored, since the environment is shared by every target."""
    environ = os.environ if environ is None else environ
    connection = profile.connection
    applicable = _FIELDS_OF_KIND.get(connection.kind, ())
    values: dict[str, Any] = {}
    for name, variable in ENVIRONMENT.items():
        if name in applicable and environ.get(variable):
            values[name] = _port(environ[variable], variable) if name == "port" else environ[variable]
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in ENVIRONMENT:
            raise ValueError(f"unknown connection override {name!r}")  # a programming error, not a user's
        if name not in applicable:
            raise ConfigError(
                f"--{name.replace('_', '-')} does not apply to target {profile.name}, which connects over "
                f"{connection.kind}",
                fix=_kind_fix(connection.kind),
            )
        values[name] = _port(value, f"--{name}") if name == "port" else value
    resolved = dataclasses.replace(connection, **values)
    _check(resolved, profile.name)
    return resolved


def with_connection(profile: TargetProfile, overrides: Mapping[str, Any] | None = None) -> TargetProfile:
    """The profile with its connection resolved (see resolve_connection)."""
    return dataclasses.replace(profile, connection=resolve_connection(profile, overrides))


def _port(value: Any, where: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where} {value!r} is not a port", expected="an integer from 1 to 65535")
    return port


def _kind_fix(kind: str) -> str:
    return {"ssh": "use --host/--user/--port for ssh targets", "adb": "use --serial for adb targets"}.get(
        kind, "connection flags apply to ssh and adb targets; pick one with --target"
    )


def _check(connection: Connection, target: str) -> None:
    if connection.kind == "ssh":
        if not connection.host:
            raise ConfigError(
                f"target {target} connects over ssh but names no host",
                fix="pass --host (an address or ~/.ssh/config alias), set EDGEPRUNE_HOST, or set connection.host",
            )
        if connection.port is not None:
            _port(connection.port, f"ssh port of target {target}")
        for name in ("host", "user"):
            value = getattr(connection, name)
            if value is not None and (value.startswith("-") or not value.strip() or any(c.isspace() for c in value)):
                raise ConfigError(
                    f"ssh {name} {value!r} of target {target} is not a {name} name",
                    expected="no spaces and no leading '-'",
                )
    if connection.kind == "adb" and connection.serial is not None and connection.serial.startswith("-"):
        raise ConfigError(
            f"adb serial {connection.serial!r} of target {target} starts with '-'",
            fix="pass the serial `adb devices` lists",
        )


def shell_line(args: Sequence[object]) -> str:
    """One POSIX shell command line with every word quoted: what a device's shell runs, and what a user is told to
    paste (a hostile host, serial or file name stays one word and runs nothing)."""
    return shlex.join(str(a) for a in args)


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="edgeprune-"))
