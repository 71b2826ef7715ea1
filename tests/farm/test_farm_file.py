"""The farm file and the farm flags: every mistake is one line naming it, before a device or Ray is started."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from edgeprune.errors import ConfigError, EdgepruneError
from edgeprune.farm.spec import DEFAULT_MAX_SPREAD, load_farm
from tests.conftest import run_cli

SSH = {"kind": "ssh", "host": "10.0.0.11", "user": "pi"}


def _write(tmp_path, data) -> str:
    path = tmp_path / "farm.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def _farm(**changes) -> dict:
    return {"target": "raspberry-pi-4", "devices": [{"name": "pi-a", "connection": SSH},
            {"name": "pi-b", "connection": {**SSH, "host": "10.0.0.12"}, "node": "10.0.0.2"}], **changes}  # fmt: skip


def test_a_farm_file_reads_into_its_target_and_devices(tmp_path):
    farm = load_farm(_write(tmp_path, _farm()))
    assert farm.name == "farm" and farm.target.name == "raspberry-pi-4" and farm.max_spread == DEFAULT_MAX_SPREAD
    assert [d.name for d in farm.devices] == ["pi-a", "pi-b"] and farm.devices[1].node == "10.0.0.2"
    first = farm.first_target()  # the profile's runtime and power, the first device's connection
    assert first.runtime == farm.target.runtime and first.connection.host == "10.0.0.11"
    assert farm.device_target(farm.devices[1]).connection.host == "10.0.0.12"


def test_a_relative_target_file_is_read_beside_the_farm_file(tmp_path):
    (tmp_path / "board.yaml").write_text(yaml.safe_dump({"name": "board", "description": "", "runtime": "onnxruntime"}))
    assert load_farm(_write(tmp_path, _farm(target="board.yaml"))).target.name == "board"


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ("devices: [", "not valid YAML"),
        ("- a list", "is not a mapping"),
        (_farm(extra=1), "unknown keys ['extra']"),
        ({"devices": _farm()["devices"]}, "names no target"),
        (_farm(target="no-such-board"), "no-such-board"),
        (_farm(devices=[]), "lists no devices"),
        (_farm(devices=["pi-a"]), "device 1 is not a mapping"),
        (_farm(devices=[{"name": "pi a", "connection": SSH}]), "name 'pi a'"),
        (_farm(devices=[{"name": "pi-a", "connection": SSH, "gpu": 1}]), "unknown keys ['gpu']"),
        (_farm(devices=[{"name": "pi-a"}]), "has no ssh or adb connection"),
        (
            _farm(devices=[{"name": "pi-a", "connection": SSH}, {"name": "pi-a", "connection": {**SSH, "port": 2}}]),
            "names device 'pi-a' twice",
        ),
        (
            _farm(devices=[{"name": "pi-a", "connection": SSH}, {"name": "pi-b", "connection": {**SSH, "port": 22}}]),
            "are the same device",
        ),
        (_farm(devices=[{"name": "pi-a", "connection": {**SSH, "host": "-oProxyCommand=x"}}]), "not a host name"),
        (_farm(devices=[{"name": "pi-a", "connection": SSH, "node": ""}]), "node ''"),
        (_farm(max_spread=0), "max_spread 0"),
        (_farm(max_spread="5 %"), "max_spread '5 %'"),
    ],
)
def test_a_bad_farm_file_is_one_line_naming_the_mistake(tmp_path, data, said):
    with pytest.raises(EdgepruneError) as raised:
        load_farm(_write(tmp_path, data))
    assert said in raised.value.message and "\n" not in raised.value.message


def test_a_missing_farm_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="farm file not found"):
        load_farm(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("profile", "--ray", "auto"), "--ray applies to a farm"),
        (("profile", "--lut", "--farm", "{farm}", "--host", "10.0.0.9"), "do not apply with --farm"),
        (("profile", "--lut", "--farm", "{farm}", "--target", "jetson-nano"), "is not farm farm's target"),
        (("profile", "--farm", "{farm}"), "--farm spreads the latency table"),
        (("export", "--format", "onnx", "--farm", "{farm}"), "--farm builds TensorRT engines"),
        (("build", "--speedup", "2", "--farm", "{missing}"), "farm file not found"),
    ],
)
def test_farm_flags_that_do_not_fit_are_one_line(tmp_path, args, said):
    farm = _write(tmp_path, _farm())
    args = [a.format(farm=farm, missing=tmp_path / "missing.yaml") for a in args]
    result = run_cli(args[0], "--model", "cifar:resnet20", *args[1:], "--out", str(tmp_path / "out"))
    assert result.code == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_without_ray_a_farm_says_how_to_install_it(tmp_path):
    farm = _write(tmp_path, _farm())
    code = ("import sys; sys.modules['ray'] = None; from edgeprune.cli import main; "
            f"sys.argv = ['edgeprune', 'profile', '--model', 'cifar:resnet20', '--lut', '--farm', {farm!r}, "
            f"'--out', {str(tmp_path / 'out')!r}]; main()")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert 'pip install "edgeprune[farm]"' in done.stderr.strip().splitlines()[-1] and "Traceback" not in done.stderr
