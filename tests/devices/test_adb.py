"""The adb transport: the real adb binary with no device attached, and a stand-in adb that runs "device" shell
commands on this machine, to check quoting, exit codes, timeouts and states without a phone."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from edgeprune.devices import adb as adb_module
from edgeprune.devices.adb import AdbTransport
from edgeprune.errors import DeviceError

# Answers like adb: `devices`, `-s SERIAL shell CMD` (run by sh here), push and pull (copies).
FAKE_ADB = """#!{python}
import os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(repr(args) + "\\n")
if args[0] == "-s":
    args = args[2:]
if args[0] == "devices":
    sys.stdout.write("List of devices attached\\n" + os.environ.get("FAKE_ADB_DEVICES", "") + "\\n")
elif args[0] == "shell":
    os.execvp("sh", ["sh", "-c", args[1]])
elif args[0] in ("push", "pull"):
    shutil.copy(args[1], args[2])
"""


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "adb").write_text(FAKE_ADB.format(python=sys.executable))
    (bin_dir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M\tdevice\nLOCKED\tunauthorized")
    monkeypatch.setattr(adb_module, "DEVICE_DIR", str(tmp_path / "device dir"))
    return tmp_path


def test_shell_words_arrive_literally_with_the_exit_code(fake_adb):
    marker = fake_adb / f"pwned-{uuid.uuid4().hex[:8]}"
    phone = AdbTransport("R58M")
    code, out, _ = phone.shell(["echo", "a  b", f"$(touch {marker})", f"`touch {marker}`; touch {marker}"])
    assert (code, out) == (0, f"a  b $(touch {marker}) `touch {marker}`; touch {marker}\n")
    assert not marker.exists()
    assert phone.shell(["sh", "-c", "echo oops >&2; exit 3"]) == (3, "", "oops\n")
    with pytest.raises(DeviceError, match=r"listing on adb R58M failed \(code 3\): oops"):
        phone.check_shell(["sh", "-c", "echo oops >&2; exit 3"], what="listing")
    assert "['-s', 'R58M', 'shell'," in (fake_adb / "adb.log").read_text()


def test_the_command_a_user_is_told_to_paste_runs_what_edgeprune_ran_and_nothing_else(fake_adb, monkeypatch):
    marker = fake_adb / f"pwned-{uuid.uuid4().hex[:8]}"
    serial = f"x;touch {marker}"
    monkeypatch.setenv("FAKE_ADB_DEVICES", f"{serial}\tdevice")
    phone = AdbTransport(serial)
    argv = ["echo", f"$(touch {marker})", f"`touch {marker}`; touch {marker}"]
    _, ran, _ = phone.shell(argv)
    pasted = subprocess.run(["bash", "-c", phone.pasteable(argv)], capture_output=True, text=True, cwd=fake_adb)
    assert pasted.stdout == ran == f"$(touch {marker}) `touch {marker}`; touch {marker}\n"
    assert not marker.exists()
    calls = (fake_adb / "adb.log").read_text().splitlines()
    assert calls[-1] == calls[-2]  # the pasted `adb -s SERIAL shell LINE` is the call edgeprune made


def test_put_and_fetch_round_trip(fake_adb):
    local = fake_adb / "model one.tflite"
    local.write_bytes(b"\x00tflite")
    phone = AdbTransport("R58M")
    remote = phone.put(local)
    assert remote == f"{adb_module.DEVICE_DIR}/model one.tflite"
    (fake_adb / "back").mkdir()
    assert phone.fetch(remote, fake_adb / "back").read_bytes() == b"\x00tflite"


def test_a_slow_device_is_a_timeout_error(fake_adb):
    with pytest.raises(DeviceError, match="adb shell sleep on adb R58M took longer than 1 s"):
        AdbTransport("R58M").shell(["sleep", "5"], timeout_s=1)


def test_device_states_and_choices_are_named(fake_adb, monkeypatch):
    with pytest.raises(DeviceError, match="Android device LOCKED is unauthorized; fix: unlock the device and accept"):
        AdbTransport("LOCKED").shell(["true"])
    with pytest.raises(DeviceError, match=r"2 Android devices are attached \(LOCKED, R58M\); fix: pick one with"):
        AdbTransport().shell(["true"])
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M\tdevice")
    assert AdbTransport().serial() == "R58M"


def test_the_python_agent_is_refused_with_the_android_way(tmp_path):
    with pytest.raises(DeviceError, match="does not run on Android .* benchmark_model"):
        AdbTransport("R58M").start_agent(tmp_path / "log")


def test_missing_adb_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeviceError, match=r"adb is not installed on this machine; fix: install Android platform-tools"):
        AdbTransport("R58M").devices()


@pytest.fixture
def real_adb(monkeypatch):
    """The real adb with its own server on a private port (the user's server is left alone), stopped after."""
    if shutil.which("adb") is None:
        pytest.skip("needs adb: apt-get install adb")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    yield
    subprocess.run(["adb", "kill-server"], capture_output=True, timeout=10)


def test_real_adb_without_a_device(real_adb, tmp_path):
    assert AdbTransport(timeout_s=10).devices() == {}
    with pytest.raises(DeviceError, match=r"no Android device is attached \(`adb devices` lists none\); fix: connect"):
        AdbTransport(timeout_s=10).shell(["true"])
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    with pytest.raises(DeviceError, match=r"Android device emulator-5554 is not attached \(attached: none\)"):
        AdbTransport("emulator-5554", timeout_s=10).put(model)
    assert not Path("/data/local/tmp/edgeprune").exists()
