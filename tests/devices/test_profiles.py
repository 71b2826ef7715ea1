import dataclasses
import re

import pytest

from edgeprune.devices.profiles import list_profiles, load_profile, profile_paths
from edgeprune.errors import ConfigError, UnknownName
from edgeprune.runtimes import runtime_names
from edgeprune.types import Connection, Fact, TargetProfile
from tests.conftest import run_cli

SHIPPED = {
    # name: (runtime, precision, connection kind, power sensor)
    "host": ("onnxruntime", "fp32", "local", None),
    "jetson-nano": ("tensorrt", "fp16", "ssh", "ina3221"),
    "jetson-xavier-nx": ("tensorrt", "fp16", "ssh", "ina3221"),
    "jetson-orin-nano": ("tensorrt", "fp16", "ssh", "ina3221"),
    "jetson-agx-orin": ("tensorrt", "fp16", "ssh", "ina3221"),
    "raspberry-pi-4": ("tflite", "fp32", "ssh", None),
    "raspberry-pi-5": ("tflite", "fp32", "ssh", "pmic_read_adc"),
    "android": ("tflite", "fp32", "adb", "odpm"),
}


def _facts(profile: TargetProfile) -> dict[str, Fact]:
    facts = {f"hardware.{k}": v for k, v in profile.hardware.items()}
    if profile.power.estimate_w is not None:
        facts["power.estimate_w"] = profile.power.estimate_w
    if profile.channel_step is not None:
        facts["channel_step"] = profile.channel_step
    return facts


def test_host_profile_is_shipped_and_valid():
    host = load_profile("host")
    assert (host.runtime, host.connection.kind, host.power.sensor, host.threads) == ("onnxruntime", "local", None, None)
    assert "host" in [p.name for p in list_profiles()]


def test_the_eight_shipped_profiles_load_with_their_runtime_connection_and_sensor():
    profiles = {p.name: p for p in list_profiles()}
    assert set(SHIPPED) <= set(profiles)
    for name, expected in SHIPPED.items():
        p = profiles[name]
        assert (p.runtime, p.precision, p.connection.kind, p.power.sensor) == expected, name
        assert p.description, name
        # Device addresses come from flags/env/~/.ssh/config, never from a shipped profile.
        assert (p.connection.host, p.connection.user, p.connection.serial) == (None, None, None), name


@pytest.mark.parametrize("stem", sorted(profile_paths()))
def test_shipped_profile_names_match_their_files(stem):
    assert load_profile(str(profile_paths()[stem])).name == stem


@pytest.mark.parametrize("name", sorted(profile_paths()))  # every shipped profile, a new one too
def test_every_fact_and_every_command_has_a_source(name):
    profile = load_profile(name)
    for where, fact in _facts(profile).items():
        assert fact.source.strip(), f"{name}: {where}"
        assert "http" in fact.source or "github.com" in fact.source, f"{name}: {where} cites no document"
    if profile.setup.pin_clocks or profile.setup.restore:
        assert profile.setup.source.strip(), name
    if profile.throttle.command or profile.throttle.temperature:
        assert profile.throttle.source.strip(), name
    assert profile.fingerprint and TargetProfile.from_json(profile.to_json()) == profile


def test_devices_without_a_sensor_say_so_and_estimate_only_from_a_sourced_figure():
    pi4 = load_profile("raspberry-pi-4")
    assert pi4.power.sensor is None and pi4.power.estimate_w.value > 0
    assert "raspberrypi.com" in pi4.power.estimate_w.source
    assert load_profile("host").power.estimate_w is None


@pytest.mark.parametrize("name", ["jetson-nano", "jetson-xavier-nx", "jetson-orin-nano", "jetson-agx-orin"])
def test_jetson_pins_a_power_mode_its_sourced_mode_table_declares(name):
    profile = load_profile(name)
    commands = " ; ".join(profile.setup.pin_clocks)
    mode = re.search(r"nvpmodel -m (\d+)", commands).group(1)
    assert "jetson_clocks" in commands
    assert re.search(rf"(^|[ ,]){mode}[ :]", profile.hardware["power_modes"].value), profile.hardware[
        "power_modes"
    ].value
    assert profile.runtime == "tensorrt" and "tensorrt" in profile.hardware


def test_channel_step_only_where_tensor_cores_make_it_apply():
    assert load_profile("jetson-nano").channel_step is None  # Maxwell: no Tensor Cores
    for name in ("jetson-xavier-nx", "jetson-orin-nano", "jetson-agx-orin"):
        step = load_profile(name).channel_step
        assert step.value == 8 and "docs.nvidia.com/deeplearning/performance" in step.source


def test_raspberry_pi_pins_the_governor_and_reads_throttling():
    for name in ("raspberry-pi-4", "raspberry-pi-5"):
        p = load_profile(name)
        assert any("scaling_governor" in c and "performance" in c for c in p.setup.pin_clocks)
        assert p.setup.restore and p.throttle.command == "vcgencmd get_throttled"


def test_unknown_target_suggests_the_closest():
    with pytest.raises(UnknownName, match="did you mean 'host'"):
        load_profile("hots")


def _write(tmp_path, text):
    path = tmp_path / "dev.yaml"
    path.write_text(text)
    return str(path)


def test_user_profile_file_with_sourced_facts(tmp_path):
    profile = load_profile(
        _write(
            tmp_path,
            """
name: lab-box
description: a box
runtime: onnxruntime
threads: 4
connection: {kind: ssh, host: 10.0.0.5, user: pi}
power: {estimate_w: {value: 6.4, source: "vendor datasheet rev 2, table 3"}}
hardware:
  cpu: {value: Cortex-A76, source: "vendor product page"}
setup:
  pin_clocks: ["echo performance | sudo tee /sys/devices/system/cpu/cpufreq/policy*/scaling_governor"]
  source: kernel cpufreq docs
throttle: {command: vcgencmd get_throttled, source: vendor docs}
channel_step: {value: 16, source: "vendor tuning guide"}
""",
        )
    )
    assert profile.connection.host == "10.0.0.5" and profile.power.estimate_w.value == 6.4
    assert profile.hardware["cpu"].source == "vendor product page"
    assert profile.setup.pin_clocks[0].startswith("echo performance") and profile.throttle.temperature is None
    assert profile.channel_step == Fact(value=16, source="vendor tuning guide")


@pytest.mark.parametrize("runtime", runtime_names())
def test_a_profile_may_name_every_runtime(tmp_path, runtime):
    assert load_profile(_write(tmp_path, f"name: x\nruntime: {runtime}\n")).runtime == runtime


def test_connection_accepts_exactly_the_fields_connection_declares(tmp_path):
    fields = {f.name for f in dataclasses.fields(Connection)} - {"kind"}
    values = {name: ("1" if name != "port" else 22) for name in fields}
    text = "name: x\nruntime: onnxruntime\nconnection:\n  kind: ssh\n" + "".join(
        f"  {k}: {v!r}\n" for k, v in values.items()
    )
    connection = load_profile(_write(tmp_path, text)).connection
    assert all(getattr(connection, k) == v for k, v in values.items())


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nruntime: onnxruntime\ncolour: red\n", "unknown keys \\['colour'\\]"),
        ("name: x\nruntime: onnxruntim\n", "did you mean 'onnxruntime'"),
        ("name: x\nruntime: tensorrtt\n", "did you mean 'tensorrt'"),
        ("name: x\nruntime: coreml\n", "unknown runtime in dev.yaml 'coreml'"),
        ("name: x\n", "lacks 'runtime'"),
        ("name: x\nruntime: onnxruntime\nprecision: fp8\n", "unknown precision"),
        ("name: x\nruntime: onnxruntime\nhardware: {cpu: {value: A76}}\n", "hardware.cpu has no source"),
        ("name: x\nruntime: onnxruntime\nhardware: {cpu: {value: A76, source: ''}}\n", "hardware.cpu has no source"),
        ("name: x\nruntime: onnxruntime\nhardware: {cpu: A76}\n", "hardware.cpu has no source"),
        (
            "name: x\nruntime: onnxruntime\nhardware: {cpu: {value: A76, source: s, note: n}}\n",
            "unexpected keys \\['note'\\]",
        ),
        ("name: x\nruntime: onnxruntime\nconnection: {kind: serial}\n", "connection kind 'serial'"),
        (
            "name: x\nruntime: onnxruntime\nconnection: {kind: ssh, colour: red}\n",
            "'connection' has unexpected content \\['colour'\\]",
        ),
        ("name: x\nruntime: onnxruntime\npower: {sensor: multimeter}\n", "unknown power sensor"),
        ("name: x\nruntime: onnxruntime\npower: {estimate_w: {value: -3, source: s}}\n", "positive number of watts"),
        (
            "name: x\nruntime: onnxruntime\nsetup: {pin_clocks: [sudo jetson_clocks]}\n",
            "setup has commands but no source",
        ),
        (
            "name: x\nruntime: onnxruntime\nsetup: {pin_clocks: sudo jetson_clocks, source: s}\n",
            "must be a list of shell commands",
        ),
        ("name: x\nruntime: onnxruntime\nsetup: {pin: [a], source: s}\n", "'setup' has unexpected content \\['pin'\\]"),
        (
            "name: x\nruntime: onnxruntime\nthrottle: {command: vcgencmd get_throttled}\n",
            "throttle has a check but no source",
        ),
        ("name: x\nruntime: onnxruntime\nchannel_step: {value: 8}\n", "channel_step has no source"),
        (
            "name: x\nruntime: onnxruntime\nchannel_step: {value: 0.5, source: s}\n",
            "channel_step must be a positive integer",
        ),
        ("name: x\nruntime: onnxruntime\nthreads: 0\n", "threads must be a positive integer"),
        ("[unclosed", "not valid YAML"),
    ],
)
def test_malformed_profiles_are_named_in_one_line(tmp_path, text, message):
    with pytest.raises((ConfigError, UnknownName), match=message) as err:
        load_profile(_write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_targets_command_lists_every_profile_with_runtime_connection_and_sensor():
    result = run_cli("targets")
    assert result.code == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    for name, (runtime, precision, kind, sensor) in SHIPPED.items():
        row = rows[name]
        shown_sensor = sensor or ("estimate" if name == "raspberry-pi-4" else "none")
        assert row[1:5] == [runtime, precision, kind, shown_sensor], row


def test_targets_json_round_trips_the_profiles():
    result = run_cli("targets", "--json")
    assert result.code == 0, result.stderr
    listed = {d["name"]: TargetProfile.from_dict(d) for d in result.json()}
    assert set(SHIPPED) <= set(listed)
    assert listed["jetson-orin-nano"] == load_profile("jetson-orin-nano")
    assert listed["raspberry-pi-5"].throttle.command == "vcgencmd get_throttled"


def test_power_accepts_exactly_the_fields_powerspec_declares(tmp_path):
    from edgeprune.types import PowerSpec

    fields = {f.name for f in dataclasses.fields(PowerSpec)}
    text = "name: x\nruntime: onnxruntime\npower:\n  sensor: ina3221\n"
    if "rails" in fields:
        text += "  rails: [VDD_IN]\n"
    power = load_profile(_write(tmp_path, text)).power
    assert power.sensor == "ina3221" and getattr(power, "rails", ("VDD_IN",)) == ("VDD_IN",)
    with pytest.raises(ConfigError, match="'power' has unexpected content \\['colour'\\]"):
        load_profile(_write(tmp_path, "name: x\nruntime: onnxruntime\npower: {colour: red}\n"))
