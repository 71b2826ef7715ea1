"""Where a device is: the profile's connection, EDGEPRUNE_* variables over it, command-line flags over both."""

import pytest

from edgeprune.devices.adb import AdbTransport
from edgeprune.devices.ssh import SshTransport
from edgeprune.devices.transport import LocalTransport, resolve_connection, transport_for, with_connection
from edgeprune.errors import ConfigError
from edgeprune.types import Connection, TargetProfile
from tests.conftest import run_cli


def _profile(**connection) -> TargetProfile:
    return TargetProfile(name="pi", description="", runtime="onnxruntime", connection=Connection(**connection))


PI = _profile(kind="ssh", host="10.0.0.5", user="pi", port=22)


def test_flags_override_the_environment_which_overrides_the_profile():
    environ = {"EDGEPRUNE_HOST": "10.0.0.9", "EDGEPRUNE_PORT": "2222", "EDGEPRUNE_REMOTE_PYTHON": "/opt/py/bin/python3"}
    assert resolve_connection(PI, environ={}) == PI.connection
    from_env = resolve_connection(PI, {"host": None, "user": None}, environ=environ)
    assert (from_env.host, from_env.user, from_env.port) == ("10.0.0.9", "pi", 2222)
    assert from_env.python == "/opt/py/bin/python3"
    from_flags = resolve_connection(PI, {"host": "pi5.lan", "port": 2200}, environ=environ)
    assert (from_flags.host, from_flags.port) == ("pi5.lan", 2200)


def test_a_flag_for_another_kind_of_connection_is_an_error_and_a_variable_is_not():
    host = _profile(kind="local")
    with pytest.raises(ConfigError, match="--host does not apply to target pi, which connects over local"):
        resolve_connection(host, {"host": "10.0.0.9"}, environ={})
    assert resolve_connection(host, environ={"EDGEPRUNE_HOST": "10.0.0.9"}) == Connection(kind="local")
    with pytest.raises(ConfigError, match="--serial does not apply .* over ssh; fix: use --host/--user/--port"):
        resolve_connection(PI, {"serial": "R58M"}, environ={})
    phone = _profile(kind="adb")
    assert resolve_connection(phone, {"serial": "R58M"}, environ={"EDGEPRUNE_SERIAL": "other"}).serial == "R58M"
    assert resolve_connection(phone, environ={"EDGEPRUNE_SERIAL": "emulator-5554"}).serial == "emulator-5554"


@pytest.mark.parametrize(
    "profile, overrides, environ, message",
    [
        (PI, None, {"EDGEPRUNE_PORT": "ssh"}, "EDGEPRUNE_PORT 'ssh' is not a port"),
        (PI, {"port": 70000}, {}, "--port 70000 is not a port"),
        (_profile(kind="ssh"), None, {}, "names no host; fix: pass --host"),
        (
            PI,
            {"host": "-oProxyCommand=touch /tmp/x"},
            {},
            "ssh host '-oProxyCommand=touch /tmp/x' .* is not a host name",
        ),
        (PI, {"user": "pi; rm -rf ~"}, {}, "is not a user name"),
    ],
)
def test_bad_connections_are_config_errors(profile, overrides, environ, message):
    with pytest.raises(ConfigError, match=message):
        resolve_connection(profile, overrides, environ=environ)


def test_transport_for_each_kind(monkeypatch):
    monkeypatch.delenv("EDGEPRUNE_HOST", raising=False)
    assert isinstance(transport_for(_profile(kind="local")), LocalTransport)
    ssh = transport_for(with_connection(PI, {"user": "root"}))
    assert isinstance(ssh, SshTransport) and ssh.label == "ssh root@10.0.0.5:22"
    assert isinstance(transport_for(_profile(kind="adb", serial="R58M")), AdbTransport)
    with pytest.raises(ConfigError, match="ssh config file not found"):
        transport_for(_profile(kind="ssh", host="pi", ssh_config="/nonexistent/config"))


def test_cli_connection_flags_are_checked_before_any_work():
    result = run_cli(
        "verify", "--model", "cifar:resnet20", "--data", "/nonexistent", "--target", "host", "--serial", "R58M"
    )
    assert result.code == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "edgeprune: error: --serial does not apply to target host, which connects over local; "
        "fix: connection flags apply to ssh and adb targets; pick one with --target"
    )
