"""Running a serialized TensorRT engine in the agent (the `tensorrt` runtime of targets/agent.py): engine I/O across
TensorRT's two Python API generations, and the session that times it.

Python >= 3.6, standard library + numpy + TensorRT + a CUDA binding (agent_trt_cuda.py). What surrounds TensorRT (API
detection, tensor listing, profile limits) is a plain function here, testable without TensorRT.
"""

import sys

from agent_runtimes import AgentError, import_runtime, no_precision_hint
from agent_trt_cuda import open_cuda

# Engines are built ON the device (agent_trt_builder.py): an engine only runs on the GPU model and TensorRT version that
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


def trt_logger(trt):
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


class TensorRtSession(object):
    """A serialized TensorRT engine built on this device. Timings include the host<->device copies of inputs and
    outputs, as an application pays them. `threads` does not apply (the GPU runs it)."""

    name = "tensorrt"

    def __init__(self, path, threads, precision=None):
        no_precision_hint(self.name, precision)
        trt = import_runtime("tensorrt", TRT_HOW)
        cuda = open_cuda()
        logger = trt_logger(trt)
        with open(path, "rb") as handle:
            plan = handle.read()
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        if engine is None:
            raise AgentError(
                "TensorRT %s cannot load %s: an engine runs only with the TensorRT version and GPU that "
                "built it; rebuild it on this device (build-engine)" % (trt.__version__, path)
            )
        self.attach(trt, engine, cuda, logger)

    def attach(self, trt, engine, cuda, logger=None):
        """Take a deserialized engine: its execution context, API generation and tensors. `logger` (trt_logger) keeps
        TensorRT's errors for the reply when an execution fails."""
        self.trt, self.engine, self.cuda, self.logger = trt, engine, cuda, logger
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
            # inputs were checked above: a failed execution is the device's GPU, driver or TensorRT, not a wrong input
            errors = self.logger.errors[-3:] if self.logger is not None else []
            raise AgentError(
                "TensorRT execution failed on the device: %s"
                % ("; ".join(errors) or "see the agent's stderr for TensorRT's log"),
                "missing_runtime",
            )
        self.cuda.synchronize()
        for name, array in outputs.items():
            self.cuda.to_host(array, pointers[name])
        return outputs
