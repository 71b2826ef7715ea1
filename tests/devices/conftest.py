"""A real OpenSSH server on 127.0.0.1 for the ssh transport tests: throw-away host and client keys, its own
authorized_keys and known_hosts, nothing of the machine's ssh setup touched. Skips when sshd is not installed
(`apt-get install openssh-server`; .ci/run does it)."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.processes import die_with_parent, free_port

SSHD = Path("/usr/sbin/sshd")


@dataclass
class SshKeys:
    root: Path
    client_key: Path  # private key, authorized on every server started here
    host_key: Path
    user: str


@dataclass
class SshServer:
    port: int
    process: subprocess.Popen
    keys: SshKeys
    config: Path  # client config (ssh -F): known_hosts for this server, strict host key checking
    cache: Path  # the device's XDG_CACHE_HOME: where the transport keeps the agent and session files
    leftovers: list[tuple[int, str]] = field(default_factory=list)  # (pid, name) of programs sshd had started

    def profile(self, path: Path, **connection) -> Path:
        """A target profile YAML that reaches this server over ssh with the venv's Python as the device's."""
        spec = {
            "kind": "ssh",
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.keys.user,
            "python": sys.executable,
            "key": str(self.keys.client_key),
            "ssh_config": str(self.config),
            **connection,
        }
        path.write_text(
            yaml.safe_dump(
                {
                    "name": "ssh-loopback",
                    "description": "this machine over ssh",
                    "runtime": "onnxruntime",
                    "connection": spec,
                }
            )
        )
        return path

    def kill(self) -> None:
        """Drop every connection at once, like a device losing power: SIGKILL the listener and all sshd
        processes under it. The programs they ran (the agent) see their pipes close, as on a real device, and are
        stopped by `stop_sshd`."""
        tree = _descendants(self.process.pid)
        for pid in [self.process.pid, *tree]:
            if _comm(pid).startswith("sshd"):
                _signal(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.leftovers += [(pid, _comm(pid)) for pid in tree if _comm(pid)]


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory) -> SshKeys:
    if not SSHD.exists() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("needs OpenSSH (/usr/sbin/sshd, ssh, ssh-keygen): apt-get install openssh-server openssh-client")
    root = tmp_path_factory.mktemp("ssh")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    return SshKeys(root=root, client_key=root / "client_key", host_key=root / "host_key", user=getpass.getuser())


def start_sshd(keys: SshKeys, directory: Path) -> SshServer:
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    cache = directory / "device cache"  # a space in the device's paths, on purpose
    # A free port can be taken between the probe and sshd's bind (by another pytest-xdist worker's server, or an
    # outgoing connection's ephemeral port): then sshd exits naming the address, and it starts again on another.
    for _ in range(5):
        port = free_port()
        process = _launch_sshd(keys, directory, port, cache)
        if process is not None:
            break
    else:
        pytest.skip(f"sshd found no free port in 5 tries: {(directory / 'sshd.log').read_text().strip()[-300:]}")
    host_public = keys.host_key.with_suffix(".pub").read_text().split()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}\n")
    client = directory / "ssh_config"
    client.write_text(
        f"Host *\n  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
    )
    return SshServer(port=port, process=process, keys=keys, config=client, cache=cache)


def _launch_sshd(keys: SshKeys, directory: Path, port: int, cache: Path) -> subprocess.Popen | None:
    """sshd listening on 127.0.0.1:`port`, or None when the port was taken before it could bind."""
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {keys.host_key}",
                f"PidFile {directory / 'sshd.pid'}",
                f"AuthorizedKeysFile {keys.root / 'authorized_keys'}",
                f"AllowUsers {keys.user}",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                f'SetEnv "XDG_CACHE_HOME={cache}"',
                "LogLevel ERROR",
                "",
            ]
        )
    )
    log = directory / "sshd.log"
    process = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),
        preexec_fn=die_with_parent,
    )
    deadline = time.monotonic() + 10
    while not _listens(process.pid, port):  # ours: a connection could reach another process that took the port
        if process.poll() is not None:
            if "Address already in use" in log.read_text():
                return None
            pytest.skip(f"sshd did not start: {log.read_text().strip()[-300:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.skip("sshd did not listen within 10 s")
        time.sleep(0.05)
    return process


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on 127.0.0.1:`port` (from /proc/net/tcp and its fds)."""
    try:
        inodes = {os.readlink(fd)[8:-1] for fd in Path(f"/proc/{pid}/fd").iterdir()}  # "socket:[INODE]"
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    wanted = f"0100007F:{port:04X}"
    return any(row.split()[1] == wanted and row.split()[3] == "0A" and row.split()[9] in inodes for row in rows)


def stop_sshd(server: SshServer) -> None:
    if server.process.poll() is None:
        server.kill()
    for pid, name in server.leftovers:
        if _comm(pid) == name:
            _signal(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def sshd(ssh_keys, tmp_path_factory):
    """One server for the whole session; tests that kill a server start their own with `start_sshd`."""
    server = start_sshd(ssh_keys, tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _comm(pid: int) -> str:
    """The process's name; "" when it is gone or a zombie."""
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return ""
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, IndexError):
        return ""


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
