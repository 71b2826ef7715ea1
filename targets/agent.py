#!/usr/bin/env python3
"""edgeprune's on-device agent: runs and times models on the device's own runtime.

Runs ON the device with Python >= 3.6 (Jetson Nano's JetPack 4), the standard library, numpy and the device's
runtime. No f-string `=`, no dataclasses, no walrus: keep it that way.

Protocol: JSON lines. The host writes {"id", "cmd", "args"} to stdin; the agent answers on stdout with
{"id", "ok": true, "result"} or {"id", "ok": false, "error", "error_type"}, preceded by any number of
{"id", "event": "progress", "done", "total"} lines. Tensors travel as .npy files whose paths are in the JSON.
On start the agent prints {"event": "ready", "agent_version", "python"}.

Commands:
  info  {runtime}                                   -> device and runtime facts, clocks, power mode, thermal zones,
                                                       and which power sensors this agent can read (with the reason
                                                       when one cannot be read)
  bench {model, runtime, threads, warmup, runs, batch, seed, power}  -> per-run wall times in ms; with
        power = {sensor, interval_ms, idle_s} also the sensor's RAW samples (timestamped with the same
        time.perf_counter clock as the runs) over an idle window after warm-up and over the timed loop.
        The agent never interprets a sample: edgeprune/latency/sensors.py parses them on the host.
  run   {model, runtime, threads, inputs: {name: path}}       -> {outputs: {name: path}}
        bench and run also take `precision`, a load-time hint for runtimes that choose their compute precision
        (openvino: fp32 (default) | fp16 | bf16); the others refuse one, their precision being in the model file.
  build-engine {onnx, precision: fp32|fp16|int8, calibration, calibration_batch, calibration_cache, workspace_mb,
        batch, out, float_layers}  -> a TensorRT engine built by this device's TensorRT: {engine, tensorrt_version,
        build_s, layers: [{name, type, precision}], calibration, ...}; progress events every 20 s (done = seconds
        so far). int8 calibration: a directory of .npy batches, an .npy of samples, or a calibration cache file from
        an earlier build (read instead of calibrating). float_layers: ONNX node names kept in fp32 (mixed precision).
  quit

Runtimes (agent_runtimes.py, agent_tensorrt.py, shipped beside this file): onnxruntime, openvino (.xml IR or .onnx),
tflite (LiteRT / tflite-runtime / tf.lite; quantized inputs and outputs are converted from/to float32), tensorrt (a
serialized engine; pycuda or cuda-python for device memory). `info` reports which import here, with versions.
"""

import glob
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import agent_tensorrt
from agent_runtimes import AgentError, OnnxRuntimeSession, OpenVinoSession, TfliteSession, first_line

AGENT_VERSION = 3

# Every /sys and /proc path is read under this root (default "/"). Tests point it at a directory laid out like
# sysfs; on a device it stays unset.
SYSFS_ROOT_ENV = "EDGEPRUNE_SYSFS_ROOT"


def resolve_threads(threads):
    """None or 0 means every core this process may run on. The one place this default is decided."""
    if threads:
        return int(threads)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --- runtimes (agent_runtimes.py, agent_tensorrt.py) ----------------------------------------------------------

RUNTIMES = {
    "onnxruntime": OnnxRuntimeSession,
    "openvino": OpenVinoSession,
    "tflite": TfliteSession,
    "tensorrt": agent_tensorrt.TensorRtSession,
}


def _runtime(name):
    if name not in RUNTIMES:
        raise AgentError("runtime %r is not supported by this agent (known: %s)" % (name, ", ".join(sorted(RUNTIMES))))
    return RUNTIMES[name]


def runtimes_available():
    """Which runtimes import here, with their versions, or the reason they do not."""
    found = {}
    for name in sorted(RUNTIMES):
        try:
            found[name] = {"available": True, "version": RUNTIMES[name].version(), "reason": None}
        except AgentError as exc:
            found[name] = {"available": False, "version": None, "reason": str(exc)}
        except Exception as exc:  # a runtime that is installed but broken (e.g. built against another numpy)
            found[name] = {
                "available": False,
                "version": None,
                "reason": "%s: %s" % (type(exc).__name__, first_line(exc)),
            }
    if found.get("tensorrt", {}).get("available"):
        found["tensorrt"]["cuda"] = agent_tensorrt.cuda_binding_available()
    return found


# --- device facts -----------------------------------------------------------------------------------------------


def _sys(path):
    """An absolute /sys or /proc path under the sysfs root."""
    return os.path.join(os.environ.get(SYSFS_ROOT_ENV) or "/", path.lstrip("/"))


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def _cpu_model():
    text = _read(_sys("/proc/cpuinfo")) or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _command(argv, timeout=5.0):
    """(returncode, stdout+stderr) of a short command, or (None, why it could not run)."""
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    except (IOError, OSError) as exc:
        return None, "%s cannot run: %s" % (argv[0], exc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, "%s did not answer within %.0f s" % (" ".join(argv), timeout)
    return proc.returncode, out


def _clocks():
    """cpufreq per policy: governor, min/max (configuration) and the current frequency, in kHz."""
    policies = {}
    for path in sorted(glob.glob(_sys("/sys/devices/system/cpu/cpufreq/policy*"))):

        def value(name, path=path):
            text = _read(os.path.join(path, name))
            return int(text) if text and text.isdigit() else text

        policies[os.path.basename(path)] = {
            "cpus": _read(os.path.join(path, "affected_cpus")),
            "governor": value("scaling_governor"),
            "min_khz": value("scaling_min_freq"),
            "max_khz": value("scaling_max_freq"),
            "cur_khz": value("scaling_cur_freq"),
        }
    return policies


def _thermal():
    temps = {}
    for path in sorted(glob.glob(_sys("/sys/class/thermal/thermal_zone*"))):
        kind, milli = _read(os.path.join(path, "type")), _read(os.path.join(path, "temp"))
        try:
            temps["%s (%s)" % (kind, os.path.basename(path))] = int(milli) / 1000.0
        except (TypeError, ValueError):
            continue
    return temps


def _tool_output(argv):
    """Raw output of a device tool when it exists and succeeds, else None (the host parses it)."""
    if not shutil.which(argv[0]):
        return None
    code, out = _command(argv, timeout=5.0)
    return out.strip() if code == 0 else None


def info(args):
    runtime = _runtime(args.get("runtime", "onnxruntime"))
    import numpy

    clocks = _clocks()
    return {
        "hostname": socket.gethostname(),
        "os": "%s %s" % (platform.system(), platform.release()),
        "arch": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": resolve_threads(None),
        "python": platform.python_version(),
        "runtime": runtime.name,
        "runtime_version": runtime.version(),
        "providers": runtime.providers(),
        "runtimes": runtimes_available(),
        "cpu_governor": _read(_sys("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")),
        "throttling": _tool_output(["vcgencmd", "get_throttled"]),  # Raspberry Pi: "throttled=0x0"
        "numpy_version": numpy.__version__,
        "clocks": {k: {f: v for f, v in p.items() if f != "cur_khz"} for k, p in clocks.items()},
        "clocks_now_khz": {k: p["cur_khz"] for k, p in clocks.items()},
        "power_mode": _tool_output(["nvpmodel", "-q"]),  # Jetson: "NV Power Mode: MAXN\n0"
        "thermal_c": _thermal(),
        "sensors": probe_sensors(),
        "agent_version": AGENT_VERSION,
    }


# --- power sensors ------------------------------------------------------------------------------------------------
# Each sensor yields RAW readings (file contents, tool output lines) with a perf_counter timestamp. A "pull" sensor
# is read by the sampler thread every interval; a "stream" sensor is a tool that prints a line per interval.


class SensorUnavailable(Exception):
    pass


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
    hwmon = sorted(glob.glob(_sys("/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")))
    for folder in hwmon:
        for label_path in sorted(glob.glob(os.path.join(folder, "in*_label"))):
            channel = os.path.basename(label_path)[2 : -len("_label")]
            label = _read(label_path) or ""
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
        for folder in sorted(glob.glob(_sys("/sys/bus/i2c/drivers/ina3221x/*/iio:device*"))):
            for name_path in sorted(glob.glob(os.path.join(folder, "rail_name_*"))):
                channel = name_path.rsplit("_", 1)[1]
                power = os.path.join(folder, "in_power%s_input" % channel)
                if os.path.exists(power):
                    rails.append({"rail": _read(name_path) or "rail%s" % channel, "power_mw": len(files)})
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
        z for z in sorted(glob.glob(_sys("/sys/class/powercap/intel-rapl:*"))) if os.path.basename(z).count(":") == 1
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
                "name": _read(os.path.join(zone, "name")),
                "max_energy_range_uj": _read(os.path.join(zone, "max_energy_range_uj")),
            }
        )
    try:
        return FileSensor("rapl", [os.path.join(z, "energy_uj") for z in zones], meta)
    except SensorUnavailable as exc:
        raise SensorUnavailable("%s; energy_uj is root-only since Linux 5.10 (CVE-2020-8694)" % exc) from None


def _odpm():
    """Android ODPM (Pixel): each iio device's energy_value lists accumulated energy per rail."""
    paths = sorted(glob.glob(_sys("/sys/bus/iio/devices/iio:device*/energy_value")))
    if not paths:
        raise SensorUnavailable("no /sys/bus/iio/devices/iio:device*/energy_value (no on-device power monitor)")
    return FileSensor("odpm", paths, {})


def _battery():
    """Battery fuel gauge: status, current_now (uA), voltage_now (uV)."""
    for folder in sorted(glob.glob(_sys("/sys/class/power_supply/*"))):
        if (_read(os.path.join(folder, "type")) or "").lower() != "battery":
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
        code, out = _command(argv)
        if code != 0 or must_contain not in (out or ""):
            raise SensorUnavailable("%s gave no readings: %s" % (" ".join(argv), (out or "").strip()[:200]))

    def read(self):
        code, out = _command(self.argv)
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


# --- running and timing -----------------------------------------------------------------------------------------


class Agent(object):
    def __init__(self, emit):
        self.emit = emit
        self.sessions = {}
        self.workdir = tempfile.mkdtemp(prefix="edgeprune-agent-")

    def session(self, args):
        model = args.get("model")
        if not model or not os.path.isfile(model):
            raise AgentError("model file not found on the device: %s" % model)
        threads = resolve_threads(args.get("threads"))
        precision = args.get("precision")  # a load-time precision hint, for runtimes that take one (openvino)
        key = (model, args.get("runtime"), threads, precision, os.path.getmtime(model))
        if key not in self.sessions:
            self.sessions[key] = _runtime(args.get("runtime", "onnxruntime"))(model, threads, precision)
        return self.sessions[key], threads

    def bench(self, request_id, args):
        import numpy

        session, threads = self.session(args)
        warmup, runs = int(args.get("warmup", 10)), int(args.get("runs", 50))
        rng = numpy.random.RandomState(int(args.get("seed", 0)))
        feeds = {}
        for name, shape, dtype in session.inputs:
            concrete = [
                int(args.get("batch", 1)) if i == 0 and not isinstance(d, int) else d for i, d in enumerate(shape)
            ]
            if not all(isinstance(d, int) for d in concrete):
                raise AgentError("input %s has dynamic dimensions %s besides the batch" % (name, shape))
            feeds[name] = rng.standard_normal(concrete).astype(dtype)
        for _ in range(warmup):
            session.run(feeds)
        sampler, power = self.start_power(args.get("power"))
        timings = []
        step = max(1, runs // 20)
        try:
            if sampler is not None:
                sampler.mark("run")
            for i in range(runs):
                start = time.perf_counter()
                session.run(feeds)
                timings.append((time.perf_counter() - start) * 1000.0)
                if (i + 1) % step == 0 or i + 1 == runs:
                    self.emit({"id": request_id, "event": "progress", "done": i + 1, "total": runs})
            if sampler is not None:
                sampler.mark(None)
        finally:
            if sampler is not None:
                power = sampler.stop()
        result = {
            "timings_ms": timings,
            "threads": threads,
            "warmup": warmup,
            "runtime": session.name,
            "runtime_version": session.version(),
            "batch": int(args.get("batch", 1)),
            "precision": getattr(session, "precision", None),  # the load-time hint used, where one applies
            "input_shapes": {k: list(v.shape) for k, v in feeds.items()},
        }
        if power is not None:
            result["power"] = power
        return result

    @staticmethod
    def start_power(spec):
        """(sampler, None) sampling an idle window of spec["idle_s"] seconds already, or (None, the reason as a
        power result) when the sensor cannot be read, or (None, None) when no power was asked for."""
        if not spec:
            return None, None
        name, interval_ms = spec.get("sensor"), float(spec.get("interval_ms") or 50.0)
        if interval_ms < 1:
            raise AgentError("power interval_ms must be at least 1 (got %s)" % interval_ms)
        try:
            sensor = open_sensor(name, interval_ms)
        except SensorUnavailable as exc:
            return None, {"sensor": name, "available": False, "reason": str(exc)}
        sampler = PowerSampler(sensor, interval_ms)
        sampler.start()
        idle_s = float(spec.get("idle_s", 1.0))
        if idle_s > 0:
            sampler.mark("idle")
            time.sleep(idle_s)
        return sampler, None

    def run(self, request_id, args):
        import numpy

        session, threads = self.session(args)
        feeds = {}
        for name, path in args.get("inputs", {}).items():
            if not os.path.isfile(path):
                raise AgentError("input file not found on the device: %s" % path)
            feeds[_input_name(session, name)] = numpy.load(path, allow_pickle=False)
        expected = {name for name, _, _ in session.inputs}
        if set(feeds) != expected:
            raise AgentError("inputs %s given, the model takes %s" % (sorted(feeds), sorted(expected)))
        outputs = _run_batched(session, feeds)
        paths = {}
        for i, (name, value) in enumerate(outputs.items()):
            paths[name] = os.path.join(self.workdir, "out%d.npy" % i)
            numpy.save(paths[name], value)
        return {"outputs": paths, "threads": threads}

    def close(self):
        shutil.rmtree(self.workdir, ignore_errors=True)


def _input_name(session, key):
    """Inputs are named, or given by position ("0", "1", ...) where no input has that name."""
    names = [name for name, _, _ in session.inputs]
    if key not in names and key.isdigit() and int(key) < len(names):
        return names[int(key)]
    return key


def _run_batched(session, feeds):
    """Run the whole batch at once, or sample by sample when the model's batch dimension is fixed."""
    import numpy

    fixed = [shape[0] for _, shape, _ in session.inputs if shape and isinstance(shape[0], int)]
    total = len(next(iter(feeds.values())))
    step = fixed[0] if fixed else total
    if step <= 0 or total % step:
        raise AgentError("batch of %d does not divide into the model's fixed batch of %d" % (total, step))
    parts = [session.run({k: v[i : i + step] for k, v in feeds.items()}) for i in range(0, total, step)]
    return {name: numpy.concatenate([p[name] for p in parts]) for name in parts[0]}


def main():
    # Runtimes may print to stdout; keep fd 1 for the protocol only by moving their prints to stderr.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    lock = threading.Lock()  # build-engine's heartbeat writes from a thread

    def emit(message):
        with lock:
            protocol.write(json.dumps(message) + "\n")
            protocol.flush()

    agent = Agent(emit)
    emit({"event": "ready", "agent_version": AGENT_VERSION, "python": platform.python_version()})
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            request_id = None
            try:
                request = json.loads(line)
                request_id, cmd, args = request.get("id"), request.get("cmd"), request.get("args") or {}
                if cmd == "quit":
                    emit({"id": request_id, "ok": True, "result": {}})
                    break
                if cmd == "info":
                    result = info(args)
                elif cmd == "bench":
                    result = agent.bench(request_id, args)
                elif cmd == "run":
                    result = agent.run(request_id, args)
                elif cmd == "build-engine":
                    result = agent_tensorrt.build_engine(
                        args,
                        lambda s, rid=request_id: emit(
                            {"id": rid, "event": "progress", "done": s, "total": 0, "unit": "s"}
                        ),
                    )
                else:
                    raise AgentError("unknown command %r (known: info, bench, run, build-engine, quit)" % cmd)
                emit({"id": request_id, "ok": True, "result": result})
            except AgentError as exc:
                emit({"id": request_id, "ok": False, "error": str(exc), "error_type": exc.error_type})
            except Exception as exc:  # report, keep serving: one bad request must not lose the session
                sys.stderr.write(traceback.format_exc())
                emit(
                    {
                        "id": request_id,
                        "ok": False,
                        "error": "%s: %s" % (type(exc).__name__, first_line(exc)),
                        "error_type": "internal",
                    }
                )
    finally:
        agent.close()


if __name__ == "__main__":
    main()
