"""The agent's runtimes besides ONNX Runtime, for real through the agent (LocalTransport + AgentSession): OpenVINO on
an IR and an ONNX, TFLite (LiteRT) on a .tflite converted by litert-torch, each against PyTorch. TensorRT cannot run
on this machine (no GPU, no installable TensorRT): what surrounds it is checked here as plain functions, its two
Python API generations through stand-ins of their documented interface (test_agent_tensorrt.py), and the tests
that need the real thing are skipped with the reason."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeprune._resources import resource_dir
from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.transport import LocalTransport
from edgeprune.errors import DeviceError

torch = pytest.importorskip("torch")

sys.path.insert(0, str(resource_dir("targets")))  # the agent's modules, imported as the agent imports them
agent_runtimes = importlib.import_module("agent_runtimes")

RTOL = 1e-4  # max |runtime - PyTorch| relative to max |PyTorch|


def _relative_error(runtime: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(runtime - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def tiny():
    """Two convolutions, seeded: the model every runtime here must reproduce."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, stride=2)
    ).eval()
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with torch.inference_mode():
        reference = model(torch.from_numpy(x)).numpy()
    return model, x, reference


@pytest.fixture(scope="module")
def tiny_files(tiny, tmp_path_factory):
    """The tiny model as ONNX (fixed batch 1, named input/output), an OpenVINO IR of that ONNX, an IR converted from
    PyTorch with a dynamic batch and unnamed output, and a .tflite from litert-torch."""
    ov = pytest.importorskip("openvino", reason="pip install openvino")
    litert_torch = pytest.importorskip("litert_torch", reason="pip install litert-torch")
    model, x, _ = tiny
    out = tmp_path_factory.mktemp("runtimes")
    sample = torch.from_numpy(x[:1])
    onnx = out / "tiny.onnx"
    torch.onnx.export(model, (sample,), str(onnx), input_names=["input"], output_names=["output"], external_data=False)
    ov.save_model(ov.convert_model(str(onnx)), str(out / "tiny.xml"), compress_to_fp16=False)
    ov.save_model(
        ov.convert_model(model, example_input=sample, input=[-1, 3, 16, 16]),
        str(out / "dynamic.xml"),
        compress_to_fp16=False,
    )
    litert_torch.convert(model, (sample,)).export(str(out / "tiny.tflite"))
    return {"onnx": onnx, "ir": out / "tiny.xml", "dynamic_ir": out / "dynamic.xml", "tflite": out / "tiny.tflite"}


# --- OpenVINO ---------------------------------------------------------------------------------------------------


def test_openvino_runs_an_ir_and_an_onnx_like_pytorch(tiny, tiny_files):
    _, x, reference = tiny
    with AgentSession(LocalTransport()) as agent:
        for model in (tiny_files["ir"], tiny_files["onnx"]):  # fixed batch 1: the agent runs sample by sample
            outputs = agent.run(model, "openvino", {"input": x}, threads=1)
            assert list(outputs) == ["output"]
            assert _relative_error(outputs["output"], reference) < RTOL, model.name
        dynamic = agent.run(tiny_files["dynamic_ir"], "openvino", {"input": x}, threads=2)
    assert list(dynamic) == ["output0"]  # a PyTorch-converted output has no name: its position names it
    assert _relative_error(dynamic["output0"], reference) < RTOL


def test_openvino_is_fp32_unless_asked_and_bf16_changes_results(tiny, tiny_files):
    import openvino as ov

    _, x, reference = tiny
    with AgentSession(LocalTransport()) as agent:
        result = agent.bench(tiny_files["ir"], "openvino", threads=1, warmup=2, runs=30)
        bf16 = agent.run(tiny_files["ir"], "openvino", {"input": x}, threads=1, precision="bf16")["output"]
        with pytest.raises(DeviceError, match=r"openvino precision 'int8' is not one of bf16, fp16, fp32 \(an int8 IR"):
            agent.run(tiny_files["ir"], "openvino", {"input": x}, threads=1, precision="int8")
        with pytest.raises(DeviceError, match="runtime tflite takes its precision from the model file"):
            agent.run(tiny_files["tflite"], "tflite", {"input": x}, threads=1, precision="fp16")
    assert result.precision == "fp32" and result.runtime_version == ov.__version__
    assert len(result.timings_ms) == 30 and min(result.timings_ms) > 0 and result.threads == 1
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:  # OpenVINO's CPU default here: why fp32 is asked for
        assert _relative_error(bf16, reference) > 10 * RTOL
    assert _relative_error(bf16, reference) < 0.05


# --- TFLite -------------------------------------------------------------------------------------------------------


def test_tflite_runs_like_pytorch_by_name_and_by_position(tiny, tiny_files):
    _, x, reference = tiny
    with AgentSession(LocalTransport()) as agent:
        info = agent.info("host", "tflite")
        by_position = agent.run(tiny_files["tflite"], "tflite", {"0": x}, threads=1)
        name = next(iter(by_position))
        result = agent.bench(tiny_files["tflite"], "tflite", threads=2, warmup=2, runs=30)
        with pytest.raises(DeviceError, match=r"inputs \['nope'\] given, the model takes \['serving_default_args_0'\]"):
            agent.run(tiny_files["tflite"], "tflite", {"nope": x}, threads=1)
    assert _relative_error(by_position[name], reference) < RTOL
    assert info.runtime == "tflite" and info.runtime_version.endswith("(ai_edge_litert)")
    assert len(result.timings_ms) == 30 and min(result.timings_ms) > 0
    assert result.input_shapes == {"serving_default_args_0": [1, 3, 16, 16]}


def test_tflite_quantized_tensors_are_float32_to_the_caller():
    detail = {
        "name": "in",
        "dtype": np.int8,
        "quantization": (0.05, -3),
        "quantization_parameters": {"scales": np.array([0.05], np.float32)},
    }
    scale, zero = agent_runtimes.tflite_quantization(detail)
    x = np.array([-10.0, -0.1, 0.0, 0.26, 6.5], np.float32)
    q = agent_runtimes.quantize(x, scale, zero, np.int8)
    assert q.dtype == np.int8 and q.tolist() == [-128, -5, -3, 2, 127]  # round(x/0.05) - 3, clipped to int8
    back = agent_runtimes.dequantize(q, scale, zero)
    assert back.dtype == np.float32 and np.allclose(back, [-6.25, -0.1, 0.0, 0.25, 6.5])
    assert agent_runtimes.quantize(np.array([300.0]), 1.0, 128, np.uint8).tolist() == [255]
    assert agent_runtimes.tflite_quantization({"name": "f", "dtype": np.float32, "quantization": (0.0, 0)}) is None
    assert agent_runtimes.tflite_quantization({"name": "ids", "dtype": np.int32, "quantization": (0.0, 0)}) is None
    per_channel = dict(detail, quantization_parameters={"scales": np.array([0.1, 0.2], np.float32)})
    with pytest.raises(agent_runtimes.AgentError, match="quantized per channel"):
        agent_runtimes.tflite_quantization(per_channel)


# --- which runtimes import ----------------------------------------------------------------------------------------


def test_info_lists_every_runtime_with_its_version_or_why_not():
    import ai_edge_litert
    import onnxruntime
    import openvino

    with AgentSession(LocalTransport()) as agent:
        runtimes = agent.info("host", "onnxruntime").runtimes
    assert runtimes["onnxruntime"] == {"available": True, "version": onnxruntime.__version__, "reason": None}
    assert runtimes["openvino"]["version"] == openvino.__version__
    assert runtimes["tflite"]["version"] == f"{ai_edge_litert.__version__} (ai_edge_litert)"
    if importlib.util.find_spec("tensorrt") is None:
        assert runtimes["tensorrt"]["available"] is False
        assert "tensorrt is not installed on this device (TensorRT comes with JetPack" in runtimes["tensorrt"]["reason"]


def test_tensorrt_through_the_agent_without_tensorrt(tiny_files, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the real build is tested in test_agent_tensorrt.py")
    with AgentSession(LocalTransport()) as agent:
        with pytest.raises(DeviceError, match="tensorrt is not installed on this device"):
            agent.bench(tiny_files["onnx"], "tensorrt", threads=1, warmup=0, runs=30)
        with pytest.raises(DeviceError, match="an int8 build needs calibration"):  # checked before TensorRT loads
            agent.build_engine(tiny_files["onnx"], precision="int8")
        samples = tmp_path / "calibration.npy"
        np.save(samples, np.zeros((4, 3, 16, 16), np.float32))
        with pytest.raises(DeviceError, match="calibration applies to int8 builds only"):
            agent.build_engine(tiny_files["onnx"], precision="fp16", calibration=samples)
        with pytest.raises(DeviceError, match="tensorrt is not installed on this device"):
            agent.build_engine(tiny_files["onnx"], precision="int8", calibration=samples, workspace_mb=256)
        assert agent.info("host", "openvino").runtime == "openvino"  # the session survived every refusal
