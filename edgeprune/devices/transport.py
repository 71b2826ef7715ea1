"""Transports start the agent on a device and move files to and from it. Local only for now; ssh and adb
come with the device issue and implement the same three methods."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

from edgeprune._resources import resource_dir
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.types import TargetProfile


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


class LocalTransport(Transport):
    """The device is this machine: the agent is a subprocess of the current Python."""

    label = "local"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def start_agent(self, stderr_log: Path) -> subprocess.Popen:
        command = [self.python, "-u", str(resource_dir("targets") / "agent.py")]
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
    kind = profile.connection.kind
    if kind == "local":
        return LocalTransport()
    raise ConfigError(
        f"target {profile.name} connects over {kind}, which this edgeprune version cannot reach yet",
        fix="use a local target (e.g. --target host)",
    )


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="edgeprune-"))
