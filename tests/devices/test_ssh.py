"""The ssh transport against a real sshd on 127.0.0.1 (tests/devices/conftest.py): the "device" is this machine,
reached through OpenSSH, with the venv's Python as the device's Python."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.ssh import SshTransport
from edgeprune.devices.transport import LocalTransport
from edgeprune.errors import DeviceError
from edgeprune.types import Connection
from tests.conftest import run_cli
from tests.devices.conftest import start_sshd, stop_sshd
from tests.processes import free_port


def _connection(sshd, **changes) -> Connection:
    fields = {
        "kind": "ssh",
        "host": "127.0.0.1",
        "port": sshd.port,
        "user": sshd.keys.user,
        "python": sys.executable,
        "key": str(sshd.keys.client_key),
        "ssh_config": str(sshd.config),
    }
    return Connection(**{**fields, **changes})


def _secrets(sshd) -> list[str]:
    """The private key's body lines: none of them may show up anywhere edgeprune writes."""
    body = [line for line in sshd.keys.client_key.read_text().splitlines() if line and "PRIVATE KEY" not in line]
    return ["PRIVATE KEY", *body]


def test_profile_over_ssh_agrees_with_local(sshd, tiny_onnx, tmp_path):
    target = sshd.profile(tmp_path / "loopback.yaml")
    common = ["--model", "cifar:resnet20", "--artifact", tiny_onnx, "--runs", "30", "--threads", "1", "--json"]
    over_ssh = run_cli("profile", "--target", target, *common, "--out", tmp_path / "ssh")
    local = run_cli("profile", "--target", "host", *common, "--out", tmp_path / "local")
    assert over_ssh.code == 0, over_ssh.stderr
    assert local.code == 0, local.stderr
    ssh_latency, local_latency = over_ssh.json()["latency"], local.json()["latency"]
    print(f"resnet20 median over ssh {ssh_latency['median_ms']:.3f} ms, local {local_latency['median_ms']:.3f} ms")
    assert ssh_latency["n"] >= 30 and local_latency["n"] >= 30
    assert ssh_latency["method"].startswith(f"measured: ssh {sshd.keys.user}@127.0.0.1:{sshd.port} agent")
    assert 0.7 < ssh_latency["median_ms"] / local_latency["median_ms"] < 1.3
    # the key itself never appears in what edgeprune prints or writes
    written = (
        over_ssh.stdout
        + over_ssh.stderr
        + "".join(p.read_text(errors="replace") for p in (tmp_path / "ssh").rglob("*.json"))
    )
    assert not [secret for secret in _secrets(sshd) if secret in written]


def test_verify_over_ssh_gives_the_local_top1(sshd, resnet20_weights, cifar_test_dir, tmp_path):
    from edgeprune.commands import verify_artifact
    from edgeprune.devices.profiles import load_profile
    from edgeprune.models import LoadOptions, load_model

    model = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights)))
    local = verify_artifact(
        model, load_profile("host"), str(cifar_test_dir), tmp_path / "local", limit=20, batch_size=10
    )
    over_ssh = verify_artifact(
        model,
        load_profile(str(sshd.profile(tmp_path / "loopback.yaml"))),
        str(cifar_test_dir),
        tmp_path / "ssh",
        artifact_path=local.artifact.path,
        limit=20,
        batch_size=10,
    )
    assert over_ssh.n_samples == local.n_samples == 20
    assert [(m.name, m.runtime) for m in over_ssh.metrics] == [(m.name, m.runtime) for m in local.metrics]
    assert over_ssh.parity[0].max_abs == local.parity[0].max_abs


def test_a_dropped_connection_is_one_line_and_exit_2(ssh_keys, tiny_onnx, tmp_path):
    server = start_sshd(ssh_keys, tmp_path / "doomed")
    try:
        target = server.profile(tmp_path / "doomed.yaml")
        cli = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgeprune.cli",
                "profile",
                "--target",
                str(target),
                "--model",
                "cifar:resnet20",
                "--artifact",
                str(tiny_onnx),
                "--runs",
                "1000000",
                "--threads",
                "1",
                "--out",
                str(tmp_path / "out"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not list(server.cache.glob(f"edgeprune/session-*/{tiny_onnx.name}")):  # the model is on the device
            assert cli.poll() is None and time.monotonic() < deadline, "the model never reached the device"
            time.sleep(0.1)
        time.sleep(1.0)  # into the benchmark
        server.kill()
        _, stderr = cli.communicate(timeout=60)
    finally:
        stop_sshd(server)
    assert cli.returncode == 2, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    where = f"{ssh_keys.user}@127.0.0.1:{server.port}"
    assert last.startswith(f"edgeprune: error: lost the ssh connection to {where}"), stderr
    assert "fix: check that the device is powered" in last


def test_an_unreachable_port_is_one_line_naming_host_and_port(sshd, tiny_onnx, tmp_path):
    closed = free_port()
    target = sshd.profile(tmp_path / "loopback.yaml")
    result = run_cli(
        "profile",
        "--target",
        target,
        "--port",
        closed,
        "--model",
        "cifar:resnet20",
        "--artifact",
        tiny_onnx,
        "--runs",
        "30",
    )
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    where = f"{sshd.keys.user}@127.0.0.1:{closed}"
    assert lines[-1].startswith(f"edgeprune: error: cannot reach {where}: connection refused")


needs_ssh = pytest.mark.skipif(
    shutil.which("ssh") is None, reason="needs the OpenSSH client: apt-get install openssh-client"
)


@needs_ssh
@pytest.mark.parametrize("host", ["x;touch {marker}", "$(touch {marker})", "`touch {marker}`"])
def test_the_ssh_command_a_user_is_told_to_paste_runs_no_injected_command(host, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(DeviceError) as caught:  # ssh refuses the name itself; the fix names the command to try
        AgentSession(SshTransport(Connection(kind="ssh", host=host.format(marker=marker))))
    pasted = re.search(r"`(ssh .*)` works$", str(caught.value)).group(1)
    subprocess.run(["bash", "-c", pasted], cwd=tmp_path, capture_output=True, timeout=30)
    assert not marker.exists(), pasted


@needs_ssh
def test_a_refused_connection_leaves_no_temp_folder():
    private = Path(tempfile.mkdtemp(prefix="ep15-", dir="/tmp"))  # short: ssh's control socket lives in it
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tempfile, "tempdir", str(private))
            with pytest.raises(DeviceError, match="connection refused"):
                AgentSession(SshTransport(Connection(kind="ssh", host="127.0.0.1", port=free_port())))
        assert not list(private.iterdir())
    finally:
        shutil.rmtree(private)


def test_paths_and_names_reach_the_device_literally(sshd, tiny_onnx, tmp_path):
    marker = f"edgeprune-pwned-{uuid.uuid4().hex[:8]}"
    hostile = f"m o $(touch {marker}) `touch {marker}`;touch {marker}.onnx"
    model = tmp_path / hostile
    model.write_bytes(tiny_onnx.read_bytes())
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    transport = SshTransport(_connection(sshd))
    with AgentSession(transport) as agent:
        remote = transport.put(model)
        assert remote.endswith("/" + hostile) and " " in remote  # the device cache dir has a space too
        (tmp_path / "back").mkdir()
        assert transport.fetch(remote, tmp_path / "back").read_bytes() == model.read_bytes()
        outputs = agent.run(model, "onnxruntime", {"input": x}, threads=1)
    with AgentSession(LocalTransport()) as agent:
        expected = agent.run(tiny_onnx, "onnxruntime", {"input": x}, threads=1)
    assert np.array_equal(outputs["output"], expected["output"])
    # a hostile interpreter name is looked up, not run
    with pytest.raises(DeviceError, match=r"no python3 \$\(touch"):
        AgentSession(SshTransport(_connection(sshd, python=f"python3 $(touch {marker})")))
    assert not list(Path.home().glob(f"{marker}*")) and not list(Path("/tmp").glob(f"{marker}*"))
    assert not list(sshd.cache.rglob(f"*{marker}*"))  # session directories are removed at close


def test_a_host_alias_from_the_ssh_config_is_enough(sshd, tmp_path):
    config = tmp_path / "alias_config"
    config.write_text(
        f"Host lab-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.keys.user}\n"
        f"  IdentityFile {sshd.keys.client_key}\n  IdentitiesOnly yes\n" + sshd.config.read_text()
    )
    transport = SshTransport(Connection(kind="ssh", host="lab-box", python=sys.executable, ssh_config=str(config)))
    with AgentSession(transport) as agent:
        assert agent.info("lab-box", "onnxruntime").runtime == "onnxruntime"
    assert transport.label == "ssh lab-box"


def test_the_session_closes_its_master_connection(sshd):
    transport = SshTransport(_connection(sshd))
    with AgentSession(transport):
        control = transport._control_dir
        assert (control / "c").exists()
    assert not control.exists()
    assert not [pid for pid in _all_pids() if str(control) in _cmdline(pid)]  # no ssh master left behind


def test_a_missing_python_names_the_device_and_the_fix(sshd):
    where = rf"{sshd.keys.user}@127\.0\.0\.1:{sshd.port}"
    with pytest.raises(DeviceError, match=rf"no /nonexistent/python3 on {where}; fix: install Python"):
        AgentSession(SshTransport(_connection(sshd, python="/nonexistent/python3")))


def test_an_unaccepted_key_is_an_auth_error_without_the_key(sshd, tmp_path):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(DeviceError) as caught:
        AgentSession(SshTransport(_connection(sshd, key=str(stranger))))
    message = str(caught.value)
    assert "login to" in message and "was refused" in message and "ssh-copy-id" in message
    assert not [line for line in stranger.read_text().splitlines()[1:-1] if line in message]


def test_an_unknown_host_key_is_refused_not_bypassed(sshd, tmp_path):
    config = tmp_path / "strict_config"
    config.write_text(
        f"Host *\n  UserKnownHostsFile {tmp_path / 'empty_known_hosts'}\n"
        "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
    )
    with pytest.raises(DeviceError, match="host key of .* is unknown or has changed"):
        AgentSession(SshTransport(_connection(sshd, ssh_config=str(config))))


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
