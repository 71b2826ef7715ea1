"""CUDA device memory for the agent's TensorRT runner and calibrator: pycuda (JetPack 4 images usually have it) or
NVIDIA's cuda-python, whichever imports first. Both offer the same small interface: malloc, free, to_device, to_host,
synchronize, stream_handle.

Python >= 3.6, standard library + numpy + pycuda or cuda-python (see agent_runtimes.py for the rules).
"""

import importlib

from agent_runtimes import AgentError, first_line

CUDA_HOW = (
    "pip install pycuda (JetPack: sudo apt install python3-pycuda or pip3 install pycuda) or pip install cuda-python"
)


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
