"""Runtimes of edgeprune's on-device agent (targets/agent.py): ONNX Runtime, OpenVINO and TFLite sessions, and what
every session and the agent share (AgentError). TensorRT is in agent_trt_{cuda,runner,calibrator,builder}.py.

Runs ON the device with Python >= 3.6, the standard library, numpy and the device's runtime: no f-string `=`, no
dataclasses, no walrus. A session has: name, version(), providers(), inputs [(name, shape with None where dynamic,
dtype the caller sends)], output_names and run({name: array}) -> {name: array}; it imports its runtime lazily and
says how to install it when it is missing.
"""

import importlib


class AgentError(Exception):
    """A request the agent answers with ok=false. `error_type`: bad_request (the request cannot be served as asked),
    missing_runtime (the device's runtime, CUDA or driver is absent or failed: a device fault) or internal (a bug in
    the agent). The host shows the first two as one-line device errors, internal as a bug with the traceback."""

    def __init__(self, message, error_type="bad_request"):
        Exception.__init__(self, message)
        self.error_type = error_type


def first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def import_runtime(module, how):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise AgentError("%s is not installed on this device (%s)" % (module, how), "missing_runtime") from None


def no_precision_hint(runtime, precision):
    """Runtimes whose precision is fixed in the model file take no precision hint; refuse one rather than ignore it."""
    if precision is not None:
        raise AgentError(
            "runtime %s takes its precision from the model file; precision %r applies to openvino only"
            % (runtime, precision)
        )


class OnnxRuntimeSession(object):
    name = "onnxruntime"

    def __init__(self, path, threads, precision=None):
        no_precision_hint(self.name, precision)
        ort = import_runtime("onnxruntime", "pip install onnxruntime (or onnxruntime-gpu on Jetson)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for unreadable models
            raise AgentError("onnxruntime cannot load %s: %s" % (path, first_line(exc))) from None
        self.inputs = [(i.name, i.shape, _ORT_DTYPES.get(i.type, "float32")) for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def version():
        return import_runtime("onnxruntime", "pip install onnxruntime").__version__

    @staticmethod
    def providers():
        return list(import_runtime("onnxruntime", "pip install onnxruntime").get_available_providers())

    def run(self, feeds):
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}

# request precision -> OpenVINO's INFERENCE_PRECISION_HINT
OPENVINO_PRECISIONS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
_OV_DTYPES = {
    "f32": "float32",
    "f16": "float16",
    "f64": "float64",
    "i64": "int64",
    "i32": "int32",
    "u8": "uint8",
    "i8": "int8",
    "boolean": "bool",
}


def _openvino():
    """The openvino module and its Core class (openvino.Core since 2023.1, openvino.runtime.Core in 2022.x)."""
    ov = import_runtime("openvino", "pip install openvino")
    core = getattr(ov, "Core", None)
    if core is None:
        core = import_runtime("openvino.runtime", "pip install openvino").Core
    return ov, core


class OpenVinoSession(object):
    """OpenVINO on the CPU: an IR (.xml with its .bin beside it) or an .onnx, read by Core.read_model.

    Compiled with INFERENCE_PRECISION_HINT f32 unless the request asks for fp16 or bf16: on CPUs with AVX-512 BF16 or
    AMX, OpenVINO's default is bf16, which changes the results (resnet18 by 7.5e-3 max-abs). An int8 IR keeps its
    quantized layers in int8 under any hint; the hint sets the precision of the rest. Threads: INFERENCE_NUM_THREADS,
    one stream, PERFORMANCE_HINT LATENCY."""

    name = "openvino"

    def __init__(self, path, threads, precision=None):
        precision = precision or "fp32"
        if precision not in OPENVINO_PRECISIONS:
            raise AgentError(
                "openvino precision %r is not one of %s (an int8 IR runs int8 under fp32: its quantization "
                "is in the model)" % (precision, ", ".join(sorted(OPENVINO_PRECISIONS)))
            )
        _, core_class = _openvino()
        core = core_class()
        config = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
            "INFERENCE_NUM_THREADS": str(threads),
            "NUM_STREAMS": "1",
            "PERFORMANCE_HINT": "LATENCY",
        }
        try:
            self.compiled = core.compile_model(core.read_model(path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise AgentError("openvino cannot load %s: %s" % (path, first_line(exc))) from None
        self.request = self.compiled.create_infer_request()
        self.precision = precision
        self.inputs = [
            (_ov_name(p, "input%d" % i), _ov_shape(p), _ov_dtype(p)) for i, p in enumerate(self.compiled.inputs)
        ]
        self.output_names = [_ov_name(p, "output%d" % i) for i, p in enumerate(self.compiled.outputs)]
        self._index = {name: i for i, (name, _, _) in enumerate(self.inputs)}

    @staticmethod
    def version():
        ov, _ = _openvino()
        return getattr(ov, "__version__", None) or import_runtime("openvino.runtime", "").get_version()

    @staticmethod
    def providers():
        _, core_class = _openvino()
        return list(core_class().available_devices)

    def run(self, feeds):
        self.request.infer({self._index[name]: value for name, value in feeds.items()})
        return {name: self.request.get_output_tensor(i).data.copy() for i, name in enumerate(self.output_names)}


def _ov_name(port, fallback):
    names = sorted(port.get_names()) if hasattr(port, "get_names") else []
    return names[0] if names else fallback  # outputs converted from PyTorch often carry no name


def _ov_shape(port):
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


def _ov_dtype(port):
    return _OV_DTYPES.get(port.get_element_type().get_type_name(), "float32")


# The TFLite interpreters, first found wins: LiteRT (ai-edge-litert, the successor of tflite-runtime, XNNPACK by
# default), tflite-runtime (Python < 3.12 devices; dead on numpy 2), then TensorFlow's tf.lite.
_TFLITE_MODULES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow"),
)
_TFLITE_HOW = "pip install ai-edge-litert (or tflite-runtime on older Pythons)"


def _tflite():
    """(package, Interpreter class, version) of the first TFLite interpreter that imports."""
    reasons = []
    for package, module in _TFLITE_MODULES:
        try:
            imported = importlib.import_module(module)
            interpreter = imported.lite.Interpreter if package == "tensorflow" else imported.Interpreter
        except (ImportError, AttributeError) as exc:
            reasons.append("%s: %s" % (package, first_line(exc)))
            continue
        version = getattr(importlib.import_module(package), "__version__", "unknown")
        return package, interpreter, version
    raise AgentError(
        "no TFLite interpreter is installed on this device (%s; tried %s)" % (_TFLITE_HOW, "; ".join(reasons)),
        "missing_runtime",
    )


def quantize(values, scale, zero_point, dtype):
    """float -> integer tensor: q = round(x / scale) + zero_point, clipped to the type's range (TFLite's affine scheme)."""
    import numpy

    info = numpy.iinfo(dtype)
    q = numpy.round(numpy.asarray(values, dtype=numpy.float32) / scale) + zero_point
    return numpy.clip(q, info.min, info.max).astype(dtype)


def dequantize(values, scale, zero_point):
    """integer -> float32 tensor: x = (q - zero_point) * scale."""
    import numpy

    return ((numpy.asarray(values).astype(numpy.float32) - zero_point) * scale).astype(numpy.float32)


def tflite_quantization(detail):
    """(scale, zero_point) of a quantized integer tensor from its interpreter detail, None for anything else. Per-channel
    parameters on a model input or output are refused: callers could not know which channel a scale belongs to."""
    import numpy

    dtype = numpy.dtype(detail["dtype"])
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if dtype.kind not in "iu" or not scale:
        return None
    scales = detail.get("quantization_parameters", {}).get("scales")
    if scales is not None and len(scales) > 1:
        raise AgentError(
            "tensor %s is quantized per channel (%d scales); only per-tensor quantized inputs and outputs "
            "can be converted from/to float32" % (detail["name"], len(scales))
        )
    return float(scale), int(zero_point)


class TfliteSession(object):
    """A .tflite on the device's TFLite interpreter (LiteRT first), `threads` CPU threads, XNNPACK as the interpreter's
    default delegate.

    Callers always send and receive float32 for quantized tensors: an int8/uint8/int16 input is quantized with its
    tensor's (scale, zero_point) and such an output dequantized (`quantize`, `dequantize` above); float models pass
    through as they are. Inputs are named by tensor name (get_input_details()["name"]); the agent's `run` also takes
    an input's position ("0", "1", ...) for its name."""

    name = "tflite"

    def __init__(self, path, threads, precision=None):
        no_precision_hint(self.name, precision)
        self.package, interpreter_class, _ = _tflite()
        try:
            self.interpreter = interpreter_class(model_path=path, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise AgentError("tflite cannot load %s: %s" % (path, first_line(exc))) from None
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self.quant_in = [tflite_quantization(d) for d in self.input_details]
        self.quant_out = [tflite_quantization(d) for d in self.output_details]
        self.inputs = [
            (d["name"], _tflite_shape(d), "float32" if q else _dtype_name(d["dtype"]))
            for d, q in zip(self.input_details, self.quant_in)
        ]
        self.output_names = [d["name"] for d in self.output_details]
        self.shapes = [list(d["shape"]) for d in self.input_details]  # as allocated now
        self.positions = {d["name"]: i for i, d in enumerate(self.input_details)}

    @staticmethod
    def version():
        package, _, version = _tflite()
        return "%s (%s)" % (version, package)

    @staticmethod
    def providers():
        return []

    def run(self, feeds):
        import numpy

        ready, resized = [], False
        for name, value in feeds.items():
            i = self.positions[name]
            detail = self.input_details[i]
            if self.quant_in[i]:
                value = quantize(value, self.quant_in[i][0], self.quant_in[i][1], detail["dtype"])
            else:
                value = numpy.ascontiguousarray(value, dtype=detail["dtype"])
            if list(value.shape) != self.shapes[i]:
                self.interpreter.resize_tensor_input(detail["index"], list(value.shape))
                self.shapes[i] = list(value.shape)
                resized = True
            ready.append((detail["index"], value))
        if resized:
            self.interpreter.allocate_tensors()
        for index, value in ready:
            self.interpreter.set_tensor(index, value)
        self.interpreter.invoke()
        outputs = {}
        for detail, quant in zip(self.output_details, self.quant_out):
            value = self.interpreter.get_tensor(detail["index"])
            outputs[detail["name"]] = dequantize(value, quant[0], quant[1]) if quant else value.copy()
        return outputs


def _tflite_shape(detail):
    shape = detail.get("shape_signature")
    if shape is None or not len(shape):
        shape = detail["shape"]
    return [int(d) if d >= 0 else None for d in shape]


def _dtype_name(dtype):
    import numpy

    return numpy.dtype(dtype).name
