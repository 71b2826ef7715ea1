import pytest

from edgeprune.devices.profiles import list_profiles, load_profile
from edgeprune.errors import ConfigError, UnknownName


def test_host_profile_is_shipped_and_valid():
    host = load_profile("host")
    assert (host.runtime, host.connection.kind, host.power.sensor, host.threads) == ("onnxruntime", "local", None, None)
    assert "host" in [p.name for p in list_profiles()]


def test_unknown_target_suggests_the_closest():
    with pytest.raises(UnknownName, match="did you mean 'host'"):
        load_profile("hots")


def _write(tmp_path, text):
    path = tmp_path / "dev.yaml"
    path.write_text(text)
    return str(path)


def test_user_profile_file_with_sourced_facts(tmp_path):
    profile = load_profile(_write(tmp_path, """
name: lab-box
description: a box
runtime: onnxruntime
threads: 4
connection: {kind: ssh, host: 10.0.0.5, user: pi}
power: {estimate_w: {value: 6.4, source: "vendor datasheet rev 2, table 3"}}
hardware:
  cpu: {value: Cortex-A76, source: "vendor product page"}
"""))
    assert profile.connection.host == "10.0.0.5" and profile.power.estimate_w.value == 6.4
    assert profile.hardware["cpu"].source == "vendor product page"


@pytest.mark.parametrize("text, message", [
    ("name: x\nruntime: onnxruntime\ncolour: red\n", "unknown keys \\['colour'\\]"),
    ("name: x\nruntime: onnxruntim\n", "did you mean 'onnxruntime'"),
    ("name: x\n", "lacks 'runtime'"),
    ("name: x\nruntime: onnxruntime\nhardware: {cpu: {value: A76}}\n", "hardware.cpu has no source"),
    ("name: x\nruntime: onnxruntime\nconnection: {kind: serial}\n", "connection kind 'serial'"),
    ("name: x\nruntime: onnxruntime\nthreads: 0\n", "threads must be a positive integer"),
    ("[unclosed", "not valid YAML"),
])
def test_malformed_profiles_are_named(tmp_path, text, message):
    with pytest.raises((ConfigError, UnknownName), match=message):
        load_profile(_write(tmp_path, text))
