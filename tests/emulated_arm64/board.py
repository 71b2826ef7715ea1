"""An emulated Raspberry Pi for the tests: a real arm64 Debian 12 (Bookworm, the base of Raspberry Pi OS Bookworm)
userland run by qemu-user, built into docker/agent-arm64's image with podman and reached over ssh like a Pi.

1. `debootstrap --arch=arm64` of the Dockerfile's PACKAGES into a base tarball (once per input; ~4 min quiet,
   ~15 min on a busy 2-core machine);
2. `podman import` of it, then `podman build --isolation=chroot` of docker/agent-arm64/Dockerfile on it, with the
   aarch64 wheels of docker/agent-arm64/requirements.txt downloaded on the host (pip inside the emulated userland
   cannot reach PyPI through this machine's proxy; the Dockerfile takes them through its PIP_OPTS);
3. the image's filesystem exported to a directory keyed by the image's ID: the board runs the image that was built.

Everything is cached under ${XDG_CACHE_HOME:-~/.cache}/edgeprune-board (outside the clone), built under a lock so
that concurrent test workers build once. `start()` runs the image's own entry point (its sshd) on 127.0.0.1 in a
private mount namespace: an overlay over the cached filesystem (nothing a session writes reaches the cache),
/proc mounted, /sys not (ONNX Runtime's cpuinfo crashes under qemu-user on the host's sysfs, measured), chroot,
throw-away keys; `stop()` kills it by PID. Nothing of the host's Python or wheels is visible inside.

Needs root (binfmt_misc, chroot, mount namespaces), qemu-user-static, debootstrap and podman (.ci/run installs them).
`python3 -m tests.emulated_arm64.board build` builds the cache ahead (stdlib only, so .ci/run can start it before
the virtual environment exists).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.processes import die_with_parent, free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "agent-arm64" / "Dockerfile"
REQUIREMENTS = REPO / "docker" / "agent-arm64" / "requirements.txt"
WHEELS = REPO / "docker" / "agent-arm64" / "wheels"
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
QEMU_BINFMT = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")  # qemu-user-static's registration (flags F: fixed)
BINFMT = Path("/proc/sys/fs/binfmt_misc")
TOOLS = {"debootstrap": "debootstrap", "podman": "podman", "qemu-aarch64-static": "qemu-user-static",
         "unshare": "util-linux", "ssh-keygen": "openssh-client"}  # fmt: skip
START_TIMEOUT_S = 120  # the first sshd start under qemu on a busy machine took ~10 s; room for a loaded CI


class BoardUnavailable(RuntimeError):
    """Why the board cannot be built or started here (the tests fail with it: they are meant to run)."""


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeprune-board"


def packages() -> str:
    """The Dockerfile's PACKAGES: the one list of Debian packages, for debootstrap and for a user's own base."""
    found = re.search(r'^ARG PACKAGES="([^"]+)"', DOCKERFILE.read_text(), re.MULTILINE)
    if not found:
        raise BoardUnavailable(f"{DOCKERFILE} has no ARG PACKAGES line")
    return found.group(1)


def _key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _run(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    if proc.returncode != 0:
        raise BoardUnavailable(
            f"{what} failed ({' '.join(argv[:3])} …, exit {proc.returncode}):\n{proc.stdout[-3000:]}"
        )
    return proc


def check_host() -> None:
    if os.geteuid() != 0:
        raise BoardUnavailable("the emulated board needs root (binfmt_misc, chroot, mount namespaces)")
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise BoardUnavailable(f"missing tools: apt-get install {' '.join(missing)}")


def register_qemu() -> None:
    """binfmt_misc runs aarch64 ELF files through qemu-aarch64-static; registered here when it is not yet."""
    if (BINFMT / "qemu-aarch64").exists():
        return
    if not (BINFMT / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], "mounting binfmt_misc")
    if not (BINFMT / "qemu-aarch64").exists():  # mounting may have brought back the distribution's registration
        (BINFMT / "register").write_text(QEMU_BINFMT.read_text().strip())


@contextlib.contextmanager
def _locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _base_tarball(root: Path, log) -> Path:
    """debootstrap's arm64 userland as a tarball, once per (suite, mirror, packages)."""
    tarball = root / f"base-{_key(SUITE, MIRROR, packages())}.tar"
    if tarball.exists():
        return tarball
    with tempfile.TemporaryDirectory(dir=root, prefix="debootstrap-") as work:
        target = Path(work) / "root"
        log(f"debootstrap arm64 {SUITE} with {packages()} (minutes under emulation)")
        include = ",".join(packages().split())
        _run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={include}", SUITE, str(target), MIRROR],
             "debootstrap of the arm64 userland")  # fmt: skip
        partial = tarball.with_suffix(".part")
        _run(["tar", "-C", str(target), "--exclude=./var/cache/apt/archives/*.deb", "-cf", str(partial), "."],
             "packing the userland")  # fmt: skip
        partial.replace(tarball)
    return tarball


def _wheels(root: Path, log) -> Path:
    """The aarch64 wheels of requirements.txt for Python 3.11, downloaded on the host once per requirements file."""
    folder = root / f"wheels-{_key(REQUIREMENTS.read_bytes())}"
    if folder.exists():
        return folder
    partial = Path(tempfile.mkdtemp(dir=root, prefix="wheels-"))
    log("downloading the aarch64 wheels of docker/agent-arm64/requirements.txt")
    platforms = [arg for tag in ("manylinux_2_27_aarch64", "manylinux2014_aarch64") for arg in ("--platform", tag)]
    _run([sys.executable, "-m", "pip", "download", "-q", "-d", str(partial), *platforms, "--python-version", "3.11",
          "--only-binary=:all:", "-r", str(REQUIREMENTS)], "pip download of the aarch64 wheels")  # fmt: skip
    for numpy_wheel in partial.glob("numpy-*.whl"):  # the image keeps Debian's numpy (see the Dockerfile)
        numpy_wheel.unlink()
    partial.rename(folder)
    return folder


def _image(root: Path, log) -> str:
    """podman build of docker/agent-arm64 on the imported base; returns the image ID."""
    base_tar = _base_tarball(root, log)
    base = f"localhost/edgeprune-board-base:{base_tar.stem.removeprefix('base-')}"
    if subprocess.run(["podman", "image", "exists", base]).returncode != 0:
        log(f"podman import {base_tar.name}")
        _run(["podman", "import", "--arch", "arm64", str(base_tar), base], "podman import of the base")
    wheels = _wheels(root, log)
    staged = [WHEELS / wheel.name for wheel in wheels.iterdir()]
    try:
        for target in staged:
            shutil.copyfile(wheels / target.name, target)
        log("podman build --isolation=chroot -f docker/agent-arm64/Dockerfile")
        _run(["podman", "build", "--isolation=chroot", "--platform", "linux/arm64", "-q", "-f", str(DOCKERFILE), "--build-arg", f"BASE={base}",
              "--build-arg", "PIP_OPTS=--no-index --find-links /tmp/wheels", "-t", "localhost/edgeprune-agent-arm64",
              str(REPO)], "podman build of docker/agent-arm64", timeout=1800)  # fmt: skip
    finally:
        for target in staged:
            target.unlink(missing_ok=True)
    return _run(["podman", "image", "inspect", "--format", "{{.Id}}", "localhost/edgeprune-agent-arm64"],
                "podman image inspect").stdout.strip()  # fmt: skip


def build(log=lambda line: print(f"[board] {line}", file=sys.stderr, flush=True)) -> Path:
    """The board's root filesystem (the image's), building what is not cached yet. Safe to call concurrently."""
    check_host()
    register_qemu()
    root = cache_root()
    with _locked(root):
        image = _image(root, log)
        rootfs = root / f"rootfs-{image[:16]}"
        if not rootfs.exists():
            log(f"exporting image {image[:12]} to {rootfs}")
            partial = Path(tempfile.mkdtemp(dir=root, prefix="rootfs-partial-"))
            container = _run(["podman", "create", image, "/bin/true"], "podman create").stdout.strip().splitlines()[-1]
            try:
                with subprocess.Popen(["podman", "export", container], stdout=subprocess.PIPE) as export:
                    _run(["tar", "-C", str(partial), "-xf", "-"], "unpacking the image", stdin=export.stdout)
                if export.returncode != 0:
                    raise BoardUnavailable(f"podman export of {container} failed (exit {export.returncode})")
            finally:
                subprocess.run(["podman", "rm", "-f", container], stdout=subprocess.DEVNULL)
            partial.rename(rootfs)
        for stale in root.glob("rootfs-*"):  # one exported image at a time: each is ~600 MB
            if stale != rootfs and not stale.name.startswith("rootfs-partial-"):
                shutil.rmtree(stale, ignore_errors=True)
        return rootfs


@dataclass
class Board:
    """A running emulated board: its sshd on 127.0.0.1:port, reached as root with `client_key`."""

    port: int
    process: subprocess.Popen
    directory: Path  # private: keys, the overlay's upper layer, the client's ssh config and known_hosts
    client_key: Path
    ssh_config: Path
    rootfs: Path

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", str(self.ssh_config), "-i", str(self.client_key), "-p", str(self.port),
                               "root@127.0.0.1", command], capture_output=True, text=True, timeout=timeout)  # fmt: skip


# $1 rootfs (lower), $2 upper, $3 work, $4 merged. Runs as the mount namespace's first process and execs into the
# image's entry point, so the sshd keeps this PID and the namespace (with its mounts) ends with it.
_ENTER = """set -e
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
mount -t proc proc "$4/proc"
exec chroot "$4" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root \
  EDGEPRUNE_SSH_PORT="$5" EDGEPRUNE_SSH_LISTEN=127.0.0.1 /usr/local/bin/edgeprune-agent-sshd
"""


def start(rootfs: Path, directory: Path) -> Board:
    """Start the board's sshd on a free port of 127.0.0.1 with keys made here; see the module docstring."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    upper, work, merged = (directory / name for name in ("upper", "work", "merged"))
    for folder in (upper / "etc" / "ssh", upper / "root" / ".ssh", work, merged):
        folder.mkdir(parents=True, exist_ok=True)
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
    host_key, client_key = upper / "etc" / "ssh" / "ssh_host_ed25519_key", directory / "client_key"
    _run([*keygen, "-C", "board host", "-f", str(host_key)], "making the board's host key")
    _run([*keygen, "-C", "board client", "-f", str(client_key)], "making the client key")
    (upper / "root" / ".ssh" / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    log = directory / "sshd.log"
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _ENTER, "sh",
         str(rootfs), str(upper), str(work), str(merged), str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True,
        preexec_fn=die_with_parent,  # a killed test run left boards listening (seen)
    )  # fmt: skip
    known_hosts = directory / "known_hosts"
    public = host_key.with_suffix(".pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    ssh_config = directory / "ssh_config"
    ssh_config.write_text(f"Host *\n  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
                          "  StrictHostKeyChecking yes\n  BatchMode yes\n")  # fmt: skip
    board = Board(port, process, directory, client_key, ssh_config, rootfs)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise BoardUnavailable(f"the board's sshd exited ({process.returncode}): {log.read_text()[-500:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return board
        if time.monotonic() > deadline:
            stop(board)
            raise BoardUnavailable(f"the board's sshd did not listen within {START_TIMEOUT_S} s: {log.read_text()}")
        time.sleep(0.1)


def stop(board: Board) -> None:
    """Kill the board's sshd and every process in its mount namespace (sshd puts each session in a session of its
    own, so a process group would miss the agents); the namespace and its mounts go with the last of them."""
    for pid in _namespace_members(board.process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    board.process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (board.directory / "merged" / "proc" / "self").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # pragma: no cover - the kernel tears the namespace down asynchronously
    shutil.rmtree(board.directory, ignore_errors=True)


def _namespace_members(pid: int) -> list[int]:
    """`pid` and every other process in its mount namespace."""
    try:
        namespace = os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return [pid]
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "mnt") == namespace:
                    members.append(int(entry.name))
    return members or [pid]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.emulated_arm64.board", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build"], help="build (or find cached) the board's root filesystem")
    parser.parse_args(argv)
    started = time.monotonic()
    try:
        rootfs = build()
    except BoardUnavailable as exc:
        print(f"[board] cannot build the emulated board: {exc}", file=sys.stderr)
        return 1
    print(f"[board] {rootfs} ready after {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
