"""Power sensors of edgeprune's on-device agent (targets/agent.py): which ones can be read here (probe_sensors), and
sampling one on a thread around the timed runs (PowerSampler). The agent never interprets a sample:
edgeprune/devices/sensors.py parses them on the host.

Each sensor yields RAW readings (file contents, tool output lines) with a perf_counter timestamp. A "pull" sensor is
read by the sampler thread every interval; a "stream" sensor is a tool that prints a line per interval.

Python >= 3.6 and the standard library (+ pynvml where installed); see agent_runtimes.py for the rules.
"""

import glob
import os
import shutil
import subprocess
import threading
import time

from agent_device import read_text, run_command, sysfs_path
from agent_runtimes import AgentError, first_line


class SensorUnavailable(Exception):
    """This sensor cannot be read here; the message says why."""


def _readable(path):
    """The file's text, or SensorUnavailable saying why it cannot be read."""
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError) as exc:
        hint = ""
        if getattr(exc, "errno", None) == 13:
            hint = " (permission denied: run the agent as root or grant read access, e.g. a udev rule)"
        raise SensorUnavailable("cannot read %s: %s%s" % (path, exc.strerror or exc, hint)) from None


class FileSensor(object):
    """Reads a fixed list of files per sample; a sample is the list of their texts, in order."""

    kind = "pull"

    def __init__(self, name, files, meta):
        self.name, self.files, self.meta = name, files, meta
        self.meta["files"] = files
        for path in files:
            _readable(path)

    def read(self):
        out = []
        for path in self.files:
            with open(path) as handle:
                out.append(handle.read().strip())
        return out


def _ina3221():
    """Jetson INA3221: JetPack 5+ hwmon (inN_label, inN_input mV, currN_input mA), else JetPack 4 iio
    (rail_name_N, in_powerN_input mW)."""
    files, rails = [], []
    hwmon = sorted(glob.glob(sysfs_path("/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")))
    for folder in hwmon:
        for label_path in sorted(glob.glob(os.path.join(folder, "in*_label"))):
            channel = os.path.basename(label_path)[2 : -len("_label")]
            label = read_text(label_path) or ""
            # NC = not connected; in7 is the "sum of shunt voltages" channel (kernel Documentation/hwmon/ina3221.rst)
            if not channel.isdigit() or channel == "7" or "NC" in label.split():
                continue
            volt, curr = os.path.join(folder, "in%s_input" % channel), os.path.join(folder, "curr%s_input" % channel)
            if os.path.exists(volt) and os.path.exists(curr):
                rails.append({"rail": label, "volt_mv": len(files), "curr_ma": len(files) + 1})
                files += [volt, curr]
    variant = "hwmon"
    if not rails:
        variant = "iio"
        for folder in sorted(glob.glob(sysfs_path("/sys/bus/i2c/drivers/ina3221x/*/iio:device*"))):
            for name_path in sorted(glob.glob(os.path.join(folder, "rail_name_*"))):
                channel = name_path.rsplit("_", 1)[1]
                power = os.path.join(folder, "in_power%s_input" % channel)
                if os.path.exists(power):
                    rails.append({"rail": read_text(name_path) or "rail%s" % channel, "power_mw": len(files)})
                    files.append(power)
    if not rails:
        raise SensorUnavailable(
            "no INA3221 rails under /sys/bus/i2c/drivers/ina3221/*/hwmon (JetPack 5+) or "
            "/sys/bus/i2c/drivers/ina3221x/*/iio:device* (JetPack 4)"
        )
    return FileSensor("ina3221", files, {"variant": variant, "rails": rails})


def _rapl():
    """Intel/AMD RAPL through powercap: top-level zones' energy_uj counters (they wrap at max_energy_range_uj)."""
    zones = [
        z
        for z in sorted(glob.glob(sysfs_path("/sys/class/powercap/intel-rapl:*")))
        if os.path.basename(z).count(":") == 1
    ]
    if not zones:
        raise SensorUnavailable(
            "no RAPL zones under /sys/class/powercap/intel-rapl:* (not an Intel/AMD CPU with "
            "the intel_rapl driver loaded, or a VM that hides it)"
        )
    meta = {"zones": []}
    for zone in zones:
        meta["zones"].append(
            {
                "zone": os.path.basename(zone),
                "name": read_text(os.path.join(zone, "name")),
                "max_energy_range_uj": read_text(os.path.join(zone, "max_energy_range_uj")),
            }
        )
    try:
        return FileSensor("rapl", [os.path.join(z, "energy_uj") for z in zones], meta)
    except SensorUnavailable as exc:
        raise SensorUnavailable("%s; energy_uj is root-only since Linux 5.10 (CVE-2020-8694)" % exc) from None


def _odpm():
    """Android ODPM (Pixel): each iio device's energy_value lists accumulated energy per rail."""
    paths = sorted(glob.glob(sysfs_path("/sys/bus/iio/devices/iio:device*/energy_value")))
    if not paths:
        raise SensorUnavailable("no /sys/bus/iio/devices/iio:device*/energy_value (no on-device power monitor)")
    return FileSensor("odpm", paths, {})


def _battery():
    """Battery fuel gauge: status, current_now (uA), voltage_now (uV)."""
    for folder in sorted(glob.glob(sysfs_path("/sys/class/power_supply/*"))):
        if (read_text(os.path.join(folder, "type")) or "").lower() != "battery":
            continue
        names = ("status", "current_now", "voltage_now")
        if all(os.path.exists(os.path.join(folder, n)) for n in names):
            return FileSensor(
                "battery",
                [os.path.join(folder, n) for n in names],
                {"supply": os.path.basename(folder), "fields": list(names)},
            )
    raise SensorUnavailable("no battery under /sys/class/power_supply with status, current_now and voltage_now")


class CommandSensor(object):
    """Runs a tool per sample; a sample is its whole output."""

    kind = "pull"

    def __init__(self, name, argv, must_contain):
        self.name, self.argv, self.meta = name, argv, {"command": " ".join(argv)}
        if not shutil.which(argv[0]):
            raise SensorUnavailable("%s is not on PATH" % argv[0])
        code, out = run_command(argv)
        if code != 0 or must_contain not in (out or ""):
            raise SensorUnavailable("%s gave no readings: %s" % (" ".join(argv), (out or "").strip()[:200]))

    def read(self):
        code, out = run_command(self.argv)
        if code != 0:
            raise IOError("%s failed: %s" % (" ".join(self.argv), (out or "").strip()[:200]))
        return out


class StreamSensor(object):
    """A tool that prints one line per interval; each line is a sample, timestamped when it arrives."""

    kind = "stream"

    def __init__(self, name, argv):
        if not shutil.which(argv[0]):
            raise SensorUnavailable("%s is not on PATH" % argv[0])
        if shutil.which("stdbuf"):  # line-buffer the tool's stdout so lines arrive when printed
            argv = ["stdbuf", "-oL"] + argv
        self.name, self.argv, self.meta, self.proc = name, argv, {"command": " ".join(argv)}, None

    def start(self, on_line):
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, bufsize=1
        )

        def pump():
            for line in self.proc.stdout:
                if line.strip():
                    on_line(line.strip())

        self.thread = threading.Thread(target=pump)
        self.thread.daemon = True
        self.thread.start()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc is not None:
            self.thread.join(timeout=5)


class NvmlSensor(object):
    """pynvml when importable: power per GPU in mW."""

    kind = "pull"

    def __init__(self):
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        self.name, self.meta = "nvml", {"source": "pynvml", "unit": "mW"}
        self.read()

    def read(self):
        return [self.nvml.nvmlDeviceGetPowerUsage(h) for h in self.handles]


def _nvml(interval_ms):
    try:
        return NvmlSensor()
    except ImportError:
        pass
    except Exception as exc:  # pynvml raises NVMLError subclasses for a missing driver or unsupported query
        raise SensorUnavailable("NVML cannot read power: %s" % exc) from None
    CommandSensor("nvml", ["nvidia-smi", "--query-gpu=index,power.draw", "--format=csv,noheader,nounits"], ",")
    return StreamSensor(
        "nvml",
        ["nvidia-smi", "--query-gpu=index,power.draw", "--format=csv,noheader,nounits", "-lms", str(int(interval_ms))],
    )


def _tegrastats(interval_ms):
    tool = shutil.which("tegrastats") or ("/usr/bin/tegrastats" if os.path.exists("/usr/bin/tegrastats") else None)
    if not tool:
        raise SensorUnavailable("tegrastats is not on PATH (not a Jetson)")
    return StreamSensor("tegrastats", [tool, "--interval", str(int(interval_ms))])


def open_sensor(name, interval_ms):
    """The named sensor ready to sample, or SensorUnavailable with the reason."""
    factories = {
        "ina3221": lambda: _ina3221(),
        "tegrastats": lambda: _tegrastats(interval_ms),
        "pmic_read_adc": lambda: CommandSensor("pmic_read_adc", ["vcgencmd", "pmic_read_adc"], "current("),
        "odpm": lambda: _odpm(),
        "battery": lambda: _battery(),
        "nvml": lambda: _nvml(interval_ms),
        "rapl": lambda: _rapl(),
    }
    if name not in factories:
        raise AgentError("power sensor %r is unknown to this agent (known: %s)" % (name, ", ".join(sorted(factories))))
    return factories[name]()


SENSOR_NAMES = ("ina3221", "tegrastats", "pmic_read_adc", "odpm", "battery", "nvml", "rapl")


def probe_sensors():
    """Which sensors could be opened here, and why not where not. Stream tools are only looked up, not run."""
    found = {}
    for name in SENSOR_NAMES:
        try:
            sensor = open_sensor(name, 100)
            found[name] = {"available": True, "reason": None}
            if sensor.kind == "stream":
                found[name]["reason"] = (
                    "found `%s`; whether it prints power shows when sampling" % sensor.meta["command"]
                )
        except SensorUnavailable as exc:
            found[name] = {"available": False, "reason": str(exc)}
    return found


class PowerSampler(object):
    """Samples a sensor on a thread. mark(phase) closes the previous window and opens the next, taking a pull
    sample at the boundary so every window is bracketed by readings."""

    MAX_ERRORS = 20

    def __init__(self, sensor, interval_ms):
        self.sensor, self.interval = sensor, interval_ms / 1000.0
        self.samples, self.errors, self.windows = [], [], {}
        self.lock, self.done, self.phase = threading.Lock(), threading.Event(), None
        self.read_lock = threading.Lock()  # one read at a time, so samples are in time order

    def _sample(self):
        with self.read_lock:
            t0 = time.perf_counter()
            try:
                raw = self.sensor.read()
            except Exception as exc:  # a failed read is reported with the samples, never raised mid-benchmark
                if len(self.errors) < self.MAX_ERRORS:
                    self.errors.append([t0, "%s: %s" % (type(exc).__name__, first_line(exc))])
                return
            t = (t0 + time.perf_counter()) / 2.0  # a command sample is stamped at the middle of its run
            with self.lock:
                self.samples.append([t, raw])

    def _on_line(self, line):
        t = time.perf_counter()
        with self.lock:
            self.samples.append([t, line])

    def _loop(self):
        next_tick = time.perf_counter()
        while not self.done.is_set():
            self._sample()
            next_tick = max(next_tick + self.interval, time.perf_counter())  # a slow read delays, never bunches
            self.done.wait(max(0.0, next_tick - time.perf_counter()))

    def _wait_for_sample_after(self, t, timeout):
        """A stream's lines come when the tool prints them: wait (bounded) for one past `t` so a window's edge is
        covered by a sample on each side."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                if self.samples and self.samples[-1][0] > t:
                    return
            time.sleep(min(0.005, self.interval / 4.0))

    def start(self):
        if self.sensor.kind == "stream":
            self.sensor.start(self._on_line)
            self._wait_for_sample_after(0.0, max(2.0, 5 * self.interval))
        else:
            self.thread = threading.Thread(target=self._loop)
            self.thread.daemon = True
            self.thread.start()

    def mark(self, phase):
        if self.sensor.kind == "pull":
            self._sample()
        now = time.perf_counter()
        if self.phase is not None:
            self.windows[self.phase][1] = now
        if phase is not None:
            self.windows[phase] = [now, None]
        self.phase = phase

    def stop(self):
        self.done.set()
        if self.sensor.kind == "stream":
            ends = [w[1] for w in self.windows.values() if w[1] is not None]
            if ends:
                self._wait_for_sample_after(max(ends), max(1.0, 5 * self.interval))
            self.sensor.stop()
        else:
            self.thread.join(timeout=10)
        return {
            "sensor": self.sensor.name,
            "available": True,
            "reason": None,
            "meta": self.sensor.meta,
            "kind": self.sensor.kind,
            "interval_ms": self.interval * 1000.0,
            "clock": "time.perf_counter",
            "windows": self.windows,
            "samples": self.samples,
            "errors": self.errors,
        }
