"""The ssh transport: the user's own OpenSSH client (`ssh`), so ~/.ssh/config, its Host aliases, keys, agents and
known_hosts all apply as they do in the user's shell.

- Keys only (BatchMode=yes): ssh never asks for a password, and edgeprune never reads a key (it passes the path).
- Host keys are checked as the user's ssh config says; edgeprune never turns StrictHostKeyChecking off.
- One TCP connection per session (ControlMaster, socket in a private temp dir, closed by `close()`), kept alive
  with ServerAliveInterval so that a dropped link surfaces within ~15 s.
- Everything sent to the remote shell is a constant script plus arguments quoted with shlex.quote.
- On the device: ${XDG_CACHE_HOME:-~/.cache}/edgeprune holds agent-<sha>/ (the agent's files, copied once per agent
  version) and a session-XXXXXXXX directory for the files of one session (removed at close).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

from edgeprune._resources import resource_dir
from edgeprune.devices.transport import AGENT_ENTRY, Transport, agent_files, shell_line
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.fileio import sha256_file
from edgeprune.types import Connection

CONNECT_TIMEOUT_S = 10
COMMAND_TIMEOUT_S = 60
_ALIVE_INTERVAL_S, _ALIVE_COUNT = 5, 3
_PERSIST_S = 300  # a master left behind by a killed host process exits after this long idle
_UPLOAD_BYTES_PER_S = 512 * 1024  # the slowest link we plan for (Wi-Fi to a Raspberry Pi), for upload timeouts
_MIN_PYTHON = (3, 6)

# $1: the device's python, $2: the agent's content hash. Prints key=value lines.
_PREPARE = r"""set -e
base="${XDG_CACHE_HOME:-$HOME/.cache}/edgeprune"
mkdir -p "$base"
session=$(mktemp -d "$base/session-XXXXXXXX")
echo "session=$session"
if command -v "$1" >/dev/null 2>&1; then
  echo "python=$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
else
  echo "python="
fi
if [ -f "$base/agent-$2/agent.py" ]; then echo "agent=present"; fi
"""
# $1: destination. Written under a temporary name first so that an interrupted copy is never taken for the file.
_RECEIVE = 'set -e; part="$1.part.$$"; cat > "$part"; mv -f "$part" "$1"'


class SshTransport(Transport):
    """The agent on a device reached with `ssh`; see the module docstring."""

    def __init__(self, connection: Connection, *, connect_timeout_s: int = CONNECT_TIMEOUT_S):
        if connection.kind != "ssh" or not connection.host:
            raise ValueError(f"not an ssh connection with a host: {connection}")
        for what, path in (("ssh config", connection.ssh_config), ("ssh key", connection.key)):
            if path and not Path(path).expanduser().is_file():
                raise ConfigError(f"{what} file not found: {path}", fix=f"give the path of an existing {what} file")
        self.connection = connection
        self.python = connection.python or "python3"
        self.connect_timeout_s = connect_timeout_s
        where = connection.host if not connection.user else f"{connection.user}@{connection.host}"
        self.where = where + (f":{connection.port}" if connection.port else "")
        self.label = f"ssh {self.where}"
        self._control_dir: Path | None = None
        self._stop_master: weakref.finalize | None = None
        self._session: str | None = None
        self._base: str | None = None
        self._remote_python: str = ""
        self._agent_present = False
        self._on_device: dict[str, str] = {}  # device path -> sha256 of the content put there
        self._digests: dict[tuple[str, int, int], str] = {}

    # --- Transport --------------------------------------------------------------------------------------------

    def start_agent(self, stderr_log: Path) -> subprocess.Popen:
        try:
            self._prepare()
            if not self._remote_python:
                raise DeviceError(
                    f"no {self.python} on {self.where}",
                    fix="install Python >= 3.6 with numpy and the runtime on the device, or name its interpreter "
                    "with connection.python in the profile or EDGEPRUNE_REMOTE_PYTHON",
                )
            version = tuple(int(p) for p in self._remote_python.split(".")[:2] if p.isdigit())
            if version < _MIN_PYTHON:
                raise DeviceError(
                    f"{self.python} on {self.where} is Python {self._remote_python}; the agent needs >= 3.6",
                    fix="name a newer interpreter with EDGEPRUNE_REMOTE_PYTHON",
                )
            remote_dir = f"{self._base}/agent-{_agent_sha()}"
            if not self._agent_present:
                self._run(["mkdir", "-p", remote_dir], what="making the agent's directory")
                for name in agent_files():  # the entry point last: a directory that has it is complete
                    self._upload(resource_dir("targets") / name, f"{remote_dir}/{name}")
                self._agent_present = True
            line = "exec " + shell_line([self.python, "-u", f"{remote_dir}/{AGENT_ENTRY}"])
            command = [*self._ssh(), "--", self.connection.host, line]
            return subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(stderr_log, "wb")
            )
        except BaseException:
            self.close()
            raise

    def put(self, local: Path) -> str:
        local = Path(local)
        if not local.is_file():
            raise ConfigError(f"cannot copy {local} to {self.where}: not a file")
        self._prepare()
        digest = self._digest(local)
        remote = f"{self._session}/{local.name}"
        if self._on_device.get(remote) != digest:
            self._upload(local, remote)
            self._on_device[remote] = digest
        return remote

    def fetch(self, remote: str, local_dir: Path) -> Path:
        self._prepare()
        local = Path(local_dir) / Path(remote).name
        with open(local, "wb") as out:
            self._run(["cat", "--", remote], stdout=out, what=f"reading {remote}")
        return local

    def close(self) -> None:
        if self._session and self._master_alive():
            try:
                self._run(["rm", "-rf", "--", self._session], what="cleaning up", timeout_s=10)
            except DeviceError:
                pass  # the device's scratch files are a nicety; the error that brought us here matters more
        self._session = None
        self._on_device.clear()
        if self._stop_master is not None:
            self._stop_master()
        self._control_dir, self._stop_master = None, None

    def agent_died(self, code: int, last_words: str) -> DeviceError:
        if code == 255:  # ssh's own failure code: the link, not the agent
            return DeviceError(
                f"lost the ssh connection to {self.where} while the agent ran"
                + (f" ({last_words})" if last_words else ""),
                fix=f"check that the device is powered and reachable (`{self.pasteable('true')}`), then rerun",
            )
        return super().agent_died(code, last_words)

    # --- ssh ----------------------------------------------------------------------------------------------------

    def _ssh(self, *, master: bool = False) -> list[str]:
        """The ssh command line up to (not including) `-- host`."""
        connection = self.connection
        command = ["ssh", "-T"]
        if connection.ssh_config:
            command += ["-F", str(Path(connection.ssh_config).expanduser())]
        options = [
            "BatchMode=yes",
            f"ConnectTimeout={self.connect_timeout_s}",
            f"ServerAliveInterval={_ALIVE_INTERVAL_S}",
            f"ServerAliveCountMax={_ALIVE_COUNT}",
            f"ControlPath={self._control_dir}/c",
            "ControlMaster=yes" if master else "ControlMaster=no",
        ]
        if master:
            options.append(f"ControlPersist={_PERSIST_S}")
        if connection.key:
            command += ["-i", str(Path(connection.key).expanduser())]
            options.append("IdentitiesOnly=yes")
        for option in options:
            command += ["-o", option]
        if connection.port:
            command += ["-p", str(connection.port)]
        if connection.user:
            command += ["-l", connection.user]
        return command

    def _connect(self) -> None:
        """Open the master connection that every later command of this session reuses."""
        if self._control_dir is not None:
            return
        if shutil.which("ssh") is None:
            raise DeviceError(
                "the OpenSSH client `ssh` is not installed on this machine",
                fix="install it (Debian/Ubuntu: apt install openssh-client)",
            )
        self._control_dir = Path(tempfile.mkdtemp(prefix="edgeprune-ssh-", dir=_short_temp_dir()))
        self._stop_master = weakref.finalize(
            self, _stop_master, [*self._ssh(), "-O", "exit", "--", self.connection.host], self._control_dir
        )
        log = self._control_dir / "master.log"
        command = [*self._ssh(master=True), "-N", "-f", "--", self.connection.host]
        with open(log, "wb") as stderr:  # a file, not a pipe: the backgrounded master keeps it open
            try:
                proc = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    timeout=self.connect_timeout_s + 30,
                )
            except subprocess.TimeoutExpired:
                raise DeviceError(
                    f"ssh to {self.where} did not finish logging in within {self.connect_timeout_s + 30} s",
                    fix=self._reach_fix,
                ) from None
        if proc.returncode != 0:
            raise self._ssh_failure(log.read_text(errors="replace"))

    def _master_alive(self) -> bool:
        if self._control_dir is None or not (self._control_dir / "c").exists():
            return False
        check = [*self._ssh(), "-O", "check", "--", self.connection.host]
        try:
            return (
                subprocess.run(
                    check, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5
                ).returncode
                == 0
            )
        except subprocess.TimeoutExpired:
            return False

    def _prepare(self) -> None:
        """Connect, make this session's directory on the device and look for its Python and our agent."""
        if self._session is not None:
            return
        self._connect()
        facts = {}
        for line in self._run(["sh", "-c", _PREPARE, "sh", self.python, _agent_sha()], what="preparing").splitlines():
            key, _, value = line.partition("=")
            facts[key] = value
        if not facts.get("session"):
            raise DeviceError(
                f"could not make a work directory on {self.where}",
                fix="check that the device's login shell is a POSIX sh",
            )
        self._session = facts["session"]
        self._base = self._session.rsplit("/", 1)[0]
        self._remote_python = facts.get("python", "")
        self._agent_present = facts.get("agent") == "present"

    def _upload(self, local: Path, remote: str) -> None:
        timeout_s = COMMAND_TIMEOUT_S + local.stat().st_size / _UPLOAD_BYTES_PER_S
        with open(local, "rb") as content:
            self._run(
                ["sh", "-c", _RECEIVE, "sh", remote], stdin=content, what=f"copying {local.name}", timeout_s=timeout_s
            )

    def _run(
        self, remote: Sequence[str], *, what: str, stdin=None, stdout=None, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> str:
        """Run one remote command over the master connection; its stdout (unless redirected) as text."""
        command = [*self._ssh(), "--", self.connection.host, shell_line(remote)]
        try:
            proc = subprocess.run(
                command,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(
                f"{what} on {self.where} took longer than {timeout_s:.0f} s", fix=self._reach_fix
            ) from None
        stderr = proc.stderr.decode(errors="replace")
        if proc.returncode == 255:
            raise self._ssh_failure(stderr)
        if proc.returncode != 0:
            raise DeviceError(f"{what} on {self.where} failed (code {proc.returncode}): {_last_line(stderr)}")
        return proc.stdout.decode(errors="replace") if stdout is None else ""

    def _ssh_failure(self, stderr: str) -> DeviceError:
        """ssh's exit 255, as one line that names the device and the fix."""
        line = _last_line(stderr)
        text = stderr.lower()
        if "connection refused" in text:
            return DeviceError(
                f"cannot reach {self.where}: connection refused ({line})",
                fix="check that the device is on and runs sshd, and its address and port "
                "(--host/--port or EDGEPRUNE_HOST/EDGEPRUNE_PORT)",
            )
        if any(s in text for s in ("timed out", "no route to host", "network is unreachable")):
            return DeviceError(f"cannot reach {self.where} ({line})", fix=self._reach_fix)
        if "could not resolve hostname" in text or "name or service not known" in text:
            return DeviceError(
                f"cannot resolve the host of {self.where} ({line})",
                fix="check the name, or add a Host entry for it to ~/.ssh/config",
            )
        if "host key verification failed" in text or "identification has changed" in text:
            return DeviceError(
                f"the host key of {self.where} is unknown or has changed, and ssh refused it",
                fix=f"connect once with `{self.pasteable()}` to check and accept it (edgeprune keeps your "
                "StrictHostKeyChecking setting)",
            )
        if "permission denied" in text or "too many authentication failures" in text:
            return DeviceError(
                f"ssh login to {self.where} was refused (no accepted key)",
                fix="edgeprune logs in with keys only: run `ssh-copy-id` for the device, or name the key with "
                "connection.key or EDGEPRUNE_SSH_KEY",
            )
        return DeviceError(f"ssh to {self.where} failed: {line or 'no message from ssh'}", fix=self._reach_fix)

    @property
    def _reach_fix(self) -> str:
        return f"check that the device is powered and on the network and that `{self.pasteable('true')}` works"

    def pasteable(self, *remote: str) -> str:
        """The ssh command a user pastes to reach the device as edgeprune does (same config file, key, port, user)."""
        connection, command = self.connection, ["ssh"]
        for flag, value in (("-F", connection.ssh_config), ("-i", connection.key)):
            if value:
                command += [flag, str(Path(value).expanduser())]
        for flag, value in (("-p", connection.port), ("-l", connection.user)):
            if value:
                command += [flag, str(value)]
        return shell_line([*command, connection.host, *remote])

    def _digest(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = sha256_file(path)
        return self._digests[key]


def _stop_master(command: list[str], control_dir: Path) -> None:
    if (control_dir / "c").exists():
        try:
            subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5
            )
        except (subprocess.TimeoutExpired, OSError):
            pass
    shutil.rmtree(control_dir, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Warning: Permanently added")
    ]
    return lines[-1][:300] if lines else ""


def _agent_sha() -> str:
    """One hash over the agent's files (names and contents): a new version of any of them is a new directory."""
    digest = hashlib.sha256()
    for name in agent_files():
        digest.update(name.encode() + b"\0" + sha256_file(resource_dir("targets") / name).encode())
    return digest.hexdigest()[:16]


def _short_temp_dir() -> str:
    """Unix socket paths are limited to ~100 bytes; ssh adds 17 characters while it creates one."""
    default = tempfile.gettempdir()
    return default if len(default) <= 60 else "/tmp"
