"""TensorRT in the agent (targets/agent_trt_{cuda,runner,calibrator,builder}.py) on a machine without TensorRT or a GPU.

What surrounds TensorRT is plain code and tested as such: request checks, calibration batches from .npy, the
calibration cache, API-generation detection, engine-inspector parsing. Running and building are driven through
stand-ins that implement only the documented Python API of each generation (TensorRT 8.2's bindings, 10.x's named
tensors; docs.nvidia.com/deeplearning/tensorrt, Python API reference and the 8.x -> 10.x migration guide): a call
that exists only in the other generation fails with AttributeError. The real engine build needs TensorRT and a GPU
and is skipped here with that reason. cuda-python's error path is real (cuda-bindings comes with torch here)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from edgeprune._resources import resource_dir
from tests.standins.tensorrt_builder import fake_build_trt

sys.path.insert(0, str(resource_dir("targets")))
trt_cuda = importlib.import_module("agent_trt_cuda")
trt_runner = importlib.import_module("agent_trt_runner")
trt_calibrator = importlib.import_module("agent_trt_calibrator")
trt_builder = importlib.import_module("agent_trt_builder")
AgentError = importlib.import_module("agent_runtimes").AgentError


# --- stand-ins ------------------------------------------------------------------------------------------------------


class FakeCuda:
    """Device memory as host bytearrays keyed by a fake pointer."""

    name, stream_handle = "fake", 7

    def __init__(self):
        self.memory, self.next, self.freed, self.syncs = {}, 0x1000, [], 0

    def malloc(self, nbytes):
        pointer = self.next
        self.next += nbytes + 256
        self.memory[pointer] = bytearray(nbytes)
        return pointer, pointer

    def free(self, handle):
        self.freed.append(handle)
        del self.memory[handle]

    def to_device(self, pointer, array):
        self.memory[pointer][: array.nbytes] = array.tobytes()

    def to_host(self, array, pointer):
        array[...] = np.frombuffer(bytes(self.memory[pointer][: array.nbytes]), array.dtype).reshape(array.shape)

    def synchronize(self):
        self.syncs += 1

    def read(self, pointer, shape):
        return np.frombuffer(bytes(self.memory[pointer][: int(np.prod(shape)) * 4]), np.float32).reshape(shape)


def fake_trt(version):
    return SimpleNamespace(
        __version__=version,
        TensorIOMode=SimpleNamespace(INPUT="IN", OUTPUT="OUT"),
        nptype=lambda dt: {"FLOAT": np.float32, "HALF": np.float16}[dt],
    )


class _Doubler:
    """y = 2 x, input x and output y of shape (-1, 4)."""

    names = ("x", "y")

    def __init__(self, cuda):
        self.cuda = cuda

    def compute(self, x_pointer, y_pointer, shape):
        x = self.cuda.read(x_pointer, shape)
        self.cuda.to_device(y_pointer, (2 * x).astype(np.float32))


class TensorEngine(_Doubler):  # TensorRT 8.5+ / 10.x: named tensors only
    num_io_tensors = 2

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "IN" if name == "x" else "OUT"

    def get_tensor_shape(self, name):
        return (-1, 4)

    def get_tensor_dtype(self, name):
        return "FLOAT"

    def get_tensor_profile_shape(self, name, profile_index):
        return [(1, 4), (2, 4), (3, 4)]  # min, opt, max

    def create_execution_context(self):
        engine = self

        class Context:
            shapes, addresses = {}, {}

            def set_input_shape(self, name, shape):
                self.shapes["x"] = self.shapes["y"] = tuple(shape)
                return True

            def get_tensor_shape(self, name):
                return self.shapes[name]

            def set_tensor_address(self, name, pointer):
                self.addresses[name] = pointer

            def execute_async_v3(self, stream_handle):
                assert stream_handle == engine.cuda.stream_handle
                engine.compute(self.addresses["x"], self.addresses["y"], self.shapes["x"])
                return True

        return Context()


class BindingEngine(_Doubler):  # TensorRT 8.2 (JetPack 4): bindings only
    num_bindings = 2

    def get_binding_index(self, name):
        return self.names.index(name)

    def get_binding_name(self, i):
        return self.names[i]

    def binding_is_input(self, i):
        return i == 0

    def get_binding_shape(self, i):
        return (-1, 4)

    def get_binding_dtype(self, i):
        return "FLOAT"

    def get_profile_shape(self, profile_index, binding):
        return [(1, 4), (2, 4), (3, 4)]  # min, opt, max

    def create_execution_context(self):
        engine = self

        class Context:
            shapes = {}

            def set_binding_shape(self, i, shape):
                self.shapes[0] = self.shapes[1] = tuple(shape)
                return True

            def get_binding_shape(self, i):
                return self.shapes[i]

            def execute_v2(self, bindings):
                engine.compute(bindings[0], bindings[1], self.shapes[0])
                return True

        return Context()


# --- running an engine ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "engine_class, api, version", [(TensorEngine, "tensors", "10.3.0"), (BindingEngine, "bindings", "8.2.1.8")]
)
def test_session_runs_each_api_generation(engine_class, api, version):
    cuda = FakeCuda()
    session = trt_runner.TensorRtSession.__new__(trt_runner.TensorRtSession)
    session.attach(fake_trt(version), engine_class(cuda), cuda)
    assert session.api == api and session.inputs == [("x", [None, 4], "float32")] and session.output_names == ["y"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert np.array_equal(session.run({"x": x})["y"], 2 * x)
    assert session.max_batch == 3  # the optimization profile's max
    bigger = np.arange(20, dtype=np.float32).reshape(5, 4)  # over the profile: runs as 3 + 2
    assert np.array_equal(session.run({"x": bigger})["y"], 2 * bigger)
    assert len(cuda.freed) == 2 and cuda.syncs == 3  # both buffers grew once; each run waited for the GPU
    with pytest.raises(AgentError, match="input x is missing"):
        session.run({"z": x})


def test_a_failed_execution_is_a_device_fault_naming_tensorrts_errors():
    class FailingContext:
        def set_input_shape(self, name, shape):
            return True

        def get_tensor_shape(self, name):
            return (2, 4)

        def set_tensor_address(self, name, pointer):
            pass

        def execute_async_v3(self, stream_handle):
            return False  # what TensorRT returns when the GPU or driver fails the launch

    engine = TensorEngine(FakeCuda())
    engine.create_execution_context = FailingContext
    session = trt_runner.TensorRtSession.__new__(trt_runner.TensorRtSession)
    session.attach(fake_trt("10.3.0"), engine, engine.cuda, SimpleNamespace(errors=["CUDA runtime: launch failure"]))
    with pytest.raises(AgentError, match="execution failed on the device: CUDA runtime: launch failure") as failure:
        session.run({"x": np.zeros((2, 4), np.float32)})
    assert failure.value.error_type == "missing_runtime"  # a device fault (one-line DeviceError), not an agent bug


def test_api_detection_and_version_parsing():
    assert trt_runner.trt_io_api(TensorEngine(None)) == "tensors"
    assert trt_runner.trt_io_api(BindingEngine(None)) == "bindings"
    with pytest.raises(AgentError, match="neither num_io_tensors"):
        trt_runner.trt_io_api(object())
    assert trt_builder.trt_major("8.2.1.8") == 8 and trt_builder.trt_major("10.3.0") == 10
    with pytest.raises(AgentError, match="unreadable version 'dev'") as unreadable:
        trt_builder.trt_major("dev")
    assert unreadable.value.error_type == "missing_runtime"  # the device's TensorRT install, not an agent bug
    flag = SimpleNamespace(EXPLICIT_BATCH=0)
    assert trt_builder.trt_network_flags(SimpleNamespace(__version__="8.5.2", NetworkDefinitionCreationFlag=flag)) == 1
    assert trt_builder.trt_network_flags(SimpleNamespace(__version__="10.3.0", NetworkDefinitionCreationFlag=flag)) == 0


def test_workspace_and_serialization_pick_the_api_that_exists():
    pool = SimpleNamespace(WORKSPACE="ws")
    trt = SimpleNamespace(MemoryPoolType=pool)
    limits = {}
    modern = SimpleNamespace(set_memory_pool_limit=lambda kind, n: limits.update({kind: n}))
    assert trt_builder.trt_set_workspace(trt, None, modern, 1 << 28) == "config.set_memory_pool_limit"
    assert limits == {"ws": 1 << 28}
    old = SimpleNamespace(max_workspace_size=0)
    assert trt_builder.trt_set_workspace(trt, None, old, 1 << 20) == "config.max_workspace_size"
    assert old.max_workspace_size == 1 << 20
    builder = SimpleNamespace()
    assert trt_builder.trt_set_workspace(trt, builder, SimpleNamespace(), 5) == "builder.max_workspace_size"
    assert builder.max_workspace_size == 5
    assert (
        trt_builder.trt_serialize(SimpleNamespace(build_serialized_network=lambda n, c: b"plan"), None, None) == b"plan"
    )
    legacy = SimpleNamespace(build_engine=lambda n, c: SimpleNamespace(serialize=lambda: b"old"))
    assert trt_builder.trt_serialize(legacy, None, None) == b"old"
    assert trt_builder.trt_serialize(SimpleNamespace(build_serialized_network=lambda n, c: None), None, None) is None


def test_cuda_python_without_a_gpu_names_the_cuda_error():
    try:
        trt_cuda._cudart()
    except ImportError:
        pytest.skip("cuda-python (cuda-bindings) is not installed")
    try:
        runtime = trt_cuda._cudart()
        code, count = runtime.cudaGetDeviceCount()
        if code == runtime.cudaError_t.cudaSuccess and count:
            pytest.skip("a CUDA GPU is present")
    except Exception:
        pass
    with pytest.raises(AgentError, match=r"CUDA cudaGetDeviceCount failed: cudaError\w+|no CUDA device"):
        trt_cuda.CudaPython()
    if importlib.util.find_spec("pycuda") is None:  # open_cuda falls through to cuda-python, which has no GPU
        with pytest.raises(AgentError, match="cudaGetDeviceCount failed|no CUDA device"):
            trt_cuda.open_cuda()


# --- build-engine: requests and calibration -------------------------------------------------------------------------


@pytest.fixture
def onnx(tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(b"onnx")
    return str(path)


def test_build_requests_are_checked_before_tensorrt_loads(onnx, tmp_path):
    spec = trt_builder.check_build_args({"onnx": onnx, "precision": "fp16", "workspace_mb": 512})
    assert spec["out"] == str(tmp_path / "net.fp16.engine") and spec["workspace_bytes"] == 512 << 20
    assert spec["calibration"] is None and spec["batch"] == 1
    for args, message in [
        ({"onnx": str(tmp_path / "missing.onnx")}, "ONNX file not found on the device"),
        ({"onnx": onnx, "precision": "int4"}, "precision 'int4' is not one of fp32, fp16, int8"),
        ({"onnx": onnx, "precision": "int8"}, "an int8 build needs calibration"),
        ({"onnx": onnx, "precision": "fp16", "calibration": onnx}, "calibration applies to int8 builds only"),
        ({"onnx": onnx, "workspace_mb": 0}, "workspace_mb must be a positive integer"),
        ({"onnx": onnx, "workspace_mb": "1G"}, "workspace_mb must be a positive integer"),
        ({"onnx": onnx, "out": str(tmp_path / "no" / "x.engine")}, "the engine's directory does not exist"),
        ({"onnx": onnx, "precision": "int8", "calibration": str(tmp_path / "none.npy")}, "calibration data not found"),
        ({"onnx": onnx, "precision": "int8", "calibration": str(tmp_path)}, "holds no .npy files"),
    ]:
        with pytest.raises(AgentError, match=message):
            trt_builder.check_build_args(args)
    cache = tmp_path / "old.calib"
    cache.write_bytes(b"TRT-8201-EntropyCalibration2\n")
    spec = trt_builder.check_build_args({"onnx": onnx, "precision": "int8", "calibration": str(cache)})
    assert spec["calibration"] == {"path": str(cache), "kind": "cache", "cache": str(cache), "batch": None}
    np.save(tmp_path / "samples.npy", np.zeros((3, 2), np.float32))
    spec = trt_builder.check_build_args(
        {"onnx": onnx, "precision": "int8", "calibration": str(tmp_path / "samples.npy"), "calibration_batch": 2}
    )
    assert spec["calibration"]["kind"] == "npy_file" and spec["calibration"]["cache"] == spec["out"] + ".calib"


def test_calibration_batches_from_a_file_of_samples_and_from_a_directory(tmp_path):
    samples = np.random.default_rng(0).standard_normal((10, 3, 4, 4))  # float64 on purpose
    np.save(tmp_path / "samples.npy", samples)
    batches = trt_calibrator.CalibrationBatches(str(tmp_path / "samples.npy"), "npy_file", 4)
    assert (batches.shape, batches.count, batches.batch_size) == ((4, 3, 4, 4), 2, 4)  # 2 left over: not fed
    first, second = batches.next(), batches.next()
    assert first.dtype == np.float32 and first.flags["C_CONTIGUOUS"] and np.allclose(second, samples[4:8])
    assert batches.next() is None
    with pytest.raises(AgentError, match="holds 10 samples, fewer than one batch of 16"):
        trt_calibrator.CalibrationBatches(str(tmp_path / "samples.npy"), "npy_file", 16)
    folder = tmp_path / "batches"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"b{i}.npy", np.full((2, 3, 4, 4), i, np.float32))
    batches = trt_calibrator.CalibrationBatches(str(folder), "npy_dir", None)
    assert batches.batch_size == 2 and [float(batches.next()[0, 0, 0, 0]) for _ in range(3)] == [0.0, 1.0, 2.0]
    np.save(folder / "b3.npy", np.zeros((1, 3, 4, 4), np.float32))
    batches = trt_calibrator.CalibrationBatches(str(folder), "npy_dir", None)
    with pytest.raises(AgentError, match=r"b3.npy has shape \[1, 3, 4, 4\], the first one \[2, 3, 4, 4\]"):
        for _ in range(4):
            batches.next()
    trt_calibrator.check_calibration_shape([-1, 3, 4, 4], (2, 3, 4, 4))
    with pytest.raises(AgentError, match="do not fit the network input"):
        trt_calibrator.check_calibration_shape([1, 3, 4, 4], (2, 3, 4, 4))
    assert trt_calibrator.default_calibration_batch([[1, 3, 4, 4]]) == 1
    assert trt_calibrator.default_calibration_batch([[-1, 3, 4, 4]]) == trt_calibrator.DEFAULT_CALIBRATION_BATCH
    assert trt_builder.fixed_shape([-1, 3, 4, 4], 8) == [8, 3, 4, 4]
    with pytest.raises(AgentError, match="dynamic dimensions besides the batch"):
        trt_builder.fixed_shape([-1, 3, -1, -1], 8)


def test_calibration_feeder_and_cache(tmp_path):
    np.save(tmp_path / "samples.npy", np.ones((4, 2), np.float32))
    cuda, cache = FakeCuda(), str(tmp_path / "net.calib")
    feeder = trt_calibrator.CalibrationFeeder(
        trt_calibrator.CalibrationBatches(str(tmp_path / "samples.npy"), "npy_file", 2), cuda, cache, read_cache=False
    )
    assert feeder.read_cache() is None  # calibrating from data: never an old cache
    pointers = [feeder.get_batch(["x"]), feeder.get_batch(["x"]), feeder.get_batch(["x"])]
    assert pointers[0] == pointers[1] and pointers[2] is None and feeder.given == 2
    assert np.array_equal(cuda.read(pointers[0][0], (2, 2)), np.ones((2, 2)))
    feeder.write_cache(memoryview(b"scales"))
    assert trt_calibrator.read_calibration_cache(cache) == b"scales"
    assert trt_calibrator.CalibrationFeeder(None, None, cache, read_cache=True).read_cache() == b"scales"
    two_inputs = trt_calibrator.CalibrationFeeder(
        trt_calibrator.CalibrationBatches(str(tmp_path / "samples.npy"), "npy_file", 2), cuda, cache, read_cache=False
    )
    assert two_inputs.get_batch(["a", "b"]) is None and "feeds one input; the network has 2" in str(two_inputs.error)


def test_layer_precisions_from_the_engine_inspector():
    detailed = json.dumps(
        {
            "Layers": [
                {
                    "Name": "conv1 + relu",
                    "LayerType": "CaskConvolution",
                    "Outputs": [
                        {"Name": "a", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}
                    ],
                },
                {
                    "Name": "head",
                    "LayerType": "CaskGemm",
                    "Outputs": [{"Format/Datatype": "Row major linear FP16 format"}, {"Format/Datatype": "Float"}],
                },
                {"Name": "shape", "LayerType": "NoOp", "Outputs": [{"Format/Datatype": "N/A due to dynamic shapes"}]},
            ],
            "Bindings": ["x", "y"],
        }
    )
    assert trt_builder.trt_layer_precisions(detailed) == [
        {"name": "conv1 + relu", "type": "CaskConvolution", "precision": "int8"},
        {"name": "head", "type": "CaskGemm", "precision": "fp16+fp32"},
        {"name": "shape", "type": "NoOp", "precision": None},
    ]
    names_only = json.dumps({"Layers": ["conv1 + relu", "head"]})
    assert trt_builder.trt_layer_precisions(names_only)[1] == {"name": "head", "type": None, "precision": None}


# --- build-engine end to end through the documented builder API ------------------------------------------------------


@pytest.fixture
def with_fake_trt(monkeypatch):
    def install(version, parse_ok=True):
        calls = {}
        trt = fake_build_trt(version, calls, parse_ok)
        real_import = trt_builder.import_runtime
        monkeypatch.setattr(
            trt_builder, "import_runtime", lambda m, how: trt if m == "tensorrt" else real_import(m, how)
        )
        monkeypatch.setattr(trt_builder, "open_cuda", FakeCuda)
        return calls

    return install


def test_build_fp16_on_tensorrt_10_and_8(with_fake_trt, onnx, tmp_path):
    calls = with_fake_trt("10.3.0")
    result = trt_builder.build_engine({"onnx": onnx, "precision": "fp16", "workspace_mb": 256, "batch": 2})
    assert calls["network_flags"] == 0 and calls["workspace"] == ("WORKSPACE", 256 << 20) and calls["flags"] == ["FP16"]
    assert calls["profile"] == {"x": ([2, 3, 4, 4],) * 3} and calls["config"].profiling_verbosity == "DETAILED"
    assert calls["logger_is_ilogger"] and calls["parsed"] == onnx
    assert (tmp_path / "net.fp16.engine").read_bytes() == b"serialized plan"
    assert result["engine"] == str(tmp_path / "net.fp16.engine") and result["tensorrt_version"] == "10.3.0"
    assert result["workspace_api"] == "config.set_memory_pool_limit" and result["build_s"] >= 0
    assert result["layers"] == [{"name": "conv", "type": "CaskConvolution", "precision": "fp16"}]

    calls = with_fake_trt("8.2.1.8")
    result = trt_builder.build_engine(
        {"onnx": onnx, "precision": "fp16", "workspace_mb": 256, "out": str(tmp_path / "jetson.engine")}
    )
    assert calls["network_flags"] == 1 << 0 and calls["config"].max_workspace_size == 256 << 20
    assert result["workspace_api"] == "config.max_workspace_size" and result["engine"] == str(
        tmp_path / "jetson.engine"
    )


def test_build_int8_calibrates_then_reuses_the_cache(with_fake_trt, onnx, tmp_path):
    np.save(tmp_path / "samples.npy", np.zeros((20, 3, 4, 4), np.float32))
    calls = with_fake_trt("10.3.0")
    result = trt_builder.build_engine({"onnx": onnx, "precision": "int8", "calibration": str(tmp_path / "samples.npy")})
    assert calls["flags"] == ["INT8"] and calls["calibrator_batch_size"] == 8 and calls["batches_fed"] == 2
    assert calls["calibration_profile"] == {"x": ([8, 3, 4, 4],) * 3} and calls["profile"] == {"x": ([1, 3, 4, 4],) * 3}
    cache = str(tmp_path / "net.int8.engine.calib")
    assert result["calibration"] == {"kind": "npy_file", "cache": cache, "batches": 2, "batch_size": 8}
    assert trt_calibrator.read_calibration_cache(cache) == b"calibration table"

    calls = with_fake_trt("10.3.0")
    result = trt_builder.build_engine(
        {"onnx": onnx, "precision": "int8", "calibration": cache, "out": str(tmp_path / "again.engine")}
    )
    assert "batches_fed" not in calls and result["calibration"]["kind"] == "cache"  # the cache, not the data


def test_build_reports_the_parser_and_calibration_errors(with_fake_trt, onnx, tmp_path):
    with_fake_trt("10.3.0", parse_ok=False)
    with pytest.raises(AgentError, match=r"ONNX parser rejected .*net.onnx: In node 3 \(Foo\): UNSUPPORTED_NODE"):
        trt_builder.build_engine({"onnx": onnx})
    np.save(tmp_path / "wrong.npy", np.zeros((8, 1, 4, 4), np.float32))
    with_fake_trt("10.3.0")
    with pytest.raises(AgentError, match=r"batches of shape \[8, 1, 4, 4\] do not fit the network input"):
        trt_builder.build_engine({"onnx": onnx, "precision": "int8", "calibration": str(tmp_path / "wrong.npy")})


def test_build_keeps_the_named_layers_in_fp32(with_fake_trt, onnx, tmp_path):
    np.save(tmp_path / "samples.npy", np.zeros((8, 3, 4, 4), np.float32))
    int8 = {
        "onnx": onnx,
        "precision": "int8",
        "calibration": str(tmp_path / "samples.npy"),
        "float_layers": ["/fc/Gemm"],
    }
    calls = with_fake_trt("10.3.0")
    result = trt_builder.build_engine(int8)
    fc, conv = calls["network"].layers[2], calls["network"].layers[0]
    assert fc.precision == "float32" and fc.output_types == {0: "float32"} and conv.precision is None
    assert calls["flags"] == ["INT8", "OBEY"] and result["precision_flag"] == "OBEY_PRECISION_CONSTRAINTS"
    assert result["float_layers"] == ["/fc/Gemm"]
    calls = with_fake_trt("8.0.1")  # before 8.2 the builder honours layer precisions under STRICT_TYPES
    assert trt_builder.build_engine(int8)["precision_flag"] == "STRICT_TYPES" and calls["flags"][-1] == "STRICT"
    with_fake_trt("10.3.0")
    with pytest.raises(AgentError, match=r"float_layers not in the network: /fc/Gemmm \(TensorRT names layers"):
        trt_builder.build_engine({**int8, "float_layers": ["/fc/Gemmm"]})
    with pytest.raises(AgentError, match="this build is fp32 already"):
        trt_builder.check_build_args({"onnx": onnx, "float_layers": ["/fc/Gemm"]})
    with pytest.raises(AgentError, match="float_layers must be a list of layer names"):
        trt_builder.check_build_args({"onnx": onnx, "precision": "fp16", "float_layers": "/fc/Gemm"})


@pytest.mark.hardware
@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None,
    reason="needs TensorRT and an NVIDIA GPU (JetPack on a Jetson); not installable on this machine",
)
def test_real_build_and_run(tmp_path):  # pragma: no cover - runs on a device with TensorRT
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
    x = torch.randn(1, 3, 16, 16)
    torch.onnx.export(
        model, (x,), str(tmp_path / "m.onnx"), input_names=["input"], output_names=["output"], external_data=False
    )
    result = trt_builder.build_engine({"onnx": str(tmp_path / "m.onnx"), "precision": "fp32"})
    session = trt_runner.TensorRtSession(result["engine"], 1)
    out = session.run({"input": x.numpy()})["output"]
    assert np.abs(out - model(x).detach().numpy()).max() < 1e-3
