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
        The agent never interprets a sample: edgeprune/devices/sensors.py parses them on the host.
  run   {model, runtime, threads, inputs: {name: path}}       -> {outputs: {name: path}}
        bench and run also take `precision`, a load-time hint for runtimes that choose their compute precision
        (openvino: fp32 (default) | fp16 | bf16); the others refuse one, their precision being in the model file.
  build-engine {onnx, precision: fp32|fp16|int8, calibration, calibration_batch, calibration_cache, workspace_mb,
        batch, out, float_layers, sparse_weights}  -> a TensorRT engine built by this device's TensorRT: {engine,
        tensorrt_version, build_s, layers: [{name, type, precision}], calibration, sparse_weights, ...}; progress
        events every 20 s (done = seconds so far). int8 calibration: a directory of .npy batches, an .npy of samples,
        or a calibration cache file from an earlier build (read instead of calibrating). float_layers: ONNX node names
        kept in fp32 (mixed precision). sparse_weights: true lets 2:4-sparse weights run on sparse tensor cores
        (BuilderFlag.SPARSE_WEIGHTS, TensorRT 8.0+; before 8.0 a note says the engine is dense).
  quit

Runtimes (agent_runtimes.py; TensorRT in agent_trt_*.py): onnxruntime, openvino (.xml IR or .onnx), tflite (LiteRT /
tflite-runtime / tf.lite; quantized inputs and outputs are converted from/to float32), tensorrt (a serialized engine;
pycuda or cuda-python for device memory). `info` reports which import here, with versions.

This file is the protocol; beside it (every targets/agent*.py is shipped together): agent_runtimes.py (sessions and
AgentError), agent_trt_cuda.py / agent_trt_runner.py / agent_trt_calibrator.py / agent_trt_builder.py (TensorRT),
agent_device.py (device facts read from /sys, /proc and tools) and agent_power.py (power sensors and sampling).
"""

import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback

from agent_device import cpu_clocks, cpu_model, emulation, read_text, sysfs_path, thermal_zones, tool_output
from agent_power import PowerSampler, SensorUnavailable, open_sensor, probe_sensors
from agent_runtimes import AgentError, OnnxRuntimeSession, OpenVinoSession, TfliteSession, first_line
from agent_trt_builder import build_engine
from agent_trt_cuda import cuda_binding_available
from agent_trt_runner import TensorRtSession

AGENT_VERSION = 4


EMULATION = emulation()  # None on real hardware; read once, it cannot change while the agent runs


def resolve_threads(threads):
    """None or 0 means every core this process may run on. The one place this default is decided."""
    if threads:
        return int(threads)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --- runtimes (agent_runtimes.py, agent_trt_runner.py) --------------------------------------------------------

RUNTIMES = {
    "onnxruntime": OnnxRuntimeSession,
    "openvino": OpenVinoSession,
    "tflite": TfliteSession,
    "tensorrt": TensorRtSession,
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
        found["tensorrt"]["cuda"] = cuda_binding_available()
    return found


# --- info: device facts (agent_device.py) and power sensors (agent_power.py) -----------------------------


def info(args):
    runtime = _runtime(args.get("runtime", "onnxruntime"))
    import numpy

    clocks = cpu_clocks()
    return {
        "hostname": socket.gethostname(),
        "os": "%s %s" % (platform.system(), platform.release()),
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": resolve_threads(None),
        "python": platform.python_version(),
        "runtime": runtime.name,
        "runtime_version": runtime.version(),
        "providers": runtime.providers(),
        "runtimes": runtimes_available(),
        "cpu_governor": read_text(sysfs_path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")),
        "throttling": tool_output(["vcgencmd", "get_throttled"]),  # Raspberry Pi: "throttled=0x0"
        "numpy_version": numpy.__version__,
        "clocks": {k: {f: v for f, v in p.items() if f != "cur_khz"} for k, p in clocks.items()},
        "clocks_now_khz": {k: p["cur_khz"] for k, p in clocks.items()},
        "power_mode": tool_output(["nvpmodel", "-q"]),  # Jetson: "NV Power Mode: MAXN\n0"
        "thermal_c": thermal_zones(),
        "sensors": probe_sensors(),
        "agent_version": AGENT_VERSION,
        "emulation": EMULATION,
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
            "emulation": EMULATION["kind"] if EMULATION else None,  # every timing says when it is not the device's
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
                    result = build_engine(
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
