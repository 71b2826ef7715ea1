"""The adb transport: Android devices through the user's `adb` (push, pull, shell).

Android has no Python for the agent: runs there use TFLite's `benchmark_model` binary (devices/benchmark_model.py
parses its output), pushed and started with the plumbing here. Every shell command is quoted word by word; the
exit status of `adb shell` is the device command's on Android 7+ (adb's shell protocol v2), always 0 before.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from edgeprune.devices.transport import Transport, shell_line
from edgeprune.errors import ConfigError, DeviceError

DEVICE_DIR = "/data/local/tmp/edgeprune"  # writable by the shell user and executable on every Android version
COMMAND_TIMEOUT_S = 60
_TRANSFER_BYTES_PER_S = 2 * 1024 * 1024  # USB 2 adb in practice is faster; this only sets timeouts
_STATE_FIXES = {
    "unauthorized": "unlock the device and accept the 'Allow USB debugging?' prompt",
    "offline": "replug the cable or run `adb reconnect`",
    "no permissions": "add a udev rule for the device (see `adb devices` output) or run adb as a user in plugdev",
}


class AdbTransport(Transport):
    """An Android device by serial (None: the only attached one)."""

    def __init__(self, serial: str | None = None, *, timeout_s: float = COMMAND_TIMEOUT_S):
        if serial is not None and (not serial or serial.startswith("-")):
            raise ConfigError(f"adb serial {serial!r} is not a serial", fix="pass one that `adb devices` lists")
        self.requested = serial
        self.timeout_s = timeout_s
        self.label = f"adb {serial}" if serial else "adb"
        self._serial: str | None = None
        self._device_dir_made = False

    # --- Transport --------------------------------------------------------------------------------------------

    def start_agent(self, stderr_log: Path) -> subprocess.Popen:
        raise DeviceError(
            f"the Python agent does not run on Android ({self.label}): Android targets are measured with TFLite's "
            "benchmark_model binary over adb",
            fix="use an Android target profile whose runtime is tflite (measured through benchmark_model)",
        )

    def put(self, local: Path) -> str:
        local = Path(local)
        if not local.is_file():
            raise ConfigError(f"cannot push {local} to {self.label}: not a file")
        if not self._device_dir_made:
            self.check_shell(["mkdir", "-p", DEVICE_DIR], what="making the work directory")
            self._device_dir_made = True
        remote = f"{DEVICE_DIR}/{local.name}"
        self.push(local, remote)
        return remote

    def fetch(self, remote: str, local_dir: Path) -> Path:
        local = Path(local_dir) / Path(remote).name
        self.pull(remote, local)
        return local

    # --- adb ----------------------------------------------------------------------------------------------------

    def devices(self) -> dict[str, str]:
        """Attached devices as {serial: state} (`adb devices`; starts adb's server if it is not running)."""
        proc = self._adb(["devices"], with_serial=False, what="listing devices")
        if proc.returncode != 0:
            raise DeviceError(f"`adb devices` failed: {_last_line(proc.stderr)}", fix="run `adb kill-server` and retry")
        found = {}
        for line in proc.stdout.splitlines():
            if not line.strip() or line.startswith(("List of devices", "*")):
                continue
            serial, _, state = line.partition("\t")
            found[serial.strip()] = state.strip()
        return found

    def serial(self) -> str:
        """The serial this transport talks to, after checking that the device is attached and usable."""
        if self._serial is not None:
            return self._serial
        found = self.devices()
        if self.requested is None:
            if not found:
                raise DeviceError(
                    "no Android device is attached (`adb devices` lists none)",
                    fix="connect one by USB with USB debugging on, or `adb connect HOST:PORT`",
                )
            if len(found) > 1:
                raise DeviceError(
                    f"{len(found)} Android devices are attached ({', '.join(sorted(found))})",
                    fix="pick one with --serial or EDGEPRUNE_SERIAL",
                )
            serial = next(iter(found))
        else:
            serial = self.requested
            if serial not in found:
                attached = ", ".join(sorted(found)) or "none"
                raise DeviceError(
                    f"Android device {serial} is not attached (attached: {attached})",
                    fix="check the cable or `adb connect HOST:PORT`, and the serial `adb devices` lists",
                )
        state = found[serial]
        if state != "device":
            fix = next((f for s, f in _STATE_FIXES.items() if state.startswith(s)), "check `adb devices`")
            raise DeviceError(f"Android device {serial} is {state}", fix=fix)
        self._serial = serial
        self.label = f"adb {serial}"
        return serial

    def shell(self, args: Sequence[str], *, timeout_s: float | None = None) -> tuple[int, str, str]:
        """Run one command on the device: (exit status, stdout, stderr). Every word is quoted for the device shell."""
        proc = self._adb(["shell", shell_line(args)], what=f"shell {args[0] if args else ''}", timeout_s=timeout_s)
        return proc.returncode, proc.stdout, proc.stderr

    def pasteable(self, args: Sequence[str]) -> str:
        """The command a user pastes to run `args` on this device as `shell` runs them."""
        return shell_line(["adb", "-s", self.serial(), "shell", shell_line(args)])

    def check_shell(self, args: Sequence[str], *, what: str, timeout_s: float | None = None) -> str:
        """`shell`, raising DeviceError unless the command exits 0; its stdout."""
        code, out, err = self.shell(args, timeout_s=timeout_s)
        if code != 0:
            raise DeviceError(f"{what} on {self.label} failed (code {code}): {_last_line(err or out)}")
        return out

    def push(self, local: Path, remote: str) -> None:
        timeout_s = self.timeout_s + Path(local).stat().st_size / _TRANSFER_BYTES_PER_S
        proc = self._adb(["push", str(local), remote], what=f"push {Path(local).name}", timeout_s=timeout_s)
        if proc.returncode != 0:
            raise DeviceError(f"adb push of {Path(local).name} to {self.label} failed: {_last_line(proc.stderr)}")

    def pull(self, remote: str, local: Path) -> None:
        proc = self._adb(["pull", remote, str(local)], what=f"pull {remote}")
        if proc.returncode != 0:
            raise DeviceError(f"adb pull of {remote} from {self.label} failed: {_last_line(proc.stderr)}")

    def _adb(
        self, args: list[str], *, what: str, with_serial: bool = True, timeout_s: float | None = None
    ) -> subprocess.CompletedProcess:
        adb = shutil.which("adb")
        if adb is None:
            raise DeviceError(
                "adb is not installed on this machine",
                fix="install Android platform-tools (Debian/Ubuntu: apt install adb) and put adb on PATH",
            )
        command = [adb, *(["-s", self.serial()] if with_serial else []), *args]
        timeout_s = timeout_s or self.timeout_s
        try:
            return subprocess.run(
                command, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(
                f"adb {what} on {self.label} took longer than {timeout_s:.0f} s",
                fix="check the device responds (`adb shell true`); replug it or run `adb reconnect`",
            ) from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message from adb"
