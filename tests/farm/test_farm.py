"""The device farm with the real engine: each command starts a real local Ray cluster, and its devices are three
real OpenSSH servers on 127.0.0.1 (conftest.py). A loopback farm's devices share this machine's cores, so the
farm files here allow a wide reference spread (max_spread 1.0: a device twice as slow as the median; the other
test worker may load one device while it is timed); the refusal test narrows it on purpose."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprune.build.planning import batch_aims
from edgeprune.latency.lut import LutReport
from tests.farm.conftest import write_farm

pytest.importorskip("ray", reason="the farm tests need Ray: pip install 'edgeprune[farm]'")
DEVICES = ("dev0", "dev1", "dev2")


def _profile(farm: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgeprune.cli", "profile", "--model", "cifar:resnet20", "--runs", "30", "--lut",
            "--lut-variants", "2", "--lut-calibration", "0", "--step", "16", "--cache", str(cache), "--out", str(out),
            "--json", *(("--farm", str(farm)) if farm else ()), *extra]  # fmt: skip


def _cached(cache: Path) -> list[dict]:
    return [json.loads(line)["entry"] for f in cache.glob("*.jsonl") for line in f.read_text().splitlines() if line]


def _agents(root: Path, *, device_side: bool = False) -> list[str]:
    """Command lines still running that run an agent of this test's devices: the agents themselves (a Python on
    the device) and, unless `device_side`, the host's ssh clients that started them."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            command = b" ".join(argv).decode()
        except (OSError, ValueError):
            continue
        if "agent.py" in command and str(root) in command:
            if not device_side or Path(argv[0].decode()).name.startswith("python"):
                found.append(command)
    return found


def _no_agents_left(root: Path, within_s: float = 15) -> list[str]:
    deadline = time.monotonic() + within_s
    while _agents(root) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _agents(root)


def test_the_farm_table_holds_the_single_device_cells_each_with_its_device(three_devices, tmp_path):
    farm = write_farm(tmp_path / "farm.yaml", three_devices, max_spread=1.0)
    done = subprocess.run(_profile(farm, tmp_path / "cache", tmp_path / "out"), capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "WARNING" not in done.stderr, done.stderr  # no Ray start-up text
    report = LutReport.from_dict(json.loads(done.stdout))
    single_target = three_devices[0].profile(tmp_path / "single.yaml")
    alone = subprocess.run(_profile(None, tmp_path / "cache1", tmp_path / "out1", "--target", str(single_target),
                                    "--threads", "1"), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    single = LutReport.from_dict(json.loads(alone.stdout))

    assert {e.key for e in report.entries} == {e.key for e in single.entries}
    assert {e.device for e in report.entries} <= set(DEVICES) and len({e.device for e in report.entries}) >= 2
    farm_report = report.farm
    scales = {d.device: d.scale for d in farm_report.devices}
    assert all(e.device_scale == round(scales[e.device], 6) for e in report.entries)
    assert sum(farm_report.cells_by_device.values()) == 2 * len(report.entries)  # two passes each, spread
    assert farm_report.used == DEVICES and not farm_report.lost and farm_report.reference_models == ("unpruned",)
    assert farm_report.spread == max(scales.values()) / min(scales.values()) - 1
    assert 0 <= farm_report.ray_share < 0.5 and farm_report.ray_start_seconds > 0
    assert {v.device for v in report.variants} <= set(DEVICES)
    lines = _cached(tmp_path / "cache")  # every cached line says which device timed it
    assert len(lines) == 2 * len(report.entries) and {line["device"] for line in lines} <= set(DEVICES)
    assert report.mape_percent is not None and report.calibration.n == 1
    assert not _no_agents_left(tmp_path)


def test_a_device_lost_mid_table_hands_its_cells_over_and_a_rerun_resumes(three_devices, tmp_path):
    farm = write_farm(tmp_path / "farm.yaml", three_devices, max_spread=1.0)
    cache = tmp_path / "cache"
    cli = subprocess.Popen(_profile(farm, cache, tmp_path / "out"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(_cached(cache)) < 10:  # the cells are being measured on every device
        assert cli.poll() is None and time.monotonic() < deadline, cli.communicate()[1]
        time.sleep(0.05)
    three_devices[1].kill()  # dev1 loses power
    stdout, stderr = cli.communicate(timeout=600)
    assert cli.returncode == 0, stderr
    report = LutReport.from_dict(json.loads(stdout))
    assert set(report.farm.lost) == {"dev1"} and f"127.0.0.1:{three_devices[1].port}" in report.farm.lost["dev1"]
    assert "device dev1 lost" in stderr and "Traceback" not in stderr
    assert all(e.passes == 2 for e in report.entries)
    by_device = report.farm.cells_by_device
    assert by_device.get("dev1", 0) < min(by_device["dev0"], by_device["dev2"])
    assert {v.device for v in report.variants} <= {"dev0", "dev2"}

    rerun = subprocess.run(_profile(farm, cache, tmp_path / "out2"), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    again = LutReport.from_dict(json.loads(rerun.stdout))
    assert again.measured_now == 0 and again.remeasured_now == 0 and again.from_cache == len(report.entries)
    refused = {d.device: d.refused for d in again.farm.devices if d.refused}
    assert set(refused) == {"dev1"} and refused["dev1"].startswith("unreachable")
    assert "device dev1 not used" in rerun.stderr
    assert not _no_agents_left(tmp_path)


def test_ctrl_c_stops_the_whole_farm_and_leaves_no_agent_on_any_device(three_devices, tmp_path):
    farm = write_farm(tmp_path / "farm.yaml", three_devices, max_spread=1.0)
    cache = tmp_path / "cache"
    cli = subprocess.Popen(_profile(farm, cache, tmp_path / "out"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(_cached(cache)) < 5:
        assert cli.poll() is None and time.monotonic() < deadline, cli.communicate()[1]
        time.sleep(0.05)
    assert len(_agents(tmp_path, device_side=True)) == 3
    os.killpg(cli.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, stderr = cli.communicate(timeout=120)
    assert cli.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("edgeprune: interrupted") and "Traceback" not in stderr
    assert not _no_agents_left(tmp_path)
    kept = _cached(cache)
    assert len(kept) >= 5 and all(line["device"] in DEVICES for line in kept)  # nothing measured was lost


def test_a_device_outside_the_spread_is_refused_saying_by_how_much(three_devices, tmp_path):
    farm = write_farm(tmp_path / "farm.yaml", three_devices, max_spread=1e-9)  # only the median device is within
    done = subprocess.run(_profile(farm, tmp_path / "cache", tmp_path / "out", "--step", "32"), capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = LutReport.from_dict(json.loads(done.stdout))
    refused = {d.device: d.refused for d in report.farm.devices if d.refused}
    assert len(refused) == 2 and len(report.farm.used) == 1
    for device, why in refused.items():
        assert "of the farm's median" in why and "max_spread" in why and f"device {device} refused" in done.stderr
    assert {e.device for e in report.entries} == set(report.farm.used)


def test_build_on_the_farm_runs_end_to_end(three_devices, tmp_path):
    farm = write_farm(tmp_path / "farm.yaml", three_devices, max_spread=1.0)
    out = tmp_path / "build"
    done = subprocess.run([sys.executable, "-m", "edgeprune.cli", "build", "--model", "cifar:resnet20", "--farm",
                           str(farm), "--speedup", "1.3", "--step", "16", "--lut-variants", "1", "--lut-calibration",
                           "0", "--baselines", "uniform,flops", "--finetune-epochs", "0", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=1200, env={**os.environ,
                          "EDGEPRUNE_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert done.returncode in (0, 3), done.stderr
    report = json.loads(done.stdout)
    assert report["target"]["name"] == "loopback-board" and report["options"]["target"] == "loopback-board"
    rounds = report["plan"]["rounds"]
    assert len(rounds) >= 3  # the first batch: one round per device, measured at once
    aims = [r["target_predicted_ms"] for r in rounds[:3]]
    assert aims == pytest.approx(batch_aims(aims[0], 3))  # aimed at, under and over the table's target
    ports = {str(s.port) for s in three_devices}
    methods = {r["name"]: r["latency"]["method"] for r in report["results"]}
    assert set(methods) == {"unpruned", "plan", "uniform", "flops"}
    used = {port for port in ports for method in methods.values() if f"127.0.0.1:{port}" in method}
    assert len(used) >= 2  # the verify stage's comparisons ran on several devices
    lut = json.loads((out / "lut.json").read_text())
    assert set(lut["farm"]["cells_by_device"]) <= set(DEVICES)
    assert (out / "report.html").is_file() and not _no_agents_left(tmp_path)


def test_a_tensorrt_export_on_the_farm_is_built_on_a_device(three_devices, tmp_path):
    """No device here has TensorRT: the engine build reaches a device's agent, which says so in one line."""
    farm = write_farm(tmp_path / "farm.yaml", three_devices[:1])
    done = subprocess.run([sys.executable, "-m", "edgeprune.cli", "export", "--model", "cifar:resnet20", "--format",
                           "tensorrt", "--farm", str(farm), "--out", str(tmp_path / "engine")], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("edgeprune: error:") and "TensorRT" in last, done.stderr
    assert not (tmp_path / "engine" / "artifact.json").exists() and not _no_agents_left(tmp_path)
