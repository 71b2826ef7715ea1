"""TensorRT for edgeprune's on-device agent (targets/agent.py): running a serialized engine, and building one ON the
device from ONNX (the `build-engine` command), since an engine runs only with the TensorRT version and GPU that built it.

Python >= 3.6, standard library + numpy + TensorRT + pycuda or cuda-python (see agent_runtimes.py for the rules).
Everything around TensorRT (argument checks, calibration batches from .npy, the calibration cache, API detection,
engine-inspector parsing) is a plain function or class here, testable without TensorRT.
"""

import importlib
import json
import os
import sys
import threading
import time

from agent_runtimes import AgentError, first_line, import_runtime, no_precision_hint

# Engines are built ON the device (build-engine below): an engine only runs on the GPU model and TensorRT version that
# built it. Two Python APIs are in the field, told apart by attribute presence, never by version number alone:
#   bindings (TensorRT <= 8.4; JetPack 4's 8.2): engine.num_bindings, get_binding_index/get_binding_name,
#     binding_is_input, get_binding_shape/get_binding_dtype, context.set_binding_shape, context.execute_v2(bindings)
#   tensors (TensorRT 8.5+, the only one in 10.x): engine.num_io_tensors, get_tensor_name(i), get_tensor_mode(name)
#     (trt.TensorIOMode.INPUT/OUTPUT), get_tensor_shape/get_tensor_dtype, context.set_input_shape,
#     context.set_tensor_address(name, ptr), context.execute_async_v3(stream_handle)
# Sources: TensorRT Python API reference, ICudaEngine (docs.nvidia.com/deeplearning/tensorrt/api/python_api/infer/Core/
# Engine.html) and the 8.x -> 10.x migration guide ("TensorRT 10.x replaces the binding-based API with a name-based
# tensor API"; docs.nvidia.com/deeplearning/tensorrt/latest/api/migration-guide.html).

TRT_HOW = (
    "TensorRT comes with JetPack on Jetson (sudo apt install nvidia-jetpack; import tensorrt with the system "
    "python3); on x86 with an NVIDIA GPU: pip install tensorrt"
)
CUDA_HOW = (
    "pip install pycuda (JetPack: sudo apt install python3-pycuda or pip3 install pycuda) or pip install cuda-python"
)


def trt_major(version):
    """8 for "8.2.1.8", 10 for "10.3.0"."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise AgentError("cannot read the TensorRT version %r" % (version,), "internal") from None


def trt_io_api(engine):
    """ "tensors" when the engine has the name-based API (TensorRT 8.5+), "bindings" for older engines."""
    if hasattr(engine, "num_io_tensors"):
        return "tensors"
    if hasattr(engine, "get_binding_index"):
        return "bindings"
    raise AgentError(
        "this TensorRT engine object has neither num_io_tensors (TensorRT 8.5+) nor get_binding_index "
        "(TensorRT <= 8.x): unsupported TensorRT version",
        "missing_runtime",
    )


def trt_io_tensors(trt, engine, api):
    """The engine's inputs and outputs as dicts: name, is_input, shape (-1 where dynamic), dtype (numpy name)."""
    import numpy

    tensors = []
    if api == "tensors":
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            tensors.append(
                {
                    "name": name,
                    "is_input": engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                    "shape": [int(d) for d in engine.get_tensor_shape(name)],
                    "dtype": numpy.dtype(trt.nptype(engine.get_tensor_dtype(name))).name,
                    "index": i,
                }
            )
    else:
        for i in range(engine.num_bindings):
            tensors.append(
                {
                    "name": engine.get_binding_name(i),
                    "is_input": bool(engine.binding_is_input(i)),
                    "shape": [int(d) for d in engine.get_binding_shape(i)],
                    "dtype": numpy.dtype(trt.nptype(engine.get_binding_dtype(i))).name,
                    "index": i,
                }
            )
    return tensors


def trt_max_batch(engine, api, tensors):
    """The largest batch the engine's first optimization profile takes on its dynamic-batch inputs, None when no input
    has a dynamic batch. Profile shapes (min, opt, max): engine.get_tensor_profile_shape(name, 0) with named tensors
    (8.5+, 10.x), engine.get_profile_shape(0, binding) before."""
    limits = []
    for tensor in tensors:
        if tensor["is_input"] and tensor["shape"] and tensor["shape"][0] < 0:
            if api == "tensors":
                shapes = engine.get_tensor_profile_shape(tensor["name"], 0)
            else:
                shapes = engine.get_profile_shape(0, tensor["index"])
            limits.append(int(shapes[2][0]))
    return min(limits) if limits else None


class PyCuda(object):
    """Device memory through pycuda (JetPack 4 images usually have it): pycuda.autoinit makes a context on GPU 0."""

    name = "pycuda"

    def __init__(self):
        import pycuda.driver as driver

        try:
            import pycuda.autoinit  # noqa: F401  (creates and pushes the context TensorRT then uses)
        except Exception as exc:  # pycuda raises its own LogicError/RuntimeError without a usable GPU
            raise AgentError("pycuda cannot open a CUDA context: %s" % first_line(exc), "missing_runtime") from None
        self.driver = driver
        self.stream = driver.Stream()
        self.stream_handle = self.stream.handle

    def malloc(self, nbytes):
        allocation = self.driver.mem_alloc(max(1, nbytes))
        return int(allocation), allocation

    def free(self, handle):
        handle.free()

    def to_device(self, pointer, array):
        self.driver.memcpy_htod(pointer, array)

    def to_host(self, array, pointer):
        self.driver.memcpy_dtoh(array, pointer)

    def synchronize(self):
        self.stream.synchronize()


class CudaPython(object):
    """Device memory through NVIDIA's cuda-python runtime bindings (cuda.bindings.runtime; cuda.cudart before 12.6).
    Every call returns (error, value...); an error becomes an AgentError naming it."""

    name = "cuda-python"

    def __init__(self):
        self.rt = _cudart()
        count = self._check(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if not count:
            raise AgentError("cuda-python sees no CUDA device", "missing_runtime")
        self.stream = self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self.stream_handle = int(self.stream)

    def _check(self, result, call):
        error, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if error != self.rt.cudaError_t.cudaSuccess:
            raise AgentError("CUDA %s failed: %s" % (call, getattr(error, "name", error)), "missing_runtime")
        return values[0] if len(values) == 1 else (values or None)

    def malloc(self, nbytes):
        pointer = self._check(self.rt.cudaMalloc(max(1, nbytes)), "cudaMalloc")
        return int(pointer), pointer

    def free(self, handle):
        self._check(self.rt.cudaFree(handle), "cudaFree")

    def to_device(self, pointer, array):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpy(pointer, array.ctypes.data, array.nbytes, kind), "cudaMemcpy")

    def to_host(self, array, pointer):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpy(array.ctypes.data, pointer, array.nbytes, kind), "cudaMemcpy")

    def synchronize(self):
        self._check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")


def _cudart():
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return importlib.import_module("cuda.cudart")


CUDA_BINDINGS = (("pycuda", "pycuda.driver", PyCuda), ("cuda-python", None, CudaPython))


def cuda_binding_available():
    """The name of the first CUDA binding that imports (without opening a context), or None."""
    for name, module, _ in CUDA_BINDINGS:
        try:
            importlib.import_module(module) if module else _cudart()
            return name
        except ImportError:
            continue
    return None


def open_cuda():
    """The first CUDA binding that imports, ready to allocate: pycuda, then cuda-python."""
    reasons = []
    for name, module, binding in CUDA_BINDINGS:
        try:
            importlib.import_module(module) if module else _cudart()
        except ImportError as exc:
            reasons.append("%s: %s" % (name, first_line(exc)))
            continue
        return binding()
    raise AgentError(
        "TensorRT needs pycuda or cuda-python to move tensors to the GPU (%s; %s)" % (CUDA_HOW, "; ".join(reasons)),
        "missing_runtime",
    )


class TensorRtSession(object):
    """A serialized TensorRT engine built on this device. Timings include the host<->device copies of inputs and
    outputs, as an application pays them. `threads` does not apply (the GPU runs it)."""

    name = "tensorrt"

    def __init__(self, path, threads, precision=None):
        no_precision_hint(self.name, precision)
        trt = import_runtime("tensorrt", TRT_HOW)
        cuda = open_cuda()
        self.logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as handle:
            plan = handle.read()
        engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan)
        if engine is None:
            raise AgentError(
                "TensorRT %s cannot load %s: an engine runs only with the TensorRT version and GPU that "
                "built it; rebuild it on this device (build-engine)" % (trt.__version__, path)
            )
        self.attach(trt, engine, cuda)

    def attach(self, trt, engine, cuda):
        """Take a deserialized engine: its execution context, API generation and tensors."""
        self.trt, self.engine, self.cuda = trt, engine, cuda
        self.context = self.engine.create_execution_context()
        self.api = trt_io_api(self.engine)
        self.tensors = trt_io_tensors(trt, self.engine, self.api)
        self.inputs = [
            (t["name"], [d if d >= 0 else None for d in t["shape"]], t["dtype"]) for t in self.tensors if t["is_input"]
        ]
        self.output_names = [t["name"] for t in self.tensors if not t["is_input"]]
        self.buffers = {}  # name -> (nbytes, pointer, handle)
        self.max_batch = trt_max_batch(self.engine, self.api, self.tensors)

    @staticmethod
    def version():
        return import_runtime("tensorrt", TRT_HOW).__version__

    @staticmethod
    def providers():
        return []

    def _buffer(self, name, nbytes):
        held = self.buffers.get(name)
        if held is None or held[0] < nbytes:
            if held is not None:
                self.cuda.free(held[2])
            pointer, handle = self.cuda.malloc(nbytes)
            held = self.buffers[name] = (nbytes, pointer, handle)
        return held[1]

    def _set_shape(self, tensor, shape):
        """Dynamic inputs get this call's shape; fixed ones must already have it."""
        engine_shape = tensor["shape"]
        if all(d >= 0 for d in engine_shape):
            if list(shape) != engine_shape:
                raise AgentError(
                    "input %s has shape %s; the engine takes %s" % (tensor["name"], list(shape), engine_shape)
                )
            return
        if self.api == "tensors":
            ok = self.context.set_input_shape(tensor["name"], tuple(shape))
        else:
            ok = self.context.set_binding_shape(tensor["index"], tuple(shape))
        if ok is False:
            raise AgentError(
                "input %s: shape %s is outside the engine's optimization profile" % (tensor["name"], list(shape))
            )

    def run(self, feeds):
        """Outputs for `feeds`; a batch larger than the engine's optimization profile allows runs in chunks."""
        import numpy

        batch = max([len(v) for v in feeds.values() if getattr(v, "ndim", 0)] or [0])
        if not self.max_batch or batch <= self.max_batch:
            return self._run_once(feeds)
        chunks = [
            self._run_once({k: v[i : i + self.max_batch] for k, v in feeds.items()})
            for i in range(0, batch, self.max_batch)
        ]
        return {name: numpy.concatenate([c[name] for c in chunks]) for name in chunks[0]}

    def _run_once(self, feeds):
        import numpy

        arrays = {}
        for tensor in self.tensors:
            if tensor["is_input"]:
                if tensor["name"] not in feeds:
                    raise AgentError("input %s is missing" % tensor["name"])
                arrays[tensor["name"]] = numpy.ascontiguousarray(feeds[tensor["name"]], dtype=tensor["dtype"])
        for tensor in self.tensors:
            if tensor["is_input"]:
                self._set_shape(tensor, arrays[tensor["name"]].shape)
        if self.api == "tensors":
            shape_of = lambda t: tuple(self.context.get_tensor_shape(t["name"]))
        else:
            shape_of = lambda t: tuple(self.context.get_binding_shape(t["index"]))
        outputs, pointers = {}, {}
        for tensor in self.tensors:
            if not tensor["is_input"]:
                outputs[tensor["name"]] = numpy.empty(shape_of(tensor), dtype=tensor["dtype"])
            value = arrays.get(tensor["name"], outputs.get(tensor["name"]))
            pointers[tensor["name"]] = self._buffer(tensor["name"], value.nbytes)
        for name, array in arrays.items():
            self.cuda.to_device(pointers[name], array)
        if self.api == "tensors":
            for name, pointer in pointers.items():
                self.context.set_tensor_address(name, pointer)
            ok = self.context.execute_async_v3(self.cuda.stream_handle)
        else:
            bindings = [0] * len(self.tensors)
            for tensor in self.tensors:
                bindings[tensor["index"]] = pointers[tensor["name"]]
            ok = self.context.execute_v2(bindings)
        if not ok:
            raise AgentError("TensorRT execution failed (see the agent's stderr for TensorRT's log)", "internal")
        self.cuda.synchronize()
        for name, array in outputs.items():
            self.cuda.to_host(array, pointers[name])
        return outputs


# --- TensorRT: building an engine on the device ------------------------------------------------------------------
# Builder API (TensorRT Python API, Core/Builder.html, BuilderConfig.html, Parsers/Onnx): trt.Builder(logger),
# builder.create_network(flags), trt.OnnxParser(network, logger).parse_from_file / parse, get_error(i)/num_errors,
# builder.create_builder_config(), config.set_flag(trt.BuilderFlag.FP16 | INT8), config.int8_calibrator,
# builder.create_optimization_profile() + profile.set_shape(name, min, opt, max) + config.add_optimization_profile,
# config.set_calibration_profile, builder.build_serialized_network(network, config) (8.0+; build_engine before, removed in
# 10.0), engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON) (8.2+, per-layer
# formats with config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED).

BUILD_PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CALIBRATION_BATCH = 8


def check_build_args(args):
    """The build-engine request checked and completed: {onnx, precision, out, workspace_bytes, calibration (None or
    {path, kind: npy_dir | npy_file | cache, cache, batch}), batch}."""
    onnx = args.get("onnx")
    if not onnx or not os.path.isfile(onnx):
        raise AgentError("ONNX file not found on the device: %s" % onnx)
    precision = args.get("precision") or "fp32"
    if precision not in BUILD_PRECISIONS:
        raise AgentError("precision %r is not one of %s" % (precision, ", ".join(BUILD_PRECISIONS)))
    out = args.get("out") or "%s.%s.engine" % (os.path.splitext(onnx)[0], precision)
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise AgentError("the engine's directory does not exist on the device: %s" % os.path.dirname(out))
    workspace_mb = args.get("workspace_mb")
    if workspace_mb is not None and (not isinstance(workspace_mb, int) or workspace_mb <= 0):
        raise AgentError("workspace_mb must be a positive integer (MiB), got %r" % (workspace_mb,))
    batch = args.get("batch") or 1
    if not isinstance(batch, int) or batch < 1:
        raise AgentError("batch must be a positive integer, got %r" % (batch,))
    calibration = args.get("calibration")
    if precision != "int8":
        if calibration:
            raise AgentError("calibration applies to int8 builds only (precision is %s)" % precision)
        calibration = None
    else:
        if not calibration:
            raise AgentError(
                "an int8 build needs calibration: a directory of .npy batches, an .npy file of samples, "
                "or the calibration cache of an earlier build"
            )
        kind = calibration_kind(calibration)
        calibration_batch = args.get("calibration_batch")  # None: the network's fixed batch, else 8
        if calibration_batch is not None and (not isinstance(calibration_batch, int) or calibration_batch < 1):
            raise AgentError("calibration_batch must be a positive integer, got %r" % (calibration_batch,))
        cache = calibration if kind == "cache" else (args.get("calibration_cache") or out + ".calib")
        calibration = {"path": calibration, "kind": kind, "cache": cache, "batch": calibration_batch}
    float_layers = args.get("float_layers") or []
    if float_layers and precision == "fp32":
        raise AgentError("float_layers keeps layers of an fp16/int8 build in fp32; this build is fp32 already")
    if not isinstance(float_layers, list) or not all(isinstance(n, str) and n for n in float_layers):
        raise AgentError("float_layers must be a list of layer names (the ONNX node names), got %r" % (float_layers,))
    return {
        "onnx": onnx,
        "precision": precision,
        "out": out,
        "batch": batch,
        "calibration": calibration,
        "workspace_bytes": None if workspace_mb is None else workspace_mb << 20,
        "float_layers": float_layers,
    }


def calibration_kind(path):
    """npy_dir (one .npy per batch), npy_file (samples stacked on the first axis) or cache (TensorRT's calibration
    cache from an earlier build: read, not recomputed)."""
    if os.path.isdir(path):
        if not any(name.endswith(".npy") for name in os.listdir(path)):
            raise AgentError("calibration directory %s holds no .npy files" % path)
        return "npy_dir"
    if not os.path.isfile(path):
        raise AgentError("calibration data not found on the device: %s" % path)
    return "npy_file" if path.endswith(".npy") else "cache"


class CalibrationBatches(object):
    """float32 batches for int8 calibration, in order: each file of a directory is one batch (sorted by name; all the
    same shape), or an .npy of samples is cut into batches of `batch` samples (a last partial batch is left out, as
    TensorRT calibrates with one batch size)."""

    def __init__(self, path, kind, batch):
        import numpy

        self.numpy = numpy
        if kind == "npy_dir":
            self.files = [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".npy")]
            first = numpy.load(self.files[0], mmap_mode="r")
            self.shape, self.count, self.samples = tuple(first.shape), len(self.files), None
        else:
            self.files, self.samples = None, numpy.load(path, mmap_mode="r")
            if self.samples.ndim < 1 or len(self.samples) < batch:
                raise AgentError(
                    "calibration file %s holds %d samples, fewer than one batch of %d"
                    % (path, len(self.samples) if self.samples.ndim else 0, batch)
                )
            self.shape = (batch,) + tuple(self.samples.shape[1:])
            self.count = len(self.samples) // batch
        if not self.shape:
            raise AgentError("calibration batches must have a batch axis (got a scalar in %s)" % path)
        self.batch_size = self.shape[0]
        self.used = 0

    def next(self):
        """The next batch as a C-contiguous float32 array, or None when all were given."""
        if self.used >= self.count:
            return None
        if self.files is not None:
            array = self.numpy.load(self.files[self.used])
            if tuple(array.shape) != self.shape:
                raise AgentError(
                    "calibration batch %s has shape %s, the first one %s"
                    % (self.files[self.used], list(array.shape), list(self.shape))
                )
        else:
            array = self.samples[self.used * self.batch_size : (self.used + 1) * self.batch_size]
        self.used += 1
        return self.numpy.ascontiguousarray(array, dtype=self.numpy.float32)


def check_calibration_shape(network_shape, batch_shape):
    """The calibration batch must fit the network input: same rank, equal wherever the network's dimension is fixed."""
    fits = len(network_shape) == len(batch_shape) and all(n < 0 or n == b for n, b in zip(network_shape, batch_shape))
    if not fits:
        raise AgentError(
            "calibration batches of shape %s do not fit the network input of shape %s (-1: dynamic)"
            % (list(batch_shape), list(network_shape))
        )


def read_calibration_cache(path):
    """The cache's bytes, or None (then TensorRT calibrates from the batches)."""
    if not path or not os.path.isfile(path) or os.path.getsize(path) == 0:
        return None
    with open(path, "rb") as handle:
        return handle.read()


def write_file_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.rename(tmp, path)


class CalibrationFeeder(object):
    """What the IInt8EntropyCalibrator2 subclass delegates to: copies each batch to one device buffer and hands TensorRT
    its pointer; reads the cache only when calibrating from a cache file, writes it after calibrating from batches.
    An error inside a TensorRT callback cannot propagate, so it is kept in `error` and reported after the build."""

    def __init__(self, batches, cuda, cache_path, read_cache):
        self.batches, self.cuda, self.cache_path, self.read_cache_file = batches, cuda, cache_path, read_cache
        self.batch_size = batches.batch_size if batches is not None else 1
        self.pointer, self.handle, self.error, self.given = None, None, None, 0

    def get_batch(self, names):
        if self.batches is None:
            return None
        try:
            if len(names) != 1:
                raise AgentError(
                    "int8 calibration from .npy feeds one input; the network has %d (%s)"
                    % (len(names), ", ".join(names))
                )
            array = self.batches.next()
            if array is None:
                return None
            if self.pointer is None:
                self.pointer, self.handle = self.cuda.malloc(array.nbytes)
            self.cuda.to_device(self.pointer, array)
            self.given += 1
            return [self.pointer]
        except Exception as exc:
            self.error = exc
            return None

    def read_cache(self):
        return read_calibration_cache(self.cache_path) if self.read_cache_file else None

    def write_cache(self, cache):
        try:
            write_file_atomically(self.cache_path, bytes(cache))
        except Exception as exc:
            self.error = exc


def make_entropy_calibrator(trt, feeder):
    """An IInt8EntropyCalibrator2 (TensorRT Python API, Int8/EntropyCalibrator2.html: get_batch_size, get_batch(names),
    read_calibration_cache, write_calibration_cache) delegating to `feeder`."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self):
            return feeder.batch_size

        def get_batch(self, names, *rest):
            return feeder.get_batch(names)

        def read_calibration_cache(self, *rest):
            return feeder.read_cache()

        def write_calibration_cache(self, cache, *rest):
            feeder.write_cache(cache)

    return EntropyCalibrator()


def trt_network_flags(trt):
    """create_network's flags: 1 << EXPLICIT_BATCH, which ONNX needs in TensorRT 7/8; TensorRT 10 has only explicit
    batch and deprecated the flag, so 0 there."""
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "EXPLICIT_BATCH", None)
    if flag is None or trt_major(trt.__version__) >= 10:
        return 0
    return 1 << int(flag)


def trt_set_workspace(trt, builder, config, nbytes):
    """Cap the builder's scratch memory; returns which API did it. config.set_memory_pool_limit(MemoryPoolType.WORKSPACE)
    exists since 8.4 and is the only one in 10.x; config.max_workspace_size before (deprecated 8.4, removed 10.0);
    builder.max_workspace_size in the implicit-batch era (removed 8.0)."""
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
        return "config.set_memory_pool_limit"
    if hasattr(config, "max_workspace_size"):
        config.max_workspace_size = nbytes
        return "config.max_workspace_size"
    builder.max_workspace_size = nbytes
    return "builder.max_workspace_size"


def trt_serialize(builder, network, config):
    """The serialized engine (bytes-like), or None when the build failed."""
    if hasattr(builder, "build_serialized_network"):  # 8.0+, the only way in 10.x
        return builder.build_serialized_network(network, config)
    engine = builder.build_engine(network, config)  # 7.x
    return None if engine is None else engine.serialize()


def trt_keep_float(trt, network, config, names):
    """Mixed precision: the named network layers (the ONNX parser names them after their ONNX nodes) compute and
    output fp32 (ILayer.precision, set_output_type), and the builder must obey it: BuilderFlag.OBEY_PRECISION_CONSTRAINTS
    (8.2+), STRICT_TYPES before (removed in 10.0). Returns the flag used; an unknown name is an error."""
    wanted, found = set(names), set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in wanted:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            found.add(layer.name)
    missing = sorted(wanted - found)
    if missing:
        raise AgentError(
            "float_layers not in the network: %s (TensorRT names layers after the ONNX nodes)" % ", ".join(missing[:5])
        )
    flag = "OBEY_PRECISION_CONSTRAINTS" if hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS") else "STRICT_TYPES"
    config.set_flag(getattr(trt.BuilderFlag, flag))
    return flag


def default_calibration_batch(shapes):
    """The network's batch when its first axis is fixed (all inputs agree), else DEFAULT_CALIBRATION_BATCH."""
    fixed = {shape[0] for shape in shapes if shape and shape[0] > 0}
    return fixed.pop() if len(fixed) == 1 else DEFAULT_CALIBRATION_BATCH


def _fixed_profile(builder, shapes, batch):
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        fixed = fixed_shape(shape, batch)
        profile.set_shape(name, fixed, fixed, fixed)
    return profile


def fixed_shape(shape, batch):
    """A dynamic input's build shape: a dynamic first axis becomes `batch`; any other dynamic axis is an error."""
    if any(d < 0 for d in shape[1:]):
        raise AgentError(
            "input shape %s has dynamic dimensions besides the batch; export the ONNX with fixed ones" % list(shape)
        )
    return [batch if (i == 0 and d < 0) else d for i, d in enumerate(shape)]


_FORMAT_PRECISIONS = (
    ("int8", "int8"),
    ("fp16", "fp16"),
    ("half", "fp16"),
    ("bf16", "bf16"),
    ("fp8", "fp8"),
    ("fp32", "fp32"),
    ("float", "fp32"),
    ("int32", "int32"),
    ("int64", "int64"),
    ("bool", "bool"),
)


def format_precision(text):
    """The data type in an engine inspector "Format/Datatype" ("Row major linear FP32 format", "Thirty-two wide
    channel vectorized row major Int8 format.", "Half", "Float"); None when it names none ("N/A due to dynamic shapes")."""
    words = text.lower().replace(".", " ").split()
    for token, precision in _FORMAT_PRECISIONS:
        if token in words:
            return precision
    return None


def trt_layer_precisions(info_json):
    """[{name, type, precision}] from the engine inspector's JSON; precision is the output tensors' data type(s)
    ("fp16", "int8", "fp16+fp32"), None where the inspector did not say (engines built without DETAILED verbosity list
    layer names only)."""
    layers = json.loads(info_json).get("Layers", [])
    found = []
    for layer in layers:
        if not isinstance(layer, dict):
            found.append({"name": str(layer), "type": None, "precision": None})
            continue
        precisions = sorted(
            {
                p
                for p in (
                    format_precision(str(t.get("Format/Datatype", "")))
                    for t in layer.get("Outputs", [])
                    if isinstance(t, dict)
                )
                if p
            }
        )
        found.append(
            {"name": layer.get("Name"), "type": layer.get("LayerType"), "precision": "+".join(precisions) or None}
        )
    return found


def _trt_logger(trt):
    """TensorRT's warnings and errors to the agent's stderr; errors are also kept for the reply."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity, message):
            if severity in (trt.Logger.ERROR, trt.Logger.INTERNAL_ERROR):
                self.errors.append(str(message))
            if severity in (trt.Logger.ERROR, trt.Logger.INTERNAL_ERROR, trt.Logger.WARNING):
                sys.stderr.write("[TensorRT] %s\n" % message)

    return Logger()


def build_engine(args, heartbeat=None):
    """build-engine: ONNX -> serialized TensorRT engine at `out`, built by this device's TensorRT."""
    spec = check_build_args(args)
    calibration, batches = spec["calibration"], None
    trt = import_runtime("tensorrt", TRT_HOW)
    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(trt_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if hasattr(parser, "parse_from_file"):  # resolves external weight files beside the .onnx
        parsed = parser.parse_from_file(spec["onnx"])
    else:
        with open(spec["onnx"], "rb") as handle:
            parsed = parser.parse(handle.read())
    if not parsed:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise AgentError("TensorRT's ONNX parser rejected %s: %s" % (spec["onnx"], "; ".join(errors)[:600]))
    config = builder.create_builder_config()
    workspace_api = None
    if spec["workspace_bytes"] is not None:
        workspace_api = trt_set_workspace(trt, builder, config, spec["workspace_bytes"])
    verbosity = getattr(trt, "ProfilingVerbosity", None)
    if verbosity is not None and hasattr(verbosity, "DETAILED"):
        config.profiling_verbosity = verbosity.DETAILED
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    shapes = {t.name: [int(d) for d in t.shape] for t in inputs}
    if calibration is not None and calibration["kind"] != "cache":
        batches = CalibrationBatches(
            calibration["path"],
            calibration["kind"],
            calibration["batch"] or default_calibration_batch(list(shapes.values())),
        )
        for shape in shapes.values():
            check_calibration_shape(shape, batches.shape)
    if any(d < 0 for shape in shapes.values() for d in shape):
        config.add_optimization_profile(_fixed_profile(builder, shapes, spec["batch"]))
        if batches is not None and hasattr(config, "set_calibration_profile"):
            config.set_calibration_profile(_fixed_profile(builder, shapes, batches.batch_size))
    notes = []
    if spec["precision"] == "fp16":
        if not builder.platform_has_fast_fp16:
            notes.append("this GPU has no fast fp16; TensorRT may keep layers in fp32")
        config.set_flag(trt.BuilderFlag.FP16)
    feeder = None
    if spec["precision"] == "int8":
        if not builder.platform_has_fast_int8:
            notes.append("this GPU has no fast int8; TensorRT may keep layers in higher precision")
        feeder = CalibrationFeeder(
            batches,
            open_cuda() if batches is not None else None,
            calibration["cache"],
            read_cache=calibration["kind"] == "cache",
        )
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_entropy_calibrator(trt, feeder)
    precision_flag = trt_keep_float(trt, network, config, spec["float_layers"]) if spec["float_layers"] else None
    started = time.perf_counter()
    stop = _heartbeat(heartbeat)
    try:
        plan = trt_serialize(builder, network, config)
    finally:
        stop()
    build_s = time.perf_counter() - started
    if feeder is not None and feeder.error is not None:
        raise AgentError("int8 calibration failed: %s" % first_line(feeder.error))
    if plan is None:
        raise AgentError(
            "TensorRT could not build the engine: %s"
            % ("; ".join(logger.errors[-3:]) or "see the agent's stderr for TensorRT's log")
        )
    write_file_atomically(spec["out"], bytes(memoryview(plan)))
    result = {
        "engine": spec["out"],
        "tensorrt_version": trt.__version__,
        "build_s": build_s,
        "precision": spec["precision"],
        "workspace_api": workspace_api,
        "input_shapes": shapes,
        "notes": notes,
        "calibration": None,
        "layers": None,
        "layers_note": None,
        "float_layers": spec["float_layers"],
        "precision_flag": precision_flag,
    }
    if feeder is not None:
        result["calibration"] = {
            "kind": calibration["kind"],
            "cache": calibration["cache"],
            "batches": feeder.given,
            "batch_size": feeder.batch_size,
        }
    engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(memoryview(plan)))
    if engine is not None and hasattr(engine, "create_engine_inspector"):
        info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        result["layers"] = trt_layer_precisions(info)
    else:
        result["layers_note"] = "TensorRT %s has no engine inspector (8.2+)" % trt.__version__
    return result


def _heartbeat(beat, every_s=20.0):
    """Call beat(elapsed_s) every `every_s` on a thread until the returned stop() is called; a long build then still
    shows the host it is alive."""
    if beat is None:
        return lambda: None
    done, started = threading.Event(), time.perf_counter()

    def loop():
        while not done.wait(every_s):
            beat(int(time.perf_counter() - started))

    thread = threading.Thread(target=loop)
    thread.daemon = True
    thread.start()

    def stop():
        done.set()
        thread.join(timeout=5)

    return stop
