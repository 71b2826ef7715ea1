"""The real agent (targets/agent.py, in a subprocess) sampling power sensors end to end.

This machine has no power sensor (no /sys/class/powercap, no INA3221, no vcgencmd), so the sensors read a
directory laid out like sysfs (EDGEPRUNE_SYSFS_ROOT, the agent's own switch for this) or run stand-in tools on PATH
that print published output. The agent's code path is the one a device runs: discovery, the sampler thread, the
idle and timed windows, the raw samples; the host parses and integrates them.
"""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgeprune._resources import resource_dir
from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.energy import energy_for
from edgeprune.devices.sensors import parse_get_throttled
from edgeprune.devices.transport import LocalTransport
from edgeprune.types import PowerSpec, TargetProfile
from tests.devices.test_sensors import ORIN_NANO_JP6, PMIC


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)  # a reader sees the old or the new value, never half a write


def _target(sensor, rails=()):
    return TargetProfile(name="dev", description="", runtime="onnxruntime", power=PowerSpec(sensor=sensor, rails=rails))


def _bench(tiny_onnx, sensor, runs=300, interval_ms=20.0, idle_s=0.5):
    with AgentSession(LocalTransport()) as agent:
        result = agent.bench(
            tiny_onnx,
            "onnxruntime",
            threads=1,
            warmup=5,
            runs=runs,
            power={"sensor": sensor, "interval_ms": interval_ms, "idle_s": idle_s},
        )
    figure = energy_for(
        _target(sensor),
        float(np.median(result.timings_ms)),
        result.batch,
        power=result.power,
        runs=len(result.timings_ms),
    )
    return result, figure


def _rapl_zone(root: Path, max_uj: int) -> Path:
    """A powercap package zone, less its energy_uj counter, beside a core subzone (which must not be summed)."""
    zone = root / "sys/class/powercap/intel-rapl:0"
    _write(zone / "name", "package-0")
    _write(zone / "max_energy_range_uj", str(max_uj))
    _write(root / "sys/class/powercap/intel-rapl:0:0/name", "core")
    return zone


class RaplWriter:
    """A powercap tree whose package counter advances at `watts`, wrapping at 1 J (5 wraps a second at 5 W)."""

    def __init__(self, root: Path, watts: float, max_uj: int = 1_000_000):
        self.zone = _rapl_zone(root, max_uj)
        self.watts, self.max_uj, self.stop = watts, max_uj, threading.Event()
        self.t0 = time.perf_counter()  # CLOCK_MONOTONIC, the clock the agent stamps samples with
        self.tick()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def tick(self):
        energy_uj = int((time.perf_counter() - self.t0) * self.watts * 1e6)
        _write(self.zone / "energy_uj", str(energy_uj % self.max_uj))

    def run(self):
        while not self.stop.wait(0.002):
            self.tick()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


class RaplPipe:
    """A package zone whose energy_uj is a named pipe that answers each open with the next reading: the counter
    advances `step_uj` per read, so it wraps every few samples however fast or loaded the machine is (a counter
    advancing with wall time wraps inside the timed loop only if enough work fits in it). `served` is the true,
    unwrapped counter at every read, in order: the ground truth for what the host computes."""

    def __init__(self, root: Path, step_uj: int, max_uj: int):
        self.path = _rapl_zone(root, max_uj) / "energy_uj"
        self.step_uj, self.max_uj, self.served, self.stop = step_uj, max_uj, [], threading.Event()
        os.mkfifo(self.path)
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self):
        while True:
            pipe = os.open(self.path, os.O_WRONLY)  # blocks until a reader opens the pipe
            if self.stop.is_set():
                os.close(pipe)
                return
            fresh = self.path.with_name("energy_uj.next")  # the next open finds a new pipe, so this reader gets
            os.mkfifo(fresh)  # one reading and then end of file, however soon the next open comes
            os.replace(fresh, self.path)
            energy_uj = len(self.served) * self.step_uj
            self.served.append(energy_uj)
            try:
                os.write(pipe, b"%d\n" % (energy_uj % self.max_uj))
            except BrokenPipeError:  # the reader went away (the agent died): the test fails on its own
                pass
            os.close(pipe)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        wake = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # releases the server's blocking open
        self.thread.join(timeout=10)
        os.close(wake)


def test_rapl_counter_sampled_through_the_agent(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_SYSFS_ROOT", str(tmp_path))
    # 0.1 J a read (5 W at the 20 ms interval asked) on a 0.35 J range: a wrap every 3.5 reads.
    with RaplPipe(tmp_path, step_uj=100_000, max_uj=350_000) as counter:
        result, figure = _bench(tiny_onnx, "rapl")
    power, d = result.power, figure.detail
    assert power["meta"]["zones"] == [{"zone": "intel-rapl:0", "name": "package-0", "max_energy_range_uj": "350000"}]
    assert figure.energy == "measured" and d.rails == ("package-0",) and d.method == "difference of energy counters"
    assert d.n_samples_run >= 10 and d.n_samples_idle >= 10 and d.achieved_interval_ms == pytest.approx(20, rel=0.5)
    # The samples are the pipe's last reads (the first was the agent's check that the file is readable).
    times = np.array([t for t, _ in power["samples"]])
    true_uj = np.array(counter.served[-len(times) :], dtype=np.float64)
    assert power["errors"] == [] and [raw for _, raw in power["samples"]] == [[str(int(e) % 350_000)] for e in true_uj]
    (run0, run1), (idle0, idle1) = power["windows"]["run"], power["windows"]["idle"]
    in_run = true_uj[(times >= run0) & (times <= run1)] % 350_000
    assert np.sum(np.diff(in_run) < 0) >= 1, "the counter must have wrapped during the timed loop"

    def true_j(t0, t1):
        e0, e1 = np.interp([t0, t1], times, true_uj)
        return (e1 - e0) * 1e-6

    run_j = true_j(run0, run1)
    assert d.gross_mj == pytest.approx(run_j * 1000 / 300) and d.power_w == pytest.approx(run_j / d.run_s)
    assert d.idle_power_w == pytest.approx(true_j(idle0, idle1) / (idle1 - idle0))
    assert d.net_mj == pytest.approx((run_j - d.idle_power_w * d.run_s) * 1000 / 300)


def _hwmon(root: Path) -> None:
    """JetPack 5+ layout: /sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmonN with labelled channels."""
    folder = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    for n, label, mv, ma in ((1, "VDD_IN", 5000, 1200), (2, "VDD_CPU_GPU_CV", 5000, 300), (3, "NC", 0, 0)):
        _write(folder / f"in{n}_label", label)
        _write(folder / f"in{n}_input", str(mv))
        _write(folder / f"curr{n}_input", str(ma))
    _write(folder / "in7_label", "sum of shunt voltages")
    _write(folder / "in7_input", "120")


def test_ina3221_hwmon_jetpack5_layout(tiny_onnx, tmp_path, monkeypatch):
    _hwmon(tmp_path)
    monkeypatch.setenv("EDGEPRUNE_SYSFS_ROOT", str(tmp_path))
    result, figure = _bench(tiny_onnx, "ina3221", runs=100, idle_s=0.2)
    meta = result.power["meta"]
    assert meta["variant"] == "hwmon" and [r["rail"] for r in meta["rails"]] == ["VDD_IN", "VDD_CPU_GPU_CV"]
    assert figure.energy == "measured" and figure.detail.rails == ("VDD_IN",)
    assert figure.detail.power_w == pytest.approx(6.0) and figure.detail.net_mj == pytest.approx(0.0, abs=1e-9)


def test_ina3221_iio_jetpack4_layout(tiny_onnx, tmp_path, monkeypatch):
    folder = tmp_path / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for n, name, mw in ((0, "POM_5V_IN", 3161), (1, "POM_5V_GPU", 0), (2, "POM_5V_CPU", 1120)):
        _write(folder / f"rail_name_{n}", name)
        _write(folder / f"in_power{n}_input", str(mw))
    monkeypatch.setenv("EDGEPRUNE_SYSFS_ROOT", str(tmp_path))
    result, figure = _bench(tiny_onnx, "ina3221", runs=100, idle_s=0.2)
    assert result.power["meta"]["variant"] == "iio"
    assert figure.detail.rails == ("POM_5V_IN",) and figure.detail.power_w == pytest.approx(3.161)


def _tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_tegrastats_stream(tiny_onnx, tmp_path, monkeypatch):
    # A stand-in tegrastats that prints a published JetPack 6 Orin Nano line every --interval ms.
    _tool(
        tmp_path / "bin",
        "tegrastats",
        f'ms=$2\nwhile true; do echo "{ORIN_NANO_JP6}"; sleep $(echo "scale=3; $ms/1000" | bc 2>/dev/null || echo 0.02); done\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("EDGEPRUNE_SYSFS_ROOT", str(tmp_path))
    result, figure = _bench(tiny_onnx, "tegrastats", runs=300, interval_ms=20.0)
    assert result.power["kind"] == "stream" and "tegrastats --interval 20" in result.power["meta"]["command"]
    assert figure.energy == "measured", figure.note
    assert figure.detail.rails == ("VDD_IN",) and figure.detail.power_w == pytest.approx(12.479)


def test_pmic_read_adc_and_throttle_state(tiny_onnx, tmp_path, monkeypatch):
    # A stand-in vcgencmd answering with the published Pi 5 outputs (tests/devices/test_sensors.py cites them).
    _tool(
        tmp_path / "bin",
        "vcgencmd",
        f'case "$1" in\n pmic_read_adc) cat <<"EOF"\n{PMIC}EOF\n;;\n get_throttled) echo "throttled=0x50005";;\n'
        f' *) echo "error=2 error_msg=\\"Invalid arguments\\""; exit 2;;\nesac\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("EDGEPRUNE_SYSFS_ROOT", str(tmp_path))
    result, figure = _bench(tiny_onnx, "pmic_read_adc", runs=300, interval_ms=50.0, idle_s=0.3)
    assert figure.energy == "measured", figure.note
    assert len(figure.detail.rails) == 12 and figure.detail.power_w == pytest.approx(10.7999, abs=1e-3)
    assert "USB, HAT and other 5 V loads are not metered" in figure.detail.rail_rule
    with AgentSession(LocalTransport()) as agent:
        info = agent.info("pi", "onnxruntime")
    assert parse_get_throttled(info.throttling)[1][0] == "under-voltage detected"
    assert info.sensors["pmic_read_adc"] == {"available": True, "reason": None}


def test_unreadable_sensor_is_unavailable_with_the_reason(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_SYSFS_ROOT", str(tmp_path))  # an empty tree: no powercap zones
    result, figure = _bench(tiny_onnx, "rapl", runs=30, idle_s=0.0)
    assert result.power == {"sensor": "rapl", "available": False, "reason": result.power["reason"]}
    assert len(result.timings_ms) == 30  # the latency measurement goes on without the sensor
    assert figure.energy == "unavailable" and "no RAPL zones under /sys/class/powercap" in figure.note


class _AsNobody(LocalTransport):
    """The agent as an unprivileged user (uid 65534), as on a device where the agent is not run as root, started
    from `agent_dir`: a copy of targets/ it can read wherever the checkout lives (a clone under a 0700 folder), run
    by a system interpreter with copies of the packages its `info` imports (the venv may sit in that folder too)."""

    def __init__(self, agent_dir: Path, python: str, site: Path):
        super().__init__(python)
        self.agent_dir, self.site = agent_dir, site

    def start_agent(self, stderr_log):
        command = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "env",
            f"PYTHONPATH={self.site}",
            self.python,
            "-u",
            str(self.agent_dir / "agent.py"),
        ]
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(stderr_log, "wb"))


def _system_python_like_this_one() -> str | None:
    """A system python3 of this interpreter's minor version (the copied wheels are built for it), or None."""
    for folder in ("/usr/local/bin", "/usr/bin"):
        python = Path(folder) / f"python{sys.version_info.major}.{sys.version_info.minor}"
        if python.is_file() and os.access(python, os.X_OK):
            return str(python)
    return None


def _copy_packages(site: Path, *names: str) -> None:
    import numpy

    installed = Path(numpy.__file__).parents[1]
    for name in names:
        for path in installed.glob(name):
            shutil.copytree(path, site / path.name, ignore=shutil.ignore_patterns("__pycache__"))


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to drop to uid 65534"
)
def test_root_only_energy_counter_says_why(monkeypatch):
    # Since Linux 5.10 energy_uj is mode 0400 root (CVE-2020-8694); the agent must say so, not crash.
    python = _system_python_like_this_one()
    if python is None:
        pytest.skip(f"needs a system python{sys.version_info.major}.{sys.version_info.minor} that uid 65534 can run")
    root = Path(tempfile.mkdtemp(prefix="edgeprune-as-nobody-"))  # not tmp_path: pytest's basetemp is 0700
    try:
        shutil.copytree(resource_dir("targets"), root / "targets", ignore=shutil.ignore_patterns("__pycache__"))
        _copy_packages(root / "site", "numpy", "numpy.libs", "onnxruntime")
        zone = _rapl_zone(root / "sysfs", max_uj=262143328850)
        _write(zone / "energy_uj", "123456")
        for folder, _, files in os.walk(root):  # everything readable by uid 65534 but the counter
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o444)
        (zone / "energy_uj").chmod(0o400)
        monkeypatch.setenv("EDGEPRUNE_SYSFS_ROOT", str(root / "sysfs"))
        with AgentSession(_AsNobody(root / "targets", python, root / "site")) as agent:
            info = agent.info("dev", "onnxruntime")
    finally:
        shutil.rmtree(root)
    reason = info.sensors["rapl"]["reason"]
    assert info.sensors["rapl"]["available"] is False
    assert "Permission denied" in reason and "run the agent as root" in reason and "CVE-2020-8694" in reason


def test_info_reports_clocks_thermal_and_sensors(tmp_path, monkeypatch):
    policy = tmp_path / "sys/devices/system/cpu/cpufreq/policy0"
    for name, value in (
        ("affected_cpus", "0 1 2 3"),
        ("scaling_governor", "schedutil"),
        ("scaling_min_freq", "115200"),
        ("scaling_max_freq", "1510400"),
        ("scaling_cur_freq", "729600"),
    ):
        _write(policy / name, value)
    _write(tmp_path / "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
    _write(tmp_path / "sys/class/thermal/thermal_zone0/temp", "48500")
    _hwmon(tmp_path)
    monkeypatch.setenv("EDGEPRUNE_SYSFS_ROOT", str(tmp_path))
    with AgentSession(LocalTransport()) as agent:
        info = agent.info("dev", "onnxruntime")
    assert info.clocks == {
        "policy0": {"cpus": "0 1 2 3", "governor": "schedutil", "min_khz": 115200, "max_khz": 1510400}
    }
    assert info.clocks_now_khz == {"policy0": 729600} and info.thermal_c == {"cpu-thermal (thermal_zone0)": 48.5}
    assert info.sensors["ina3221"] == {"available": True, "reason": None}
    assert info.sensors["rapl"]["available"] is False and "no RAPL zones" in info.sensors["rapl"]["reason"]
    assert info.power_mode is None  # no nvpmodel here
    assert type(info).from_json(info.to_json()) == info
    assert info.fingerprint == info.__class__(**{**info.__dict__, "thermal_c": {}}).fingerprint  # volatile


def test_profile_end_to_end_reports_measured_energy(tmp_path, monkeypatch):
    from edgeprune.backends.onnxruntime import OnnxRuntimeBackend
    from edgeprune.commands import profile_end_to_end
    from edgeprune.models import LoadOptions, load_model
    from edgeprune.types import ProfileReport

    model = load_model("cifar:resnet20", LoadOptions())
    artifact = OnnxRuntimeBackend().export(model, tmp_path / "export")
    sysfs = tmp_path / "sysfs"
    monkeypatch.setenv("EDGEPRUNE_SYSFS_ROOT", str(sysfs))
    target = TargetProfile(name="dev", description="", runtime="onnxruntime", threads=1, power=PowerSpec(sensor="rapl"))
    with RaplWriter(sysfs, watts=3.0):
        report = profile_end_to_end(model, artifact, target, tmp_path, runs=200, warmup=5)
    latency = report.latency
    assert latency.energy == "measured" and latency.energy_detail.sensor == "rapl"
    assert latency.power_w == pytest.approx(3.0, rel=0.15)
    assert latency.energy_mj == latency.energy_detail.net_mj
    assert "measured with rapl (package-0" in latency.energy_note
    assert ProfileReport.load(tmp_path / "profile.json") == report
