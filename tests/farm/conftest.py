"""A farm of loopback devices: three real OpenSSH servers on 127.0.0.1 (tests/devices/conftest.py starts each) and
a farm file naming them; the command under test starts Ray (the `farm` extra) as a real local cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tests.devices.conftest import SshServer, ssh_keys, start_sshd, stop_sshd  # noqa: F401  (ssh_keys: a fixture)


def write_farm(path: Path, servers: list[SshServer], *, name: str = "loopback", **extra) -> Path:
    """A farm file of `servers` (devices dev0, dev1, …) for a host-like ssh target running ONNX Runtime."""
    target = path.parent / f"{name}-target.yaml"
    target.write_text(yaml.safe_dump({"name": "loopback-board", "description": "this machine over ssh",
                                      "runtime": "onnxruntime", "threads": 1}))  # fmt: skip
    devices = [
        {"name": f"dev{k}", "connection": {"kind": "ssh", "host": "127.0.0.1", "port": s.port, "user": s.keys.user,
                                           "python": sys.executable, "key": str(s.keys.client_key),
                                           "ssh_config": str(s.config)}}
        for k, s in enumerate(servers)
    ]  # fmt: skip
    path.write_text(yaml.safe_dump({"name": name, "target": target.name, "devices": devices, **extra}))
    return path


@pytest.fixture()
def three_devices(ssh_keys, tmp_path):  # noqa: F811
    servers = [start_sshd(ssh_keys, tmp_path / f"device{k}") for k in range(3)]
    yield servers
    for server in servers:
        stop_sshd(server)
