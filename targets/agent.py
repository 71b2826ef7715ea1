#!/usr/bin/env python3
"""edgeprune's on-device agent: runs and times models on the device's own runtime.

Runs ON the device with Python >= 3.6 (Jetson Nano's JetPack 4), the standard library, numpy and the device's
runtime. No f-string `=`, no dataclasses, no walrus: keep it that way.

Protocol: JSON lines. The host writes {"id", "cmd", "args"} to stdin; the agent answers on stdout with
{"id", "ok": true, "result"} or {"id", "ok": false, "error", "error_type"}, preceded by any number of
{"id", "event": "progress", "done", "total"} lines. Tensors travel as .npy files whose paths are in the JSON.
On start the agent prints {"event": "ready", "agent_version", "python"}.

Commands:
  info  {runtime}                                   -> device and runtime facts
  bench {model, runtime, threads, warmup, runs, batch, seed}  -> per-run wall times in ms
  run   {model, runtime, threads, inputs: {name: path}}       -> {outputs: {name: path}}
  quit
"""

import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import traceback

AGENT_VERSION = 1


class AgentError(Exception):
    def __init__(self, message, error_type="bad_request"):
        Exception.__init__(self, message)
        self.error_type = error_type


def resolve_threads(threads):
    """None or 0 means every core this process may run on. The one place this default is decided."""
    if threads:
        return int(threads)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --- runtimes ------------------------------------------------------------------------------------------------


class OnnxRuntimeSession(object):
    name = "onnxruntime"

    def __init__(self, path, threads):
        ort = _import_runtime("onnxruntime", "pip install onnxruntime (or onnxruntime-gpu on Jetson)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for unreadable models
            raise AgentError("onnxruntime cannot load %s: %s" % (path, _first_line(exc)))
        self.inputs = [(i.name, i.shape, _ORT_DTYPES.get(i.type, "float32")) for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def version():
        return _import_runtime("onnxruntime", "pip install onnxruntime").__version__

    @staticmethod
    def providers():
        return list(_import_runtime("onnxruntime", "pip install onnxruntime").get_available_providers())

    def run(self, feeds):
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
               "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}

RUNTIMES = {"onnxruntime": OnnxRuntimeSession}


def _import_runtime(module, how):
    try:
        return __import__(module)
    except ImportError:
        raise AgentError("%s is not installed on this device (%s)" % (module, how), "missing_runtime")


def _runtime(name):
    if name not in RUNTIMES:
        raise AgentError("runtime %r is not supported by this agent (known: %s)" % (name, ", ".join(sorted(RUNTIMES))))
    return RUNTIMES[name]


# --- device facts -----------------------------------------------------------------------------------------------


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def _cpu_model():
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def info(args):
    runtime = _runtime(args.get("runtime", "onnxruntime"))
    import numpy

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
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "throttling": None,
        "numpy_version": numpy.__version__,
        "agent_version": AGENT_VERSION,
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
        key = (model, args.get("runtime"), threads, os.path.getmtime(model))
        if key not in self.sessions:
            self.sessions[key] = _runtime(args.get("runtime", "onnxruntime"))(model, threads)
        return self.sessions[key], threads

    def bench(self, request_id, args):
        import numpy

        session, threads = self.session(args)
        warmup, runs = int(args.get("warmup", 10)), int(args.get("runs", 50))
        rng = numpy.random.RandomState(int(args.get("seed", 0)))
        feeds = {}
        for name, shape, dtype in session.inputs:
            concrete = [int(args.get("batch", 1)) if i == 0 and not isinstance(d, int) else d
                        for i, d in enumerate(shape)]
            if not all(isinstance(d, int) for d in concrete):
                raise AgentError("input %s has dynamic dimensions %s besides the batch" % (name, shape))
            feeds[name] = rng.standard_normal(concrete).astype(dtype)
        for _ in range(warmup):
            session.run(feeds)
        timings = []
        step = max(1, runs // 20)
        for i in range(runs):
            start = time.perf_counter()
            session.run(feeds)
            timings.append((time.perf_counter() - start) * 1000.0)
            if (i + 1) % step == 0 or i + 1 == runs:
                self.emit({"id": request_id, "event": "progress", "done": i + 1, "total": runs})
        return {"timings_ms": timings, "threads": threads, "warmup": warmup, "runtime": session.name,
                "runtime_version": session.version(), "batch": int(args.get("batch", 1)),
                "input_shapes": dict((k, list(v.shape)) for k, v in feeds.items())}

    def run(self, request_id, args):
        import numpy

        session, threads = self.session(args)
        feeds = {}
        for name, path in args.get("inputs", {}).items():
            if not os.path.isfile(path):
                raise AgentError("input file not found on the device: %s" % path)
            feeds[name] = numpy.load(path, allow_pickle=False)
        expected = set(name for name, _, _ in session.inputs)
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


def _run_batched(session, feeds):
    """Run the whole batch at once, or sample by sample when the model's batch dimension is fixed."""
    import numpy

    fixed = [shape[0] for _, shape, _ in session.inputs if shape and isinstance(shape[0], int)]
    total = len(next(iter(feeds.values())))
    step = fixed[0] if fixed else total
    if step <= 0 or total % step:
        raise AgentError("batch of %d does not divide into the model's fixed batch of %d" % (total, step))
    parts = [session.run(dict((k, v[i:i + step]) for k, v in feeds.items())) for i in range(0, total, step)]
    return dict((name, numpy.concatenate([p[name] for p in parts])) for name in parts[0])


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def main():
    # Runtimes may print to stdout; keep fd 1 for the protocol only by moving their prints to stderr.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def emit(message):
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
                else:
                    raise AgentError("unknown command %r (known: info, bench, run, quit)" % cmd)
                emit({"id": request_id, "ok": True, "result": result})
            except AgentError as exc:
                emit({"id": request_id, "ok": False, "error": str(exc), "error_type": exc.error_type})
            except Exception as exc:  # report, keep serving: one bad request must not lose the session
                sys.stderr.write(traceback.format_exc())
                emit({"id": request_id, "ok": False, "error": "%s: %s" % (type(exc).__name__, _first_line(exc)),
                      "error_type": "internal"})
    finally:
        agent.close()


if __name__ == "__main__":
    main()
